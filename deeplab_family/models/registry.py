"""The model registry: `build_model(config)` looks up `config.name` among registered builders.

A builder is registered with `@register_model(name, head_config_cls)`. `head_config_cls` is the
frozen dataclass of that model's head options; `ModelConfig.head` (a plain dict, as it comes from
YAML) is validated against it, so an unknown key is an error that names the key.

Registries are filled by explicit imports: `deeplab_family.models` imports every model module.
"""

import dataclasses

_REGISTRY = {}


def register_model(name, head_config_cls):
    """Decorator registering `builder(config: ModelConfig, head, dtype) -> keras.Model`.

    `head` is the validated head dataclass; `dtype` a dtype policy name or None (the global
    policy), passed to every layer so that mixed precision needs no global state.
    """

    def wrap(builder):
        if name in _REGISTRY:
            raise ValueError(f"model {name!r} is already registered")
        if not dataclasses.is_dataclass(head_config_cls):
            raise TypeError(f"head_config_cls for {name!r} must be a dataclass")
        _REGISTRY[name] = (builder, head_config_cls)
        return builder

    return wrap


def registered_models():
    """The registered model names, sorted."""
    return sorted(_REGISTRY)


def head_config(config):
    """The validated head dataclass of `config` (a `ModelConfig`)."""
    _, head_cls = _lookup(config.name)
    return dataclass_from_dict(head_cls, config.head, "model.head", context=config.name)


def build_model(config, dtype=None):
    """Builds the functional `keras.Model` described by `config` (a `ModelConfig`).

    The model maps float32 RGB images in 0..255, `(batch, H, W, 3)` with H and W possibly
    `None`, to a dict with `"logits"` (float32, `(batch, H, W, num_classes)`, at the input
    resolution) and, only when switched on, `"aux_*"` outputs. `dtype` is a dtype policy for
    every layer (e.g. "mixed_bfloat16"); logits stay float32 whatever it is.
    """
    builder, _ = _lookup(config.name)
    return builder(config, head_config(config), dtype)


def _lookup(name):
    if name not in _REGISTRY:
        raise ValueError(
            f"unknown model {name!r}. Registered models: {registered_models()} "
            "(import deeplab_family.models to register them)"
        )
    return _REGISTRY[name]


class ConfigValueError(ValueError):
    """A config value refused, its message already saying the section it came from."""


def dataclass_from_dict(cls, values, where, context=""):
    """`cls(**values)` whose errors say where the values came from.

    An unknown key is named with the allowed ones. A `ValueError` from `cls`'s own checks
    (which speak of the bare field, `filters must be ...`) gets the section prefix here, once:
    `model.head.filters must be an int >= 1. Received: filters=0`. `context` is shown after the
    section in messages about the section as a whole (`model.head (pan)`).
    """
    label = f"{where} ({context})" if context else where
    if values is None:
        values = {}
    if dataclasses.is_dataclass(values):
        return values
    if not isinstance(values, dict):
        raise ConfigValueError(f"{label} must be a mapping. Received: {values!r}")
    names = {f.name for f in dataclasses.fields(cls)}
    unknown = sorted(set(values) - names)
    if unknown:
        raise ConfigValueError(
            f"unknown key(s) {unknown} in {label}. Allowed keys: {sorted(names)}"
        )
    kwargs = {}
    for f in dataclasses.fields(cls):
        if f.name in values:
            v = values[f.name]
            kwargs[f.name] = tuple(v) if isinstance(v, list) else v
    try:
        return cls(**kwargs)
    except ConfigValueError:
        raise  # a nested section (model.backbone) has said where already
    except ValueError as e:
        raise ConfigValueError(_located(str(e), where, label, names)) from None


def _located(message, where, label, names):
    """`where.` before a message that starts with one of the section's fields (or already with
    the section, from an older check), `label: ` before any other."""
    if message.startswith(f"{where}."):
        return message
    first = message.split(" ", 1)[0].split("=", 1)[0].split("[", 1)[0].rstrip(":,.")
    return f"{where}.{message}" if first in names else f"{label}: {message}"
