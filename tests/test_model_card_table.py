"""The model card's hyper-parameter table shows the saved adapter's own configuration, width, parameter count
and trained scale (read back from the rendered README, compared with the values the adapter was built with)."""

import re

import pytest
import torch

from modeling_qwen2audio_ldv import DomainAdapterConfig, Qwen2AudioLDVForConditionalGeneration
from modeling_qwen2audio_ldv.tools.hub import adapter_card


def card_table(text: str) -> dict[str, str]:
    """``{setting: value}`` of the "Adapter hyper-parameters" table of a rendered card."""
    section = text.split("## Adapter hyper-parameters", 1)[1].split("\n## ", 1)[0]
    rows = {}
    for line in section.splitlines():
        cells = [c.strip() for c in line.strip().strip("|").split("|")]
        if len(cells) == 2 and cells[0] not in ("setting", "---"):
            rows[cells[0].strip("`")] = cells[1]
    return rows


CASES = {
    "transformer": dict(adapter_type="transformer", num_layers=3, num_heads=2, ff_dim=24, dropout=0.05,
                        use_gate=False, use_position_encoding=True, scale_init=0.3, zero_init=False),
    "mlp": dict(adapter_type="mlp", bottleneck_dim=6, dropout=0.2, use_gate=True, use_position_encoding=False,
                scale_init=0.07, zero_init=True),
}


@pytest.mark.parametrize("case", sorted(CASES))
def test_hyper_parameter_table_shows_the_saved_adapter(tiny_base_dir, tmp_path, case):
    fields = CASES[case]
    model = Qwen2AudioLDVForConditionalGeneration.from_base_pretrained(
        tiny_base_dir, adapter_config=DomainAdapterConfig(**fields))
    with torch.no_grad():
        model.domain_adapter.scale.fill_(0.4321)  # a "trained" scale, unlike scale_init
    model.save_pretrained(tmp_path / "adapter")
    text = str(adapter_card(tmp_path / "adapter", "user/ldv-adapter"))
    table = card_table(text)
    d_model = model.config.audio_config.d_model
    expected = {name: str(value) for name, value in fields.items()}
    expected["d_model (encoder width)"] = str(d_model)
    expected["trainable parameters"] = f"{sum(p.numel() for p in model.domain_adapter.parameters()):,}"
    assert table == expected
    assert re.search(r"trained value: 0\.4321\b", text)
