"""Segmentation models. Importing this package registers every model in the registry."""

# Explicit imports fill the registry (one line per model module).
from deeplab_family.models import (  # noqa: F401
    deeplabv3,
    exfuse,
    gcn,
    pan,
)
from deeplab_family.models.config import ModelConfig
from deeplab_family.models.registry import build_model, register_model, registered_models

__all__ = ["ModelConfig", "build_model", "register_model", "registered_models"]
