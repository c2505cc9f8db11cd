# Copyright the qwen2audio-ldv authors. Licensed under the Apache License, Version 2.0.
"""Save and load: adapter-only checkpoints on a base reference, full checkpoints, and the strict key checks.

An adapter-only folder is ``config.json`` (``auto_map``, ``base_model_name_or_path``), ``domain_adapter.safetensors``
(the adapter's own keys) and the Hub code files; ``from_pretrained`` loads the base from its reference, then the
adapter strictly. A full checkpoint is the stock layout with the active adapter's keys as ``domain_adapter.*``.
Every weight must arrive: a missing or unexpected key raises, naming the keys.

This file travels to the Hub with every saved adapter (``trust_remote_code``): it imports only torch, transformers,
safetensors (a transformers dependency) and, relatively, the other Hub files.
"""

import json
import os
import re
import shutil
from pathlib import Path
from typing import Any

import torch
from safetensors.torch import load_file, save_file
from transformers import AutoConfig, Qwen2AudioConfig
from transformers.utils import cached_file

from .adapter_bank_qwen2audio_ldv import (
    ADAPTER_WEIGHTS_NAME,
    CHECKPOINT_ADAPTER_PREFIX,
    DEFAULT_ADAPTER_NAME,
    DOMAIN_ADAPTER_PREFIX,
    has_adapter_file,
    load_adapter_state,
    resolve_adapter_file,
)
from .configuration_qwen2audio_ldv import DomainAdapterConfig, Qwen2AudioLDVConfig

#: The files ``save_pretrained`` copies next to the weights: every Hub file (each imports only torch, transformers
#: and the others, relatively).
CODE_FILES = (
    "configuration_qwen2audio_ldv.py",
    "adapters_qwen2audio_ldv.py",
    "audio_tower_qwen2audio_ldv.py",
    "lora_qwen2audio_ldv.py",
    "adapter_bank_qwen2audio_ldv.py",
    "checkpoints_qwen2audio_ldv.py",
    "modeling_qwen2audio_ldv.py",
)
_AUTO_MAP = {
    "AutoConfig": "configuration_qwen2audio_ldv.Qwen2AudioLDVConfig",
    "AutoModelForSeq2SeqLM": "modeling_qwen2audio_ldv.Qwen2AudioLDVForConditionalGeneration",
    "AutoModelForMultimodalLM": "modeling_qwen2audio_ldv.Qwen2AudioLDVForConditionalGeneration",
}


#: A full checkpoint's adapter keys (``domain_adapter.*``) -> the ``default`` slot, as a ``from_pretrained`` key
#: mapping: a model without adapters (``adapter_type="none"``) has no such keys, so this is not a conversion registered
#: for the class (transformers expects each of those to match keys of every instance).
_FULL_CHECKPOINT_KEY_MAPPING = {
    "^" + re.escape(CHECKPOINT_ADAPTER_PREFIX): f"{DOMAIN_ADAPTER_PREFIX}{DEFAULT_ADAPTER_NAME}."}


def _full_checkpoint_state(state_dict: dict[str, torch.Tensor], active_prefix: str) -> dict[str, torch.Tensor]:
    """A full checkpoint's state: the base weights and the active adapter's as ``domain_adapter.*`` (the layout
    every full checkpoint of this model has had; loading maps it back to ``domain_adapters.default.*``)."""
    state = {k: v for k, v in state_dict.items() if not k.startswith(DOMAIN_ADAPTER_PREFIX)}
    state.update({CHECKPOINT_ADAPTER_PREFIX + k[len(active_prefix):]: v for k, v in state_dict.items()
                  if k.startswith(active_prefix)})
    return state


def _loading_info_without_new_adapter(info: dict) -> dict:
    """A base checkpoint's loading info without the new adapter's keys (they are initialised, not missing)."""
    info = dict(info)
    info["missing_keys"] = [k for k in info.get("missing_keys") or [] if not k.startswith(DOMAIN_ADAPTER_PREFIX)]
    return info


def _raise_on_bad_loading_info(source: str, info: dict, allow_missing_adapter: bool = True) -> None:
    """Every weight must arrive; from a base checkpoint only the new adapter's keys may be missing."""
    missing = sorted(info.get("missing_keys") or [])
    if allow_missing_adapter:
        missing = [k for k in missing if not k.startswith(DOMAIN_ADAPTER_PREFIX)]
    unexpected = sorted(info.get("unexpected_keys") or [])
    mismatched = list(info.get("mismatched_keys") or [])
    if missing or unexpected or mismatched:
        raise ValueError(
            f"{source}: checkpoint does not match the model: missing keys {missing}, unexpected keys {unexpected}, "
            f"mismatched shapes {mismatched}"
        )


def _recorded_base_reference(name: str) -> str:
    """The base reference an adapter records: a local directory as an absolute path (a relative one resolves only
    from the working directory it was loaded from), anything else (a Hub repo id) unchanged."""
    return os.path.abspath(name) if os.path.isdir(name) else name


def _resolve_base_reference(recorded: str, adapter_path: str) -> tuple[str, list[str]]:
    """Where an adapter's recorded base is: ``(the reference to load, the local directories tried)``.

    An absolute path is used as recorded. A relative one is tried against the adapter's own folder, then against the
    working directory (adapters saved before references were recorded absolute hold paths relative to the directory
    they were trained from); the first that is a directory is returned as an absolute path. When neither is, the
    reference goes on unchanged: a Hub repo id (``Qwen/Qwen2-Audio-7B-Instruct``) is never turned into a path.
    """
    if os.path.isabs(recorded):
        return recorded, [recorded]
    tried = []
    if os.path.isdir(adapter_path):
        tried.append(os.path.normpath(os.path.join(os.path.abspath(adapter_path), recorded)))
    tried.append(os.path.abspath(recorded))
    for candidate in tried:
        if os.path.isdir(candidate):
            return candidate, tried
    return recorded, tried


def _base_not_found(adapter_path: str, base: str, tried: list[str], overridden: bool, error: Exception) -> str:
    """The error for a base that is neither a local directory nor loadable from the Hub: what was tried, and how
    to point at the base."""
    source = "the base given" if overridden else "its base (`base_model_name_or_path` in config.json)"
    attempts = [f"no directory at {', '.join(tried)}"] if tried else []
    if not os.path.isabs(base):  # an absolute path is no repo id: transformers' Hub error would say only that
        attempts.append(f"not loadable as a Hub repo id ({error})")
    return (f"{adapter_path}: cannot load {source} {base!r}: {'; '.join(attempts)}. Point at the base model: "
            "from_pretrained(..., base_model_name_or_path=DIRECTORY_OR_HUB_ID), or --base on the command line")


class DomainAdapterCheckpointMixin:
    """``save_pretrained`` / ``from_pretrained`` / ``from_base_pretrained`` of the adapted model (placed before the
    stock class in its bases, so that ``super()`` reaches ``PreTrainedModel``'s)."""

    def _write_code_and_config(self, save_directory: str, config: Qwen2AudioLDVConfig) -> None:
        config.auto_map = dict(_AUTO_MAP)
        config.architectures = [type(self).__name__]
        config.save_pretrained(save_directory)
        here = Path(__file__).resolve().parent
        for name in CODE_FILES:
            shutil.copyfile(here / name, Path(save_directory) / name)

    def save_pretrained(
        self,
        save_directory: str | os.PathLike,
        adapter_only: bool | None = None,
        adapter_name: str | None = None,
        **kwargs: Any,
    ):
        """Save the model.

        With a base reference (``config.base_model_name_or_path``), the default writes the adapter only:
        ``config.json`` (with ``auto_map``), ``domain_adapter.safetensors`` and the Hub code files. With
        ``adapter_only=False`` (or no base reference) the whole model is written, plus the same code files; its
        active adapter's keys are ``domain_adapter.*`` (the other loaded adapters are not written).
        ``adapter_name`` saves one loaded adapter (default: the active one).
        """
        if adapter_only is None:
            adapter_only = self.config.base_model_name_or_path is not None
        os.makedirs(save_directory, exist_ok=True)
        adapter_name = adapter_name or self.active_domain_adapter
        config = Qwen2AudioLDVConfig.from_dict(self.config.to_dict())
        config.domain_adapter = self.domain_adapter_config(adapter_name).to_dict()  # raises on an unknown name
        module = self.domain_adapters[adapter_name] if adapter_name in self.domain_adapters else None
        if adapter_only:
            if config.base_model_name_or_path is None:
                raise ValueError("adapter_only=True needs config.base_model_name_or_path (the base to load it onto)")
            config.base_model_name_or_path = _recorded_base_reference(config.base_model_name_or_path)
            if kwargs.get("is_main_process", True):
                self._write_code_and_config(save_directory, config)
                # adapter_type "none" writes an empty file: it still marks the folder as adapter-only (base + nothing)
                state = {} if module is None else {
                    k: v.detach().contiguous().cpu() for k, v in module.state_dict().items()}
                save_file(state, os.path.join(save_directory, ADAPTER_WEIGHTS_NAME), metadata={"format": "pt"})
            return None
        if adapter_name != self.active_domain_adapter:
            raise ValueError("a full save writes the active adapter; call set_domain_adapter first")
        state_dict = _full_checkpoint_state(kwargs.pop("state_dict", None) or self.state_dict(),
                                            self.active_adapter_prefix())
        result = super().save_pretrained(save_directory, state_dict=state_dict, **kwargs)
        if kwargs.get("is_main_process", True):
            # the stock save records the weights' dtype in the config (what dtype="auto" loads them in); this
            # config.json replaces the one it wrote
            config.dtype = self.config.dtype
            self._write_code_and_config(save_directory, config)
        return result

    @classmethod
    def from_base_pretrained(
        cls,
        base_model_name_or_path: str | os.PathLike,
        adapter_config: DomainAdapterConfig | None = None,
        **kwargs: Any,
    ):
        """Load a stock Qwen2-Audio checkpoint (Hub id or directory) and add a fresh adapter.

        ``kwargs`` go to ``from_pretrained`` (``dtype``, ``device_map``, ``revision``, ...). Every base weight
        must arrive: a missing or unexpected key other than the new adapter's raises.
        """
        base_model_name_or_path = str(base_model_name_or_path)
        output_loading_info = kwargs.pop("output_loading_info", False)
        hub_kwargs = {k: kwargs[k] for k in ("revision", "cache_dir", "token", "local_files_only") if k in kwargs}
        # an adapter repo is not a base; say so before AutoConfig asks to trust its code
        config_file = os.path.join(base_model_name_or_path, "config.json")
        if not os.path.isdir(base_model_name_or_path):
            config_file = cached_file(base_model_name_or_path, "config.json",
                                      _raise_exceptions_for_missing_entries=False, **hub_kwargs)
        if config_file and os.path.isfile(config_file):
            with open(config_file, encoding="utf-8") as handle:
                if json.load(handle).get("model_type") == Qwen2AudioLDVConfig.model_type:
                    raise ValueError(f"{base_model_name_or_path} already holds an LDV adapter model; use "
                                     "from_pretrained")
        base_config = AutoConfig.from_pretrained(base_model_name_or_path, **hub_kwargs)
        if not isinstance(base_config, Qwen2AudioConfig):
            raise ValueError(
                f"{base_model_name_or_path}: expected a Qwen2-Audio checkpoint (model_type 'qwen2_audio'), "
                f"got model_type {getattr(base_config, 'model_type', None)!r}"
            )
        config = Qwen2AudioLDVConfig.from_base_config(
            base_config,
            adapter_config or DomainAdapterConfig(),
            base_model_name_or_path=_recorded_base_reference(base_model_name_or_path),
            base_model_revision=kwargs.get("revision"),
        )
        # The new adapter's keys are expected to be missing (they are initialised); keep them out of the load
        # report, and check below that nothing else is missing.
        previous = cls._keys_to_ignore_on_load_missing
        cls._keys_to_ignore_on_load_missing = [r"^domain_adapters\."]
        try:
            model, info = super().from_pretrained(base_model_name_or_path, config=config, output_loading_info=True,
                                                  **kwargs)
        finally:
            cls._keys_to_ignore_on_load_missing = previous
        if output_loading_info:  # reported to the caller, as the stock class does (the adapter's keys are new)
            info = _loading_info_without_new_adapter(info)
        else:
            _raise_on_bad_loading_info(base_model_name_or_path, info)
        model.adapters_to_float32()
        model.freeze_base_model()  # as add_domain_adapter_to_model: only the adapter trains
        return (model, info) if output_loading_info else model

    @classmethod
    def from_pretrained(cls, pretrained_model_name_or_path, *model_args, **kwargs):
        """Load an adapter-only checkpoint (base from ``base_model_name_or_path``, then the adapter, strictly) or a
        full checkpoint. ``revision`` applies to this repo; the base uses ``config.base_model_revision``.

        The recorded base is found wherever the adapter is loaded from: an absolute path as recorded, a relative one
        against the adapter's folder and then the working directory, a Hub repo id unchanged. The keyword arguments
        ``base_model_name_or_path`` and ``base_model_revision`` replace the recorded ones (as keyword arguments
        override config attributes in transformers), e.g. for an adapter whose base lives elsewhere on this machine.
        """
        hub_kwargs = {k: kwargs[k] for k in ("revision", "cache_dir", "token", "local_files_only", "subfolder")
                      if k in kwargs}
        output_loading_info = kwargs.pop("output_loading_info", False)
        if pretrained_model_name_or_path is None or not has_adapter_file(str(pretrained_model_name_or_path),
                                                                          **hub_kwargs):
            # a full checkpoint, or (None, config=..., state_dict=...) as with the stock class
            path = pretrained_model_name_or_path if pretrained_model_name_or_path is None else str(
                pretrained_model_name_or_path)
            kwargs["key_mapping"] = {**_FULL_CHECKPOINT_KEY_MAPPING, **(kwargs.get("key_mapping") or {})}
            model, info = super().from_pretrained(path, *model_args, output_loading_info=True, **kwargs)
            missing_adapter = [k for k in info.get("missing_keys") or [] if k.startswith(DOMAIN_ADAPTER_PREFIX)]
            if output_loading_info:
                if missing_adapter:  # a model without its adapter's weights is refused, whatever was asked
                    raise ValueError(f"{path}: the adapter's weights are missing: {sorted(missing_adapter)}")
            else:
                _raise_on_bad_loading_info(str(path), info, allow_missing_adapter=False)
            model.adapters_to_float32()
            model.freeze_base_model()
            return (model, info) if output_loading_info else model
        path = str(pretrained_model_name_or_path)
        config = kwargs.pop("config", None)
        if not isinstance(config, Qwen2AudioLDVConfig):
            config = Qwen2AudioLDVConfig.from_pretrained(path, **hub_kwargs)
        override = kwargs.pop("base_model_name_or_path", None)
        if override is not None:
            base = str(override)
            tried = [] if os.path.isdir(base) else [os.path.abspath(base)]
        elif not config.base_model_name_or_path:
            raise ValueError(f"{path}: adapter-only checkpoint without `base_model_name_or_path` in config.json; "
                             "pass base_model_name_or_path=... (the base it was trained on)")
        else:
            base, tried = _resolve_base_reference(config.base_model_name_or_path, path)
        for key in ("revision", "subfolder", "trust_remote_code", "adapter_kwargs"):
            kwargs.pop(key, None)
        # the recorded revision is the recorded base's: another base given is taken at its own default
        base_revision = kwargs.pop("base_model_revision", None if override is not None else config.base_model_revision)
        if base_revision is not None:
            kwargs["revision"] = base_revision
        try:
            loaded = cls.from_base_pretrained(base, adapter_config=config.adapter_config,
                                              output_loading_info=output_loading_info, **kwargs)
        except OSError as error:
            if os.path.isdir(base):  # the base is there and failed to load: its own error says why
                raise
            raise OSError(_base_not_found(path, base, tried, override is not None, error)) from error
        model, info = loaded if output_loading_info else (loaded, None)
        model.config.trim_audio_tower = config.trim_audio_tower
        weights = resolve_adapter_file(path, **hub_kwargs)
        state = load_file(weights)
        if model.domain_adapter is not None:
            reference = next(model.domain_adapter.parameters())
            load_adapter_state(model.domain_adapter, {k: v.to(reference.device) for k, v in state.items()}, weights)
        elif state:
            raise ValueError(f"{weights}: adapter_type 'none' but the file holds weights {sorted(state)}")
        model.config.name_or_path = path
        return (model, info) if output_loading_info else model


__all__ = ["CODE_FILES", "DomainAdapterCheckpointMixin"]
