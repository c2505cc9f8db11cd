# Copyright the qwen2audio-ldv authors. Licensed under the Apache License, Version 2.0.
"""Adapter type ``lora``: low-rank updates of the frozen audio tower's own projections, built with ``peft``.

Unlike the other adapter types this is no module between two places of the audio path: it changes the tower's
attention (``q_proj``, ``k_proj``, ``v_proj``, ``out_proj``) and feed-forward (``fc1``, ``fc2``) projections of the
layers from ``encoder_layer`` on, ``W x -> W x + (alpha / r) * B A dropout(x)``. peft builds the LoRA layers
(``LoraConfig`` + ``inject_adapter_in_model``) on a shape-only mirror of those layers; the LoRA weights then live in
:class:`LoRADomainAdapter`, one entry of the model's adapter bank (``domain_adapters.<name>.layers.<i>.<path>.lora_A.
ldv.weight``), so the tower's own weight names never change and a save holds the LoRA weights only.

The tower carries the LoRA layers only while an adapted pass runs (:func:`lora_in_tower`): each targeted projection
is replaced by its peft LoRA layer, whose base layer is the tower's projection itself, and put back afterwards. Per
clip routing (``audio_domain``) uses peft's mixed-batch mechanism: every LoRA layer receives ``adapter_names`` (the
adapter's own name for the clips routed to it, peft's ``"__base__"`` for the others), so rows not routed to the
adapter get exactly the tower's projection.

This file travels to the Hub with every saved adapter (``trust_remote_code``): it imports only torch and,
relatively, the configuration file; ``peft`` is imported when a ``lora`` adapter is built, so other adapter types
load without it.
"""

import contextlib
import functools
import math

import torch
from torch import nn

from .configuration_qwen2audio_ldv import DomainAdapterConfig

#: peft's adapter name inside every LoRA layer of a :class:`LoRADomainAdapter` (the bank's name for the adapter is
#: its key in ``model.domain_adapters``).
LORA_ADAPTER_NAME = "ldv"
#: peft's ``adapter_names`` entry for a row that takes no adapter.
BASE_ROWS = "__base__"
#: Where each target sits in a Whisper-style encoder layer (``Qwen2AudioEncoderLayer``).
LORA_MODULE_PATHS = {"q_proj": "self_attn.q_proj", "k_proj": "self_attn.k_proj", "v_proj": "self_attn.v_proj",
                     "out_proj": "self_attn.out_proj", "fc1": "fc1", "fc2": "fc2"}


def import_peft():
    """``(LoraConfig, inject_adapter_in_model, LoraLayer)`` from ``peft``, or an ImportError that says how to get it."""
    try:
        from peft import LoraConfig, inject_adapter_in_model
        from peft.tuners.lora import LoraLayer
    except ImportError as error:
        raise ImportError(
            "adapter_type 'lora' (LoRA on the audio tower's projections) needs the `peft` package, which could not "
            "be imported: install it with `pip install peft` (the adapter was built with peft >= 0.17)"
        ) from error
    return LoraConfig, inject_adapter_in_model, LoraLayer


class _ShapeOnlyLinear(nn.Linear):
    """Stands in for one tower projection while peft builds its LoRA layer: peft reads its ``in_features`` and
    ``out_features`` (and the device and dtype of a 1 x 1 weight). It is dropped afterwards: at run time the tower's
    own projection is the LoRA layer's base layer."""

    def __init__(self, in_features: int, out_features: int):
        super().__init__(1, 1, bias=False)
        self.in_features, self.out_features = in_features, out_features


class LoRADomainAdapter(nn.Module):
    """peft LoRA layers for the audio tower's projections in layers ``encoder_layer`` to the last.

    ``layers.<i>.<path>`` (``path`` as in :data:`LORA_MODULE_PATHS`) is a peft ``lora.Linear`` without a base layer
    of its own; :func:`lora_in_tower` lends it the tower's projection for the duration of a pass. With ``zero_init``
    ``B`` starts at zero (peft's default initialisation), so the adapted tower starts equal to the frozen one.
    """

    gate = None  # no per-frame gate: it is not a module on the features

    def __init__(self, config: DomainAdapterConfig, input_dim: int, encoder_layers: int, ffn_dim: int):
        super().__init__()
        LoraConfig, inject_adapter_in_model, LoraLayer = import_peft()
        first = config.encoder_layer or 0
        if not 0 <= first < encoder_layers:
            raise ValueError(f"a lora adapter's `encoder_layer` ({first}) must name one of the audio tower's "
                             f"{encoder_layers} layers (0..{encoder_layers - 1}): LoRA goes on layers k to the last")
        self.config = config
        self.input_dim = input_dim
        self.adapted_layers = list(range(first, encoder_layers))
        shapes = {"q_proj": (input_dim, input_dim), "k_proj": (input_dim, input_dim), "v_proj": (input_dim, input_dim),
                  "out_proj": (input_dim, input_dim), "fc1": (input_dim, ffn_dim), "fc2": (ffn_dim, input_dim)}
        mirror = nn.Module()
        mirror.layers = nn.ModuleList(nn.Module() for _ in range(encoder_layers))
        for index in self.adapted_layers:
            for target in config.lora_target_modules:
                parent = mirror.layers[index]
                *parents, leaf = LORA_MODULE_PATHS[target].split(".")
                for part in parents:
                    if part not in parent._modules:
                        parent.add_module(part, nn.Module())
                    parent = parent._modules[part]
                parent.add_module(leaf, _ShapeOnlyLinear(*shapes[target]))
        lora_config = LoraConfig(r=config.lora_rank, lora_alpha=config.lora_alpha, lora_dropout=float(config.dropout),
                                 target_modules=list(config.lora_target_modules), layers_pattern="layers",
                                 layers_to_transform=self.adapted_layers, bias="none", init_lora_weights=True)
        inject_adapter_in_model(lora_config, mirror, adapter_name=LORA_ADAPTER_NAME)
        self.layers = mirror.layers
        #: ``layers.<i>.<path>`` of every LoRA layer, in the tower's module naming
        self.target_names: list[str] = []
        for name, module in self.named_modules():
            if isinstance(module, LoraLayer):
                del module._modules["base_layer"]  # the shape-only stand-in: the tower's projection replaces it
                self.target_names.append(name)
        expected = len(self.adapted_layers) * len(config.lora_target_modules)
        if len(self.target_names) != expected:  # pragma: no cover - peft matched other modules than asked
            raise RuntimeError(f"peft built {len(self.target_names)} LoRA layers, expected {expected}: "
                               f"{self.target_names}")
        self.reset_parameters()

    def lora_layer(self, name: str) -> nn.Module:
        return self.get_submodule(name)

    @torch.no_grad()
    def reset_parameters(self) -> None:
        """peft's initialisation (``A`` Kaiming-uniform, ``B`` zero); without ``zero_init`` ``B`` is drawn like
        ``A``, so the adapter changes the tower from the start (tests, ablations)."""
        for name in self.target_names:
            layer = self.lora_layer(name)
            layer.reset_lora_parameters(LORA_ADAPTER_NAME, True)
            if not self.config.zero_init:
                nn.init.kaiming_uniform_(layer.lora_B[LORA_ADAPTER_NAME].weight, a=math.sqrt(5))

    def forward(self, *args, **kwargs):
        raise TypeError("a lora adapter has no forward on features: it changes the audio tower's projections. Run the "
                        "model (audio_domain routes clips to it), or the tower inside `lora_in_tower(...)`")


def _route_rows(adapter_names: list[str], module, args, kwargs):
    """Forward pre-hook: peft's mixed-batch argument, one adapter name (or ``"__base__"``) per row."""
    return args, {**kwargs, "adapter_names": adapter_names}


def _layer_of(target: str) -> int:
    """The tower layer of a LoRA target name (``layers.<i>.<path>``)."""
    return int(target.split(".")[1])


def _install(audio_tower: nn.Module, entries: list[tuple[LoRADomainAdapter, str, list[str] | None]]):
    """Put each ``(adapter, target, adapter_names)`` LoRA layer in place of the tower's projection; returns what
    :func:`_uninstall` needs. ``adapter_names``: peft's per-row names, ``None`` for every row."""
    installed, hooks = [], []
    try:
        for adapter, target, names in entries:
            layer = adapter.lora_layer(target)
            if "base_layer" in layer.__dict__:
                raise RuntimeError(f"{target}: this lora adapter is already in the audio tower (nested pass)")
            parent_name, _, leaf = target.rpartition(".")
            parent = audio_tower.get_submodule(parent_name)
            current = parent._modules.get(leaf)
            base = current
            while "base_layer" in getattr(base, "__dict__", {}):  # another adapter's LoRA layer, stacked
                base = base.__dict__["base_layer"]
            if not isinstance(base, nn.Module) or getattr(base, "in_features", None) != layer.in_features \
                    or getattr(base, "out_features", None) != layer.out_features:
                raise ValueError(f"{target}: the audio tower has no projection of the LoRA layer's shape "
                                 f"({layer.in_features} -> {layer.out_features}); was the adapter trained for "
                                 "another tower?")
            # lent, not registered: the tower's projection stays the tower's (state dict, devices, freezing)
            layer.__dict__["base_layer"] = current
            parent._modules[leaf] = layer
            installed.append((parent, leaf, current, layer))
            if names is not None:
                hooks.append(layer.register_forward_pre_hook(functools.partial(_route_rows, names),
                                                             with_kwargs=True))
    except BaseException:
        _uninstall(installed, hooks)
        raise
    return installed, hooks


def _uninstall(installed: list, hooks: list) -> None:
    """Undo :func:`_install`: the tower holds its own projections again."""
    for hook in hooks:
        hook.remove()
    for parent, leaf, current, layer in reversed(installed):
        parent._modules[leaf] = current
        layer.__dict__.pop("base_layer", None)


@contextlib.contextmanager
def _lent(audio_tower: nn.Module, entries: list):
    installed, hooks = _install(audio_tower, entries)
    try:
        yield
    finally:
        _uninstall(installed, hooks)


def _checkpoints(layer: nn.Module) -> bool:
    """Whether ``layer`` will run under gradient checkpointing (transformers' ``GradientCheckpointingLayer``)."""
    return bool(getattr(layer, "gradient_checkpointing", False)) and layer.training and torch.is_grad_enabled()


def _checkpoint_with_lora(checkpoint, audio_tower: nn.Module, entries: list, function, *args, **kwargs):
    """The layer's checkpointing function, around a ``function`` that lends the layer its LoRA layers: the forward
    and the recomputation during backward (after :func:`lora_in_tower` has returned) both run with LoRA."""

    def with_lora(*inner_args, **inner_kwargs):
        with _lent(audio_tower, entries):
            return function(*inner_args, **inner_kwargs)

    return checkpoint(with_lora, *args, **kwargs)


@contextlib.contextmanager
def lora_in_tower(audio_tower: nn.Module, routes: list[tuple[LoRADomainAdapter, list[bool] | None]]):
    """Within the block the tower's targeted projections are the adapters' peft LoRA layers.

    ``routes``: each adapter with the rows (clips) of the batch it applies to, ``None`` for every row. A row that
    is not routed to an adapter gets its layers' ``"__base__"`` (peft's mixed batch): the tower's projection alone.
    Several adapters stack on one projection (each LoRA layer's base layer is the one installed before it). On
    leaving, the tower holds its own projections again.

    A tower layer under gradient checkpointing (``activation_checkpointing_enable``, training) gets its LoRA layers
    inside its checkpointed function instead, so that the recomputation in the backward pass, which runs after the
    block, sees them too. Only non-reentrant checkpointing (transformers' default) is accepted: the reentrant kind
    gives no gradient to the LoRA weights of a layer whose input needs none (the cached states).
    """
    adapters = [adapter for adapter, _ in routes]
    if len({id(a) for a in adapters}) != len(adapters):
        raise ValueError("an adapter is routed twice in one pass")
    entries = [(adapter, target, None if rows is None else [LORA_ADAPTER_NAME if row else BASE_ROWS for row in rows])
               for adapter, rows in routes for target in adapter.target_names]
    checkpointed = {index for index, layer in enumerate(audio_tower.layers) if _checkpoints(layer)}
    swapped = []
    try:
        for index in sorted(checkpointed & {_layer_of(target) for _, target, _ in entries}):
            layer = audio_tower.layers[index]
            checkpoint = layer._gradient_checkpointing_func
            if getattr(checkpoint, "keywords", {}).get("use_reentrant", False):
                raise ValueError("a lora adapter trains under gradient checkpointing only with use_reentrant=False "
                                 "(transformers' default): reentrant checkpointing would leave the first adapted "
                                 "layer's LoRA weights without gradients")
            mine = [entry for entry in entries if _layer_of(entry[1]) == index]
            layer._gradient_checkpointing_func = functools.partial(_checkpoint_with_lora, checkpoint, audio_tower,
                                                                   mine)
            swapped.append((layer, checkpoint))
        with _lent(audio_tower, [entry for entry in entries if _layer_of(entry[1]) not in checkpointed]):
            yield
    finally:
        for layer, checkpoint in swapped:
            layer._gradient_checkpointing_func = checkpoint


__all__ = ["BASE_ROWS", "LORA_ADAPTER_NAME", "LORA_MODULE_PATHS", "LoRADomainAdapter", "import_peft", "lora_in_tower"]
