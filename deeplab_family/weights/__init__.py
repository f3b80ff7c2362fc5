"""Pretrained weights from where users keep them, into our backbones and models.

Formats (`FORMATS`), each read by its module into our layer names (`source.SourceWeights`):

- "keras_applications": keras.applications ResNet50/101/152 `.h5` (as published) or
  `.weights.h5`, or such a model in memory (`keras_applications.py`);
- "model_garden": TensorFlow Model Garden TF2 object checkpoints: its ImageNet ResNet and
  DilatedResNet backbones, and its whole DeepLabV3 task checkpoints (`model_garden.py`);
- "slim": TF1 name-based checkpoints of slim's resnet_v1_50/101/152 and research/deeplab's
  resnet_v1_50_beta/101_beta (`slim.py`);
- "torch": PyTorch state dicts saved as `.safetensors` (torchvision, timm, mmseg/mmcv ResNets
  and ResNeXts), read with the safetensors package's NumPy API, without torch (`torch.py`);
- "deeplab_family": our own `.weights.h5`, written once by `convert` (`native.py`).

"auto" detects the format from the file (`detect.py`). Every import checks the file's
architecture against the backbone's config first (depth, stem, groups and widths, stride
placement, SE, input normalisation), names each key to change, and assigns nothing until every
value was computed and checked: a file that does not fit leaves the model as it was.

Nothing here downloads anything. Example (a converted file of a tiny backbone):

>>> import tempfile, os
>>> from deeplab_family.backbones import build_backbone
>>> config = {"stage_depths": [1, 1, 1, 1], "stage_widths": [4, 4, 8, 8],
...           "stage_channels": [8, 8, 16, 16], "stem_width": 4}
>>> path = os.path.join(tempfile.mkdtemp(), "tiny.weights.h5")
>>> save_backbone(build_backbone(config), path)
>>> report = import_weights(build_backbone(config), path)
>>> report.format, len(report.imported), report.kept
('deeplab_family', 15, [])
"""

import importlib
import os

from deeplab_family.weights.detect import detect_format
from deeplab_family.weights.source import (
    FORMATS,
    Architecture,
    ImportReport,
    SourceWeights,
    WeightsError,
    assign,
    backbone_assignments,
    conv_norm_assignments,
    dense_assignments,
    report,
)

_READERS = {
    "keras_applications": "deeplab_family.weights.keras_applications",
    "model_garden": "deeplab_family.weights.model_garden",
    "slim": "deeplab_family.weights.slim",
    "torch": "deeplab_family.weights.torch",
    "deeplab_family": "deeplab_family.weights.native",
}


def read(path, format="auto"):
    """Reads a weights file (or, for "keras_applications", a model in memory) into our names.

    Returns a `SourceWeights`; raises `WeightsError` (a `ValueError`) naming the file and the
    tensor for a file that cannot be read, `FileNotFoundError` for a missing one.
    """
    if format not in ("auto",) + FORMATS:
        raise ValueError(f"format must be 'auto' or one of {list(FORMATS)}. Received: "
                         f"format={format!r}")
    if hasattr(path, "layers"):  # a keras.applications model in memory
        if format not in ("auto", "keras_applications"):
            raise ValueError(f"a model in memory is read as 'keras_applications', not {format!r}")
        return importlib.import_module(_READERS["keras_applications"]).read(path)
    found, resolved = detect_format(path) if format == "auto" else (format, str(path))
    if format in ("model_garden", "slim"):
        from deeplab_family.weights.detect import checkpoint_prefix

        resolved = checkpoint_prefix(path) or resolved
    if format != "auto" and not os.path.exists(resolved) and not os.path.exists(
        resolved + ".index"
    ):
        raise FileNotFoundError(
            f"{path} does not exist (weights are never downloaded by this package: download "
            "the file once and give its path)"
        )
    return importlib.import_module(_READERS[found]).read(resolved)


def import_weights(backbone, path, format="auto"):
    """Imports pretrained weights into a `ResNetBackbone`; returns an `ImportReport`.

    Args:
        backbone: the `ResNetBackbone` (any output stride, multi-grid, cascade: the variables
            are the same). Cascaded blocks (block5..) keep their initialisation.
        path: the weights file (see the module docstring), or a keras.applications model.
        format: "auto" or one of `FORMATS`.

    Raises:
        WeightsError: the file cannot be read, lacks a tensor, or contradicts the backbone's
            config; the message names the tensor, or each `model.backbone` key to set.
            Nothing is assigned then.
    """
    weights = read(path, format)
    assignments, imported, kept = backbone_assignments(backbone, weights)
    assign(assignments)
    # A whole-model file's head tensors are unused by a backbone.
    return report(weights, imported, kept, backbone.backbone_config.preprocessing,
                  with_head=False)


def _head_layer(model, key):
    layer = model.get_layer(key[0])
    for part in key[1:]:
        layer = layer[part] if isinstance(part, int) else getattr(layer, part)
    if layer is None:  # e.g. ASPP's pool_conv without image pooling
        raise AttributeError("/".join(str(k) for k in key))
    return layer


def import_model_weights(model, path, format="auto"):
    """Imports a whole-model checkpoint (Model Garden's DeepLabV3 task checkpoints) into one of
    our models: the backbone as `import_weights` does, and the head layers the file has.

    Returns an `ImportReport` whose `kept` lists the model's weighted layers the file lacks.
    Raises `WeightsError` (nothing assigned) when the file is not a whole-model checkpoint or
    does not fit, naming the layer.
    """
    weights = read(path, format)
    if not weights.head:
        raise WeightsError(
            f"{weights.path} ({weights.format}) holds a backbone only, not a whole model: give "
            "it as model.backbone_weights"
        )
    backbone = model.get_layer("backbone")
    assignments, imported, kept = backbone_assignments(backbone, weights)
    source = f"{weights.path} ({weights.format})"
    done = set()
    for key, values in weights.head.items():
        name = "/".join(str(k) for k in key)
        try:
            layer = _head_layer(model, key)
        except (ValueError, AttributeError, IndexError):
            raise WeightsError(
                f"{source}: the model has no layer {name!r} for the file's "
                f"{', '.join(values.tensors)} (a different head: check model.name and "
                "model.head against the file)"
            ) from None
        if hasattr(values, "gamma"):
            assignments += conv_norm_assignments(layer, values, source, name)
        else:
            assignments += dense_assignments(layer, values, source, name)
        imported.append(name)
        done.update(id(v) for v in layer.weights)
    backbone_ids = {id(v) for v in backbone.weights}
    kept += sorted(
        {
            v.path.rsplit("/", 1)[0]
            for v in model.weights
            if id(v) not in done and id(v) not in backbone_ids
        }
    )
    assign(assignments)
    return report(weights, imported, kept, backbone.backbone_config.preprocessing)


def inspect(path, format="auto"):
    """What a weights file holds: a dict with "format", "path", "tensors", "architecture"
    (one line), "backbone" (the `model.backbone` keys that load it), "head" (whole-model
    files: a description) and "notes"."""
    weights = read(path, format)
    return {
        "format": weights.format,
        "path": weights.path,
        "tensors": weights.tensor_count,
        "architecture": weights.architecture.describe(),
        "backbone": weights.architecture.backbone_fields(),
        "head": sorted("/".join(str(k) for k in key) for key in weights.head),
        "unused": len(weights.unused),
        "notes": list(weights.notes),
    }


def save_backbone(backbone, path, source=None):
    """Writes a backbone's weights as our own `.weights.h5` (atomically), with its config, so
    that `import_weights` reads it back into any build of that config (OS8, OS16, ...)."""
    from deeplab_family.weights.native import save

    save(backbone, path, source=source)


def convert(path, backbone_config, output, format="auto"):
    """Imports `path` into a backbone built from `backbone_config` and saves it as `output`
    (`.weights.h5`, our format). Returns the `ImportReport`."""
    from deeplab_family.backbones.resnet import build_backbone

    backbone = build_backbone(backbone_config)
    result = import_weights(backbone, path, format)
    save_backbone(backbone, output, source=result)
    return result


__all__ = [
    "FORMATS",
    "Architecture",
    "ImportReport",
    "SourceWeights",
    "WeightsError",
    "convert",
    "detect_format",
    "import_model_weights",
    "import_weights",
    "inspect",
    "read",
    "save_backbone",
]
