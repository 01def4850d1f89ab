"""Method registry: config type -> handler, and the single ``compress`` entry point.

Parsing a recipe (:func:`parse_config`, :func:`known_methods`) only needs the torch-free configs
of :mod:`pose_core.compression.configs`; the handlers (which import torch) are loaded by the
first :func:`compress` call.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from typing import Any, TypeVar

from pose_core.compression.base import (
    CompressibleModel,
    CompressionError,
    CompressionResult,
    UnknownMethodError,
)
from pose_core.compression.configs import BUILTIN_CONFIGS, MethodConfig

ConfigT = TypeVar("ConfigT", bound=MethodConfig)
Handler = Callable[[CompressibleModel, Any, Any], CompressionResult]
TypedHandler = Callable[[CompressibleModel, ConfigT, Any], CompressionResult]

_CONFIGS: dict[str, type[MethodConfig]] = dict(BUILTIN_CONFIGS)
_HANDLERS: dict[str, Handler] = {}


def register(config_cls: type[ConfigT]) -> Callable[[TypedHandler[ConfigT]], Handler]:
    """Decorator registering ``handler(model, config, data)`` for ``config_cls``."""
    name = config_cls.model_fields["method"].default
    if not isinstance(name, str):
        raise TypeError(f"{config_cls.__name__}.method needs a string default")

    def decorate(handler: TypedHandler[ConfigT]) -> Handler:
        _CONFIGS[name] = config_cls
        _HANDLERS[name] = handler
        return handler

    return decorate


def _load_builtin_methods() -> None:
    """Import the modules that register the built-in methods (lazily: they pull in torch)."""
    import importlib

    for module in ("quantize", "prune", "lowrank", "distill"):
        try:
            importlib.import_module(f"pose_core.compression.{module}")
        except ModuleNotFoundError as exc:  # a method module that does not exist yet
            if exc.name != f"pose_core.compression.{module}":
                raise


def known_methods() -> list[str]:
    """Names of every registered method, sorted."""
    return sorted(_CONFIGS)


def onnx_methods() -> list[str]:
    """Names of the registered methods that run on an ONNX graph
    (:attr:`~pose_core.compression.configs.MethodConfig.runs_on_onnx`), sorted."""
    return sorted(name for name, config in _CONFIGS.items() if config.runs_on_onnx)


def torch_needed_at(configs: Sequence[MethodConfig], torch_form: bool) -> tuple[int, int] | None:
    """``(step, since)``: the first step that needs a torch model when the recipe starts from
    a model with (``torch_form``) or without a torch form, and the step whose output is ONNX
    since (``0`` with no torch form to start from); ``None`` when every step can run."""
    onnx_from = None if torch_form else 0
    for index, config in enumerate(configs):
        if config.runs_on_onnx:
            onnx_from = index if onnx_from is None else onnx_from
        elif onnx_from is not None:
            return index, onnx_from
    return None


def parse_config(raw: Mapping[str, Any], context: Mapping[str, Any] | None = None) -> MethodConfig:
    """Build the typed config for one recipe step (``{"method": ..., **fields}``); ``context``
    holds the service's limits (:data:`~pose_core.compression.configs.MAX_TRAINING_STEPS`, ...).
    """
    method = raw.get("method")
    if method not in _CONFIGS:
        raise UnknownMethodError(
            f"unknown compression method {method!r}; known methods: {', '.join(sorted(_CONFIGS))}"
        )
    return _CONFIGS[str(method)].model_validate(dict(raw), context=dict(context or {}))


def compress(model: CompressibleModel, config: MethodConfig, data: Any) -> CompressionResult:
    """Run one compression step. Never mutates ``model``."""
    _load_builtin_methods()
    handler = _HANDLERS.get(config.method)
    if handler is None:
        raise UnknownMethodError(
            f"unknown compression method {config.method!r}; "
            f"known methods: {', '.join(sorted(_HANDLERS))}"
        )
    if not config.runs_on_onnx and not _is_torch(model):
        raise CompressionError(
            f"{config.method} needs a torch model; only {', '.join(onnx_methods())} "
            "can run on ONNX"
        )
    return handler(model, config, data)


def _is_torch(model: object) -> bool:
    import torch

    return isinstance(model, torch.nn.Module)
