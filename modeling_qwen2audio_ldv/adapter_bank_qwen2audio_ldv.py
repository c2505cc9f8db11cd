# Copyright the qwen2audio-ldv authors. Licensed under the Apache License, Version 2.0.
"""The adapter bank: several named domain adapters on one base model, one of them active (PEFT-style control).

Adapters live in ``model.domain_adapters``, an ``nn.ModuleDict`` keyed by adapter name (as PEFT keys its LoRA
layers), with ``model.active_domain_adapter`` naming the one ``audio_domain="ldv"`` uses; switching, adding or
deleting an adapter never renames a parameter (``domain_adapters.<name>.<parameter>``). Each adapter module
carries its own :class:`DomainAdapterConfig` (``module.config``); ``model.config.domain_adapter`` follows the
active one, so that a save records it. Adapter files are loaded strictly (every key, no extra, equal shapes), from
safetensors or a tensors-only ``torch.load(weights_only=True)``.

This file travels to the Hub with every saved adapter (``trust_remote_code``): it imports only torch, transformers,
safetensors (a transformers dependency) and, relatively, the other Hub files.
"""

import contextlib
import json
import os
import pickle
from pathlib import Path

import torch
from safetensors.torch import load_file
from torch import nn
from transformers.utils import cached_file

from .adapters_qwen2audio_ldv import build_domain_adapter
from .configuration_qwen2audio_ldv import DomainAdapterConfig

#: Every adapter parameter of the model starts with this prefix (``domain_adapters.<name>.``): freeze, count, save
#: and load by it (the active adapter's: :meth:`DomainAdapterBankMixin.active_adapter_prefix`).
DOMAIN_ADAPTER_PREFIX = "domain_adapters."
#: Key prefix of the active adapter's weights in a full checkpoint (``save_pretrained(adapter_only=False)``); an
#: adapter-only file holds the adapter's own keys, without a prefix.
CHECKPOINT_ADAPTER_PREFIX = "domain_adapter."
#: File of an adapter-only checkpoint (not ``adapter_config.json``/``adapter_model.*``: those names make
#: transformers redirect the repo to PEFT).
ADAPTER_WEIGHTS_NAME = "domain_adapter.safetensors"
#: The name of the adapter a model is built with.
DEFAULT_ADAPTER_NAME = "default"
#: ``audio_domain`` values with a fixed meaning: ``mic`` bypasses every adapter, ``ldv`` uses the active one.
MIC_DOMAIN, LDV_DOMAIN = "mic", "ldv"
_PICKLE_SUFFIXES = (".bin", ".pt", ".pth", ".ckpt", ".pkl")


def _is_pickle(path: str) -> bool:
    return str(path).lower().endswith(_PICKLE_SUFFIXES)


def resolve_adapter_file(path_or_repo: str, **hub_kwargs) -> str:
    """Local path of an adapter's safetensors file from a file, a directory or a Hub repo."""
    path_or_repo = str(path_or_repo)
    if _is_pickle(path_or_repo):
        raise ValueError(
            f"{path_or_repo}: refusing to load a pickled adapter; only safetensors files are loaded "
            f"(convert with safetensors.torch.save_file)"
        )
    if os.path.isfile(path_or_repo):
        if not path_or_repo.endswith(".safetensors"):
            raise ValueError(f"{path_or_repo}: expected a .safetensors adapter file")
        return path_or_repo
    if os.path.isdir(path_or_repo):
        candidate = os.path.join(path_or_repo, ADAPTER_WEIGHTS_NAME)
        if os.path.isfile(candidate):
            return candidate
        pickles = sorted(p.name for p in Path(path_or_repo).iterdir() if _is_pickle(p.name))
        hint = f"; found only pickle files {pickles}, which are refused: only safetensors are loaded" if pickles else ""
        raise FileNotFoundError(f"{path_or_repo}: no {ADAPTER_WEIGHTS_NAME}{hint}")
    resolved = cached_file(path_or_repo, ADAPTER_WEIGHTS_NAME, _raise_exceptions_for_missing_entries=False, **hub_kwargs)
    if resolved is None:
        raise FileNotFoundError(f"{path_or_repo}: no {ADAPTER_WEIGHTS_NAME} in this repository")
    return resolved


def has_adapter_file(path_or_repo: str, **hub_kwargs) -> bool:
    if os.path.isdir(str(path_or_repo)):
        return os.path.isfile(os.path.join(str(path_or_repo), ADAPTER_WEIGHTS_NAME))
    return cached_file(str(path_or_repo), ADAPTER_WEIGHTS_NAME, _raise_exceptions_for_missing_entries=False,
                       **hub_kwargs) is not None


def load_adapter_state(module: nn.Module, state: dict[str, torch.Tensor], source: str) -> None:
    """Strictly load an adapter's weights: every key present, none extra, every shape equal."""
    expected = module.state_dict()
    missing = sorted(set(expected) - set(state))
    unexpected = sorted(set(state) - set(expected))
    if missing or unexpected:
        raise ValueError(
            f"{source}: adapter weights do not match the adapter configuration; "
            f"missing keys {missing}, unexpected keys {unexpected}"
        )
    wrong = [f"{k}: file {tuple(state[k].shape)} vs model {tuple(v.shape)}" for k, v in expected.items()
             if tuple(state[k].shape) != tuple(v.shape)]
    if wrong:
        raise ValueError(f"{source}: adapter weight shapes differ (was it trained for another d_model?): {wrong}")
    module.load_state_dict(state, strict=True)


#: ``torch.save`` files that ``load_domain_adapter`` reads with ``torch.load(weights_only=True)`` (tensors only).
_TORCH_SAVE_SUFFIXES = (".pt", ".pth")


def is_single_adapter_file(path: str) -> bool:
    """A file to load on its own: a ``.pt``/``.pth`` state dict, or a ``.safetensors`` file with no config.json."""
    if not os.path.isfile(path):
        return False
    lowered = path.lower()
    if lowered.endswith(_TORCH_SAVE_SUFFIXES):
        return True
    return lowered.endswith(".safetensors") and not os.path.isfile(os.path.join(os.path.dirname(path), "config.json"))


def load_torch_adapter_state(path: str | os.PathLike) -> dict[str, torch.Tensor]:
    """The adapter state dict of a guide-style ``torch.save(model.domain_adapter.state_dict(), path)`` file.

    Read with ``torch.load(weights_only=True)``, so no code in the file runs; anything but a mapping of names to
    tensors is refused. Keys saved from the whole model (``domain_adapter.*``) are accepted without the prefix.
    """
    path = os.fspath(path)
    try:
        state = torch.load(path, map_location="cpu", weights_only=True)
    except (pickle.UnpicklingError, RuntimeError, EOFError, AttributeError) as error:
        raise ValueError(f"{path}: refusing to load: not a plain state dict of tensors (torch.load with "
                         f"weights_only=True failed: {str(error).splitlines()[0]})") from error
    if not isinstance(state, dict) or not state:
        raise ValueError(f"{path}: expected a non-empty dict of tensors (torch.save(model.domain_adapter."
                         f"state_dict(), path)), got {type(state).__name__}")
    wrong = sorted(f"{k!r}: {type(v).__name__}" for k, v in state.items()
                   if not isinstance(k, str) or not isinstance(v, torch.Tensor))
    if wrong:
        raise ValueError(f"{path}: refusing to load: only tensors are accepted, found {wrong[:5]}")
    if all(k.startswith(CHECKPOINT_ADAPTER_PREFIX) for k in state):
        state = {k[len(CHECKPOINT_ADAPTER_PREFIX):]: v for k, v in state.items()}
    return dict(state)


def as_adapter_config(config: "DomainAdapterConfig | dict | str | None") -> "DomainAdapterConfig | None":
    """A [`DomainAdapterConfig`] from itself, its dict or a preset name; ``None`` stays ``None``."""
    if isinstance(config, str):
        return DomainAdapterConfig.preset(config)
    if isinstance(config, dict):
        return DomainAdapterConfig.from_dict(config)
    return config


class DomainAdapterBankMixin:
    """Named adapters on a Qwen2-Audio model (NeMo's adapter mixin, PEFT's names): ``domain_adapters`` (an
    ``nn.ModuleDict`` keyed by name), ``active_domain_adapter`` and one switch that bypasses them all.

    The host class provides ``config`` (a ``Qwen2AudioLDVConfig``) and ``parameters()``.
    """

    def _build_adapter(self, config: DomainAdapterConfig) -> nn.Module | None:
        audio = self.config.audio_config
        return build_domain_adapter(config, audio.d_model, audio.encoder_layers, ffn_dim=audio.encoder_ffn_dim)

    def _init_domain_adapter_state(self) -> None:
        config = self.config.adapter_config
        module = self._build_adapter(config)
        self.domain_adapters = nn.ModuleDict({} if module is None else {DEFAULT_ADAPTER_NAME: module})
        self.active_domain_adapter = DEFAULT_ADAPTER_NAME
        self._domain_adapter_enabled = True

    @property
    def domain_adapter(self) -> nn.Module | None:
        """The active adapter's module (``None`` for ``adapter_type="none"``)."""
        return self.domain_adapters[self.active_domain_adapter] if self.active_domain_adapter in self.domain_adapters \
            else None

    def domain_adapter_config(self, adapter_name: str | None = None) -> DomainAdapterConfig:
        """The configuration of a loaded adapter (default: the active one)."""
        adapter_name = adapter_name or self.active_domain_adapter
        if adapter_name in self.domain_adapters:
            return self.domain_adapters[adapter_name].config
        if adapter_name == self.active_domain_adapter:  # adapter_type "none": no module holds it
            return self.config.adapter_config
        raise ValueError(f"unknown adapter {adapter_name!r}; loaded adapters: {self.list_domain_adapters()}")

    def active_adapter_prefix(self) -> str:
        """``domain_adapters.<active name>.``: the prefix of the trainable parameters after ``freeze_base_model``."""
        return f"{DOMAIN_ADAPTER_PREFIX}{self.active_domain_adapter}."

    def _adapter_for(self, name: str) -> nn.Module | None:
        if name == LDV_DOMAIN:
            return self.domain_adapter
        if name in self.domain_adapters:
            return self.domain_adapters[name]
        if name == self.active_domain_adapter:
            return None
        raise ValueError(f"unknown audio_domain {name!r}; known: {self._known_domains()}")

    def _known_domains(self) -> list[str]:
        return [MIC_DOMAIN, LDV_DOMAIN, *self.list_domain_adapters()]

    # ------------------------------------------------------------------------------------------ trainability
    def adapters_to_float32(self):
        """Keep the (small, trained) adapters in float32 when the base is loaded in bf16/fp16; an adapter computes in
        its own dtype and returns features in the encoder's dtype."""
        for module in self.domain_adapters.values():
            module.float()
        return self

    def freeze_base_model(self):
        """Make only the active adapter (``domain_adapters.<active>.*``) trainable; everything else is frozen.

        Integer (quantised, e.g. bitsandbytes) weights cannot require gradients and are left as they are.
        """
        prefix = self.active_adapter_prefix()
        for name, parameter in self.named_parameters():
            trainable = name.startswith(prefix)
            if parameter.is_floating_point() or parameter.is_complex():
                parameter.requires_grad_(trainable)
            elif trainable:
                raise ValueError(f"adapter parameter {name!r} is {parameter.dtype}: the adapter must stay out of "
                                 "quantisation (see _keep_in_fp32_modules)")
        return self

    def domain_adapter_parameters(self) -> list[nn.Parameter]:
        """Parameters of the active adapter."""
        return [] if self.domain_adapter is None else list(self.domain_adapter.parameters())

    def num_domain_adapter_parameters(self) -> int:
        return sum(p.numel() for p in self.domain_adapter_parameters())

    def get_nb_trainable_parameters(self) -> tuple[int, int]:
        """``(trainable, all)`` parameter counts, as PEFT's method of the same name."""
        trainable = sum(p.numel() for p in self.parameters() if p.requires_grad)
        return trainable, sum(p.numel() for p in self.parameters())

    def print_trainable_parameters(self) -> None:
        """Print ``trainable params: N || all params: M || trainable%: P``, as PEFT does."""
        trainable, total = self.get_nb_trainable_parameters()
        print(f"trainable params: {trainable:,d} || all params: {total:,d} || trainable%: "
              f"{100 * trainable / max(total, 1):.4f}")

    # ---------------------------------------------------------------------------------------------- on / off
    @contextlib.contextmanager
    def disable_domain_adapter(self):
        """Within the block every adapter is bypassed: the base model (bit for bit with ``trim_audio_tower=False``;
        within float32 rounding of the stock padded encoder pass with the default ``True``). On leaving, the switch
        is back where it was (nested blocks and :meth:`set_domain_adapters_enabled` before the block included)."""
        previous = self._domain_adapter_enabled
        self._domain_adapter_enabled = False
        try:
            yield self
        finally:
            self._domain_adapter_enabled = previous

    def set_domain_adapters_enabled(self, enabled: bool) -> None:
        """Switch every adapter on or off until the next call (off: the model is exactly the base model); the
        non-context form of ``with model.disable_domain_adapter():``."""
        if not isinstance(enabled, bool):
            raise TypeError(f"`enabled` must be a bool, got {enabled!r}")
        self._domain_adapter_enabled = enabled

    @property
    def domain_adapters_enabled(self) -> bool:
        """Whether the adapters run (see :meth:`set_domain_adapters_enabled` and :meth:`disable_domain_adapter`)."""
        return self._domain_adapter_enabled

    # ------------------------------------------------------------------------------------ add, switch, delete
    def list_domain_adapters(self) -> list[str]:
        """Names of the loaded adapters, the active one first."""
        return [self.active_domain_adapter, *(name for name in self.domain_adapters if name != self.active_domain_adapter)]

    def set_domain_adapter(self, adapter_name: str) -> None:
        """Make a loaded adapter the active one (``model.domain_adapter``, ``audio_domain="ldv"``)."""
        if adapter_name == self.active_domain_adapter:
            return
        if adapter_name not in self.domain_adapters:
            raise ValueError(f"unknown adapter {adapter_name!r}; loaded adapters: {self.list_domain_adapters()}")
        self.active_domain_adapter = adapter_name
        self.config.domain_adapter = self.domain_adapters[adapter_name].config.to_dict()

    def delete_domain_adapter(self, adapter_name: str) -> None:
        """Remove a loaded adapter that is not the active one."""
        if adapter_name == self.active_domain_adapter:
            raise ValueError(f"{adapter_name!r} is the active adapter; set another one active first")
        if adapter_name not in self.domain_adapters:
            raise ValueError(f"unknown adapter {adapter_name!r}; loaded adapters: {self.list_domain_adapters()}")
        del self.domain_adapters[adapter_name]

    def _check_new_adapter_name(self, adapter_name: str) -> None:
        if adapter_name in (MIC_DOMAIN, LDV_DOMAIN) or adapter_name in self.list_domain_adapters():
            raise ValueError(f"adapter name {adapter_name!r} is reserved or already loaded: {self._known_domains()}")

    def _new_adapter(self, config: DomainAdapterConfig, what: str) -> nn.Module:
        module = self._build_adapter(config)
        if module is None:
            raise ValueError(what)
        return module

    def _register_adapter(self, adapter_name: str, module: nn.Module) -> str:
        """Put a loaded or new adapter in the bank, frozen and in the model's train/eval mode, on its device."""
        self.domain_adapters[adapter_name] = module.to(device=next(self.parameters()).device)
        module.requires_grad_(False)
        module.train(self.training)  # follow the model's mode: no dropout at inference
        return adapter_name

    def add_domain_adapter(self, adapter_name: str, config: DomainAdapterConfig | dict | str | None = None,
                           set_active: bool = True) -> str:
        """Add a fresh adapter named ``adapter_name`` (like PEFT's ``add_adapter``).

        ``config`` is a [`DomainAdapterConfig`], its dict, a preset name (``lightweight``, ``standard``, ``heavy``,
        ``mlp``) or ``None`` (the default configuration). With ``set_active`` (default) the new adapter becomes the
        active one and the only trainable parameters (every other adapter and the base are frozen), ready to
        train; otherwise it is loaded frozen next to the others. Returns the name.
        """
        self._check_new_adapter_name(adapter_name)
        config = as_adapter_config(config) or DomainAdapterConfig()
        self._register_adapter(adapter_name, self._new_adapter(config, "adapter_type 'none' has no parameters; "
                                                                       "nothing to add"))
        if set_active:
            self.set_domain_adapter(adapter_name)
            self.freeze_base_model()
        return adapter_name

    def load_domain_adapter(self, path_or_repo: str, adapter_name: str | None = None, **hub_kwargs) -> str:
        """Load an adapter saved with ``save_pretrained`` (directory or Hub repo) next to the current ones.

        The adapter must have been trained for this base: the saved ``base_model_name_or_path`` and the encoder
        width must match. Returns the adapter's name (default: the repo or directory name). A single weights file
        (a ``torch.save`` ``.pt``/``.pth`` state dict, tensors only, or a ``.safetensors`` file without
        config.json) takes the active adapter's configuration, or ``adapter_config=...``.
        """
        path_or_repo = str(path_or_repo)
        if is_single_adapter_file(path_or_repo):
            return self._load_domain_adapter_file(path_or_repo, adapter_name, hub_kwargs.pop("adapter_config", None))
        adapter_name = adapter_name or Path(path_or_repo.rstrip("/")).name
        self._check_new_adapter_name(adapter_name)
        weights = resolve_adapter_file(path_or_repo, **hub_kwargs)
        saved = self._saved_adapter_config(path_or_repo, weights, hub_kwargs)
        module = self._new_adapter(DomainAdapterConfig.from_dict(saved.get("domain_adapter") or {}),
                                   f"{path_or_repo}: adapter_type 'none' has no weights to load")
        load_adapter_state(module, load_file(weights), weights)
        return self._register_adapter(adapter_name, module)

    def _saved_adapter_config(self, path_or_repo: str, weights: str, hub_kwargs: dict) -> dict:
        """The config.json next to a saved adapter, checked against this model's base and encoder width."""
        config_path = os.path.join(os.path.dirname(weights), "config.json")
        if not os.path.isfile(config_path) and not os.path.exists(path_or_repo):  # a Hub repo: fetch its config
            config_path = cached_file(path_or_repo, "config.json", _raise_exceptions_for_missing_entries=False,
                                      **hub_kwargs) or config_path
        if not os.path.isfile(config_path):
            raise FileNotFoundError(f"{path_or_repo}: no config.json next to {ADAPTER_WEIGHTS_NAME}")
        with open(config_path, encoding="utf-8") as handle:
            saved = json.load(handle)
        saved_base = saved.get("base_model_name_or_path")
        own_base = self.config.base_model_name_or_path
        if saved_base and own_base and saved_base != own_base:
            raise ValueError(
                f"{path_or_repo}: adapter was trained for base model {saved_base!r}, but this model's base is {own_base!r}"
            )
        saved_dim = (saved.get("audio_config") or {}).get("d_model")
        own_dim = self.config.audio_config.d_model
        if saved_dim is not None and saved_dim != own_dim:
            raise ValueError(
                f"{path_or_repo}: adapter was trained for an audio encoder with d_model {saved_dim}, "
                f"this model's encoder has d_model {own_dim}"
            )
        return saved

    def _load_domain_adapter_file(self, path: str, adapter_name: str | None,
                                  adapter_config: DomainAdapterConfig | dict | str | None) -> str:
        """Load one weights file without a config.json next to it: a ``.safetensors`` file, or a ``.pt``/``.pth``
        file written by ``torch.save(model.domain_adapter.state_dict(), path)`` (read with
        ``torch.load(weights_only=True)``: tensors only). Its configuration is ``adapter_config`` (default: the
        active adapter's)."""
        adapter_name = adapter_name or Path(path).stem
        self._check_new_adapter_name(adapter_name)
        adapter_config = as_adapter_config(adapter_config) or self.domain_adapter_config()
        module = self._new_adapter(adapter_config, f"{path}: the active adapter has adapter_type 'none'; pass "
                                                   "adapter_config=... (the configuration the weights were trained "
                                                   "with)")
        state = load_file(path) if path.endswith(".safetensors") else load_torch_adapter_state(path)
        load_adapter_state(module, state, path)
        return self._register_adapter(adapter_name, module)


__all__ = [
    "ADAPTER_WEIGHTS_NAME",
    "DEFAULT_ADAPTER_NAME",
    "DOMAIN_ADAPTER_PREFIX",
    "DomainAdapterBankMixin",
    "LDV_DOMAIN",
    "MIC_DOMAIN",
    "load_torch_adapter_state",
]
