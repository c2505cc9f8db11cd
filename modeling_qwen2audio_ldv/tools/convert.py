"""Convert adapter weight files written by ``torch.save`` to safetensors."""

import os

from safetensors.torch import save_file

from ..adapter_bank_qwen2audio_ldv import load_torch_adapter_state


def convert_pt_to_safetensors(path: str | os.PathLike, output: str | os.PathLike | None = None) -> str:
    """Convert a ``torch.save`` ``.pt`` adapter file to safetensors (default: the same name, ``.safetensors``).

    One line: ``convert_pt_to_safetensors("ldv_domain_adapter.pt")``. Tensors only (see
    :func:`load_torch_adapter_state`). Returns the written path.
    """
    state = load_torch_adapter_state(path)
    output = os.fspath(output) if output is not None else os.path.splitext(os.fspath(path))[0] + ".safetensors"
    save_file({k: v.detach().contiguous().cpu() for k, v in state.items()}, output, metadata={"format": "pt"})
    return output
