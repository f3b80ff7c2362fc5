"""Our own weights format: a Keras `.weights.h5` of a `ResNetBackbone`, with its config.

`save` writes it atomically (a temporary file in the same directory, then a rename) and puts
the backbone config, as JSON, in the HDF5 attribute `deeplab_family_backbone`; `read` builds a
backbone of that config, loads the file into it (so the target model is not touched when the
file is bad) and hands its values to the common import, which checks the config of the model
it goes into like any other format's.
"""

import json
import os

import numpy as np

from deeplab_family.weights.detect import NATIVE_ATTRIBUTE
from deeplab_family.weights.source import Architecture, ConvBN, SourceWeights, WeightsError


def save(backbone, path, source=None):
    """Writes `backbone`'s weights and config to `path` (must end in `.weights.h5`)."""
    import h5py

    path = str(path)
    if backbone.backbone_config.se_ratio is not None:
        raise ValueError("backbones with SE units cannot be saved in this format yet (no "
                         "importer reads SE weights)")
    if not path.endswith(".weights.h5"):
        raise ValueError(f"the output must end in .weights.h5. Received: {path}")
    directory, name = os.path.split(os.path.abspath(path))
    os.makedirs(directory, exist_ok=True)
    # Not `_files.temporary_name` (".<name>.tmp-<pid>"): Keras writes only to names that end
    # in ".weights.h5".
    temporary = os.path.join(directory, f".tmp-{os.getpid()}-{name}")
    try:
        backbone.save_weights(temporary)
        meta = {
            "config": backbone.backbone_config.to_dict(),
            "source": None if source is None else {
                "format": source.format, "path": source.path,
                "architecture": source.architecture,
            },
        }
        with h5py.File(temporary, "a") as f:
            f.attrs[NATIVE_ATTRIBUTE] = json.dumps(meta)
        os.replace(temporary, path)
    finally:
        if os.path.exists(temporary):
            os.remove(temporary)


def metadata(path):
    import h5py

    try:
        with h5py.File(path, "r") as f:
            return json.loads(f.attrs[NATIVE_ATTRIBUTE])
    except (OSError, KeyError, ValueError) as e:
        raise WeightsError(f"{path}: not a deeplab_family weights file ({e})") from None


def read(path):
    from deeplab_family.backbones.config import BackboneConfig
    from deeplab_family.backbones.resnet import build_backbone

    path = str(path)
    meta = metadata(path)
    config = BackboneConfig.from_dict(meta["config"])
    twin = build_backbone(config)
    try:
        twin.load_weights(path)
    except Exception as e:
        raise WeightsError(f"{path}: cannot load it into a backbone of its own config: {e}") \
            from None
    layers = {}
    for layer in twin.layers:
        if not layer.weights:
            continue
        if not hasattr(layer, "norm"):
            raise WeightsError(f"{path}: layer {layer.name!r} is not a conv + BN")
        norm = layer.norm
        layers[layer.name] = ConvBN(
            kernel=np.asarray(layer.conv.kernel),
            gamma=np.asarray(norm.gamma),
            beta=np.asarray(norm.beta),
            mean=np.asarray(norm.moving_mean),
            variance=np.asarray(norm.moving_variance),
            epsilon=float(norm.epsilon),
            tensors=tuple(v.path for v in layer.weights),
        )
    architecture = Architecture(
        stage_depths=config.stage_depths,
        stage_widths=config.stage_widths,
        stage_channels=config.stage_channels,
        stem=config.stem,
        stem_width=config.stem_width,
        groups=config.groups,
        stride_in_1x1=config.stride_in_1x1,
        stride_unit=config.stride_unit,
        preprocessing=(config.preprocessing,),
        se=config.se_ratio is not None,
    )
    notes = []
    if meta.get("source"):
        src = meta["source"]
        notes.append(f"converted from {src['path']} ({src['format']}: {src['architecture']})")
    return SourceWeights(
        format="deeplab_family",
        path=path,
        architecture=architecture,
        layers=layers,
        tensor_count=len(twin.weights),
        notes=notes,
    )
