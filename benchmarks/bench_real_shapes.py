"""Training-path costs at Qwen2-Audio-7B's shapes on the CPU, before vs after the real-model fixes, as ratios.

    python benchmarks/bench_real_shapes.py [--threads 1] [--output benchmarks/results]

Random weights, no download. Shapes: the audio encoder at d_model 1280 with its 32 layers (128 mel bins, 3000
mel frames); the text model at hidden 3584 (28 heads, 4 KV heads, MLP 18944) cut to ``--text-layers`` layers with
the real vocabulary (156032); the ``standard`` adapter (26.9M parameters). Rows, each measured in this process:

- feature extraction per clip (log-mel of one clip);
- feature cache: tower time per clip (32 layers, trimmed) and the fingerprint over all 32 layers' weights;
- cached-collator reading per clip: Python lists (before) vs numpy format (after);
- tower trimmed vs padded, float32 and bfloat16, at ``--compare-layers`` layers (time ratio and the largest
  difference on the valid frames: the bf16 bound of the trimmed pass);
- one ``lm`` step (cached features, batch ``--batch``): adapter, language model and head + loss, full-vocabulary
  logits on every position (before) vs on the supervised positions only (after), time and peak memory (each
  measured in a forked child: resident-set peak above its start);
- one ``distill`` step (adapter + MSE, no LLM).

Writes ``real_shapes.json`` and ``real_shapes.md`` under ``--output``. Timings are single runs (noisy on a shared
machine); the ratios are what to read. The CUDA counterpart at the full 7B shapes is ``benchmarks/gpu/``.
"""

import argparse
import json
import os
import platform
import resource
import sys
import time
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from modeling_qwen2audio_ldv.configuration_qwen2audio_ldv import DomainAdapterConfig  # noqa: E402
from modeling_qwen2audio_ldv.adapters_qwen2audio_ldv import build_domain_adapter  # noqa: E402
from modeling_qwen2audio_ldv.audio_tower_qwen2audio_ldv import encode_audio  # noqa: E402

VOCAB = 156032
AUDIO = dict(d_model=1280, encoder_layers=32, encoder_attention_heads=20, encoder_ffn_dim=5120, num_mel_bins=128,
             max_source_positions=1500)
TEXT = dict(hidden_size=3584, intermediate_size=18944, num_attention_heads=28, num_key_value_heads=4,
            vocab_size=VOCAB, max_position_embeddings=8192, tie_word_embeddings=True)


def timed(fn):
    start = time.perf_counter()
    out = fn()
    return time.perf_counter() - start, out


def _rss_kb() -> int:
    with open("/proc/self/statm") as handle:
        return int(handle.read().split()[1]) * os.sysconf("SC_PAGE_SIZE") // 1024


def peak_in_child(fn) -> float:
    """Peak resident memory (MB) above the child's start while ``fn`` runs in a forked child."""
    read, write = os.pipe()
    pid = os.fork()
    if pid == 0:  # child
        try:
            start = _rss_kb()
            fn()
            peak = max(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss, _rss_kb())
            os.write(write, str((peak - start) / 1024).encode())
        finally:
            os._exit(0)
    os.close(write)
    os.waitpid(pid, 0)
    value = os.read(read, 64).decode()
    os.close(read)
    if not value:
        raise RuntimeError("memory child failed")
    return float(value)


def mel_input(seconds: float, n_mels: int = 128):
    frames = int(seconds * 100)
    features = torch.zeros(1, n_mels, 3000)
    features[:, :, :frames] = torch.randn(1, n_mels, frames)
    mask = torch.zeros(1, 3000, dtype=torch.long)
    mask[:, :frames] = 1
    return features, mask


def tower_rows(args, results):
    from transformers import Qwen2AudioEncoder, Qwen2AudioEncoderConfig, WhisperFeatureExtractor

    from modeling_qwen2audio_ldv.training.feature_cache import _tensor_digest

    extractor = WhisperFeatureExtractor(feature_size=128)
    clip = np.random.default_rng(0).standard_normal(int(args.clip_seconds * 16000)).astype(np.float32) * 0.1
    extractor([clip], sampling_rate=16000, return_attention_mask=True, padding="max_length", return_tensors="pt")
    results["feature_extraction_s_per_clip"], _ = timed(lambda: extractor(
        [clip], sampling_rate=16000, return_attention_mask=True, padding="max_length", return_tensors="pt"))

    torch.manual_seed(0)
    tower = Qwen2AudioEncoder(Qwen2AudioEncoderConfig(**AUDIO)).eval()
    features, mask = mel_input(args.clip_seconds)
    with torch.no_grad():
        results["tower32_trimmed_s_per_clip"], (hidden, lengths) = timed(
            lambda: encode_audio(tower, features, mask, trim=True))
    state = tower.state_dict()
    results["fingerprint_32_layers_s"], _ = timed(lambda: [_tensor_digest(v) for v in state.values()])
    results["tower_parameters"] = sum(p.numel() for p in tower.parameters())

    # trimmed vs padded at fewer layers (per-layer cost is the same at 32), float32 and bfloat16
    cut = Qwen2AudioEncoder(Qwen2AudioEncoderConfig(**{**AUDIO, "encoder_layers": args.compare_layers})).eval()
    cut.load_state_dict({k: v for k, v in state.items() if k in cut.state_dict()})
    frames = int(lengths[0])
    for dtype in (torch.float32, torch.bfloat16):
        name = str(dtype).split(".")[-1]
        cut.to(dtype)
        with torch.no_grad():
            t_pad, (padded, _) = timed(lambda: encode_audio(cut, features.to(dtype), mask, trim=False))
            t_trim, (trimmed, _) = timed(lambda: encode_audio(cut, features.to(dtype), mask, trim=True))
        diff = (padded[0, :frames].float() - trimmed[0, :frames].float()).abs()
        scale = padded[0, :frames].float().abs().max().item()
        results[f"tower{args.compare_layers}_{name}_padded_s"] = t_pad
        results[f"tower{args.compare_layers}_{name}_trimmed_s"] = t_trim
        results[f"tower{args.compare_layers}_{name}_max_abs_diff"] = diff.max().item()
        results[f"tower{args.compare_layers}_{name}_max_abs_output"] = scale
    del tower, cut
    return hidden[0, :frames].to(torch.float16).numpy().reshape(-1), frames


def collation_rows(args, results, flat):
    import datasets

    data = datasets.Dataset.from_dict({"audio_encoder": [flat] * 8, "text": ["one two three"] * 8},
                                      features=datasets.Features({
                                          "audio_encoder": datasets.List(datasets.Value("float16")),
                                          "text": datasets.Value("string")}))
    as_numpy = data.with_format("numpy", columns=["audio_encoder"], output_all_columns=True, dtype=np.float16)

    def read(ds):
        for i in range(len(ds)):
            torch.from_numpy(np.asarray(ds[i]["audio_encoder"], dtype=np.float16)).reshape(-1, 1280).float()

    t_lists, _ = timed(lambda: read(data))
    t_numpy, _ = timed(lambda: read(as_numpy))
    results["collate_lists_s_per_clip"] = t_lists / len(data)
    results["collate_numpy_s_per_clip"] = t_numpy / len(data)


def lm_rows(args, results, frames):
    from transformers import Qwen2Config, Qwen2Model

    torch.manual_seed(0)
    text = Qwen2Model(Qwen2Config(num_hidden_layers=args.text_layers, **TEXT)).eval()
    text.requires_grad_(False)
    head = torch.nn.Linear(TEXT["hidden_size"], VOCAB, bias=False)
    head.weight = text.embed_tokens.weight  # tied here to halve the RAM (the real 7B head is a separate matrix)
    projector = torch.nn.Linear(1280, TEXT["hidden_size"]).requires_grad_(False)
    adapter = build_domain_adapter(DomainAdapterConfig.preset("standard", dropout=0.0), 1280).train()
    batch, prompt, transcript = args.batch, 30, args.transcript_tokens
    seq = prompt + frames + transcript
    ids = torch.randint(0, 1000, (batch, seq))
    labels = torch.full_like(ids, -100)
    labels[:, prompt + frames:] = ids[:, prompt + frames:]
    cached = torch.randn(batch, frames, 1280)
    lengths = torch.full((batch,), frames)
    results["lm_tokens_per_batch"] = batch * seq
    results["lm_supervised_tokens_per_batch"] = int((labels[:, 1:] != -100).sum())
    results["adapter_parameters"] = sum(p.numel() for p in adapter.parameters())

    def embeds():
        mask = torch.arange(frames)[None] < lengths[:, None]
        audio = projector(adapter(cached, mask))
        tokens = text.embed_tokens(ids).clone()
        tokens[:, prompt: prompt + frames] = audio
        return tokens

    def step(selected: bool, parts: dict | None = None):
        start = time.perf_counter()
        inputs = embeds()
        t_adapter = time.perf_counter()
        hidden = text(inputs_embeds=inputs).last_hidden_state
        t_llm = time.perf_counter()
        if selected:
            keep = labels[:, 1:] != -100
            logits = head(hidden[:, :-1][keep]).float()
            loss = F.cross_entropy(logits, labels[:, 1:][keep], reduction="sum") / keep.sum()
        else:  # before: full-vocabulary float logits for every position
            logits = head(hidden).float()[:, :-1]
            loss = F.cross_entropy(logits.reshape(-1, VOCAB), labels[:, 1:].reshape(-1), ignore_index=-100)
        t_head = time.perf_counter()
        loss.backward()
        end = time.perf_counter()
        adapter.zero_grad(set_to_none=True)
        if parts is not None:
            parts.update(adapter_fwd_s=t_adapter - start, llm_fwd_s=t_llm - t_adapter, head_loss_fwd_s=t_head - t_llm,
                         backward_s=end - t_head, total_s=end - start)

    for name, selected in (("before", False), ("after", True)):
        parts: dict = {}
        step(selected)  # warm-up
        step(selected, parts)
        results[f"lm_step_{name}"] = parts
        results[f"lm_step_{name}_peak_mb"] = peak_in_child(lambda: step(selected))

    def distill():
        mask = torch.arange(frames)[None] < lengths[:, None]
        loss = F.mse_loss(adapter(cached, mask), torch.randn_like(cached))
        loss.backward()
        adapter.zero_grad(set_to_none=True)

    distill()
    results["distill_step_s"], _ = timed(distill)


def write(results, output: Path):
    output.mkdir(parents=True, exist_ok=True)
    (output / "real_shapes.json").write_text(json.dumps(results, indent=2) + "\n")
    r, n = results, results["settings"]["compare_layers"]
    before, after = r["lm_step_before"], r["lm_step_after"]
    rows = [
        ("feature extraction, s per clip", f"{r['feature_extraction_s_per_clip']:.4f}", ""),
        ("tower (32 layers, trimmed), s per clip", f"{r['tower32_trimmed_s_per_clip']:.2f}", ""),
        ("cache fingerprint over all 32 layers, s", f"{r['fingerprint_32_layers_s']:.2f}",
         f"{r['fingerprint_32_layers_s'] / r['tower32_trimmed_s_per_clip']:.2f}x one clip's encoding"),
        ("cached collation, ms per clip: lists -> numpy",
         f"{1e3 * r['collate_lists_s_per_clip']:.2f} -> {1e3 * r['collate_numpy_s_per_clip']:.3f}",
         f"{r['collate_lists_s_per_clip'] / r['collate_numpy_s_per_clip']:.0f}x faster"),
    ]
    for dtype in ("float32", "bfloat16"):
        pad, trim = r[f"tower{n}_{dtype}_padded_s"], r[f"tower{n}_{dtype}_trimmed_s"]
        rows.append((f"tower ({n} layers, {dtype}): padded -> trimmed, s", f"{pad:.2f} -> {trim:.2f}",
                     f"{pad / trim:.1f}x faster; max abs diff {r[f'tower{n}_{dtype}_max_abs_diff']:.2e} "
                     f"(outputs up to {r[f'tower{n}_{dtype}_max_abs_output']:.2f})"))
    for part in ("adapter_fwd_s", "llm_fwd_s", "head_loss_fwd_s", "backward_s", "total_s"):
        rows.append((f"lm step {part[:-2]}, s: full logits -> supervised only",
                     f"{before[part]:.2f} -> {after[part]:.2f}", f"{before[part] / max(after[part], 1e-9):.1f}x"))
    rows.append(("lm step peak memory above start, MB: full logits -> supervised only",
                 f"{r['lm_step_before_peak_mb']:.0f} -> {r['lm_step_after_peak_mb']:.0f}",
                 f"{r['lm_step_before_peak_mb'] / max(r['lm_step_after_peak_mb'], 1e-9):.1f}x less"))
    rows.append(("distill step (adapter + MSE), s", f"{r['distill_step_s']:.2f}", ""))
    s = r["settings"]
    lines = [
        "# Real-shape training costs on the CPU",
        "",
        f"{s['machine']}; {s['threads']} torch thread(s); encoder d_model 1280 x 32 layers; text hidden 3584 x "
        f"{s['text_layers']} layer(s), vocabulary {VOCAB} (embedding tied to the head to save RAM); standard adapter "
        f"({r['adapter_parameters'] / 1e6:.1f}M); one {s['clip_seconds']} s clip per row ({r['lm_tokens_per_batch']} "
        f"tokens per lm batch of {s['batch']}, {r['lm_supervised_tokens_per_batch']} supervised). Single runs.",
        "",
        "| measurement | value | ratio |",
        "|---|---|---|",
        *[f"| {a} | {b} | {c} |" for a, b, c in rows],
        "",
    ]
    (output / "real_shapes.md").write_text("\n".join(lines))
    print("\n".join(lines))


def _settings(args) -> dict:
    """The run's arguments, less where its results are written (not a setting of the measurement)."""
    return {k: v for k, v in vars(args).items() if k != "output"}


def main(argv=None) -> dict:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--clip-seconds", type=float, default=3.0)
    parser.add_argument("--compare-layers", type=int, default=2, help="layers for the trimmed-vs-padded rows")
    parser.add_argument("--text-layers", type=int, default=1)
    parser.add_argument("--batch", type=int, default=2)
    parser.add_argument("--transcript-tokens", type=int, default=15)
    parser.add_argument("--output", default=str(REPO / "benchmarks" / "results"))
    args = parser.parse_args(argv)
    torch.set_num_threads(args.threads)
    import transformers

    results = {"settings": {**_settings(args), "machine": f"{platform.machine()}, {os.cpu_count()} CPU cores",
                            "torch": torch.__version__, "transformers": transformers.__version__}}
    start = time.perf_counter()
    flat, frames = tower_rows(args, results)
    collation_rows(args, results, flat)
    lm_rows(args, results, frames)
    results["wall_s"] = time.perf_counter() - start
    write(results, Path(args.output))
    return results


if __name__ == "__main__":
    main()
