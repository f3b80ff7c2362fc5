"""Segmentation models. Importing this package registers every model in the registry."""

from deeplab_family.models.config import ModelConfig
from deeplab_family.models.registry import build_model, register_model, registered_models

# Explicit imports fill the registry (one line per model module).
from deeplab_family.models import deeplabv3  # noqa: F401
from deeplab_family.models import pan, gcn, exfuse  # noqa: F401

__all__ = ["ModelConfig", "build_model", "register_model", "registered_models"]
