"""Qwen2-Audio with a trainable domain adapter for Laser Doppler Vibrometer (LDV) speech.

The ``*_qwen2audio_ldv.py`` modules of this folder are the files that travel to the Hub with a saved adapter
(configuration, adapter layers, the trimmed encoder pass, the adapter bank, the model); everything else (data,
training, inference, evaluation, synthetic speech, tools, cli) is loaded on first use.
"""

from importlib import import_module

from .configuration_qwen2audio_ldv import ADAPTER_PRESETS, DomainAdapterConfig, Qwen2AudioLDVConfig
from .adapter_bank_qwen2audio_ldv import DOMAIN_ADAPTER_PREFIX
from .adapters_qwen2audio_ldv import MLPDomainAdapter, TransformerDomainAdapter
from .modeling_qwen2audio_ldv import Qwen2AudioLDVForConditionalGeneration, add_domain_adapter_to_model

__version__ = "0.1.0"

# name -> module that defines it; imported on first attribute access (numpy/scipy/datasets stay unloaded
# for users who only need the model).
_LAZY = {
    "simulate_ldv": "synthetic.simulator",
    "LDVCondition": "synthetic.simulator",
    "LDV_PRESETS": "synthetic.simulator",
    "train_with_domain_adapter": "training.guide",
    "convert_pt_to_safetensors": "tools.convert",
}


def __getattr__(name):
    if name in _LAZY:
        return getattr(import_module(f".{_LAZY[name]}", __name__), name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


__all__ = [
    "ADAPTER_PRESETS",
    "DOMAIN_ADAPTER_PREFIX",
    "DomainAdapterConfig",
    "MLPDomainAdapter",
    "Qwen2AudioLDVConfig",
    "Qwen2AudioLDVForConditionalGeneration",
    "TransformerDomainAdapter",
    "add_domain_adapter_to_model",
    "convert_pt_to_safetensors",
    *_LAZY,
]
