"""`ModelConfig`: which registered model, how many classes, its backbone and its head options."""

import dataclasses
from typing import Any, Dict, Optional

from deeplab_family import _validation
from deeplab_family.backbones import BackboneConfig
from deeplab_family.models.registry import dataclass_from_dict
from deeplab_family.weights.source import FORMATS


@dataclasses.dataclass(frozen=True)
class ModelConfig:
    """Describes one model of the registry.

    Args:
        name: a registered model name ("deeplabv3", "deeplabv3_cascade", "pan", "gcn",
            "exfuse").
        num_classes: number of classes of the logits (21 for VOC, 19 for Cityscapes).
        backbone: a `BackboneConfig` (or a dict of its fields).
        head: dict of the model's head options; validated against that model's head dataclass
            when the model is built, so an unknown key names itself.
        backbone_weights: optional path of pretrained backbone weights, imported before a fresh
            run trains (`deeplab_family.weights`): keras.applications `.h5`, a Model Garden
            or slim checkpoint, a PyTorch `.safetensors` state dict, or our converted
            `.weights.h5`. Never downloaded. The backbone section must match the file (the
            import names each key that does not; `python -m deeplab_family.weights inspect
            FILE` prints the section that loads it).
        backbone_weights_format: "auto" (detected from the file) or one of
            `deeplab_family.weights.FORMATS`.
        random_init: train a full-size backbone from random weights on purpose. Without it, a
            fresh run of a full-size backbone (res2..res5 of 256..2048 channels, as every
            paper's) with neither `backbone_weights` nor `training.init_checkpoint` stops:
            all three papers start from ImageNet weights.

    Example (a small ResNet, so that it runs in a second; the paper's DeepLabv3 backbone is
    `{"depth": 101, "output_stride": 16, "multi_grid": [1, 2, 4]}`):

    >>> config = ModelConfig.from_dict({
    ...     "name": "deeplabv3", "num_classes": 21,
    ...     "backbone": {"stage_depths": [1, 1, 1, 3], "stage_widths": [8, 8, 16, 16],
    ...                  "stage_channels": [16, 32, 32, 64], "stem_width": 8,
    ...                  "output_stride": 16, "multi_grid": [1, 2, 4]},
    ...     "head": {"image_pooling": True}})
    >>> import keras
    >>> from deeplab_family.models import build_model
    >>> model = build_model(config)
    >>> tuple(model(keras.ops.zeros((1, 65, 65, 3)))["logits"].shape)
    (1, 65, 65, 21)
    """

    name: str = "deeplabv3"
    num_classes: int = 21
    backbone: BackboneConfig = dataclasses.field(default_factory=BackboneConfig)
    head: Dict[str, Any] = dataclasses.field(default_factory=dict)
    backbone_weights: Optional[str] = None
    backbone_weights_format: str = "auto"
    random_init: bool = False

    def __post_init__(self):
        if isinstance(self.backbone, dict):
            object.__setattr__(
                self, "backbone",
                dataclass_from_dict(BackboneConfig, self.backbone, "model.backbone"),
            )
        _validation.positive_int("num_classes", self.num_classes)
        _validation.one_of("backbone_weights_format", self.backbone_weights_format,
                           ("auto",) + FORMATS)
        _validation.boolean("random_init", self.random_init)
        object.__setattr__(self, "head", dict(self.head or {}))

    @classmethod
    def from_dict(cls, values):
        return dataclass_from_dict(cls, values, "model")

    def with_output_stride(self, output_stride):
        """The same model at another output stride (same weights: train at 16, evaluate at 8)."""
        return dataclasses.replace(
            self, backbone=dataclasses.replace(self.backbone, output_stride=output_stride)
        )
