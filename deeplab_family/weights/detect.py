"""Which format a weights file is in, from its name and its first bytes."""

import glob
import json
import os
import re
import struct

from deeplab_family.weights.source import FORMATS, WeightsError

NATIVE_ATTRIBUTE = "deeplab_family_backbone"  # the h5 attribute of our converted files
TORCH_PICKLE_SUFFIXES = (".pth", ".pt", ".bin")
TORCH_CONVERSION = (
    "python -c \"import torch, safetensors.torch as st; sd = torch.load('FILE.pth', "
    "map_location='cpu'); sd = sd.get('state_dict', sd); st.save_file({k: v.contiguous() for "
    "k, v in sd.items()}, 'FILE.safetensors')\""
)


def checkpoint_prefix(path):
    """The prefix of a TensorFlow checkpoint given as a prefix, its `.index` file or a
    directory (its latest checkpoint), or None when `path` is none of these."""
    path = str(path)
    if path.endswith(".index") and os.path.isfile(path):
        return path[: -len(".index")]
    if os.path.isfile(path + ".index"):
        return path
    if os.path.isdir(path):
        import tensorflow as tf

        latest = tf.train.latest_checkpoint(path)
        if latest:
            return latest
        indexes = sorted(glob.glob(os.path.join(path, "*.index")))
        if len(indexes) == 1:
            return indexes[0][: -len(".index")]
    return None


_MODEL_GARDEN_BLOCK = re.compile(r"layer_with_weights-\d+/_conv1/kernel/")


def _zip_names(path):
    import zipfile

    try:
        with zipfile.ZipFile(path) as archive:
            return set(archive.namelist())
    except (zipfile.BadZipFile, OSError):
        return set()


def open_checkpoint(prefix):
    """(reader, {name: shape}) of a TensorFlow checkpoint; `WeightsError` naming it when it
    cannot be read."""
    import tensorflow as tf

    try:
        reader = tf.train.load_checkpoint(str(prefix))
        return reader, reader.get_variable_to_shape_map()
    except Exception as e:
        raise WeightsError(f"{prefix}: not a readable TensorFlow checkpoint ({e})") from None


def _is_safetensors(path):
    try:
        with open(path, "rb") as f:
            head = f.read(9)
    except OSError:
        return False
    if len(head) < 9:
        return False
    (size,) = struct.unpack("<Q", head[:8])
    return head[8:9] == b"{" and 0 < size < os.path.getsize(path)


def _h5_kind(path):
    import h5py

    try:
        with h5py.File(path, "r") as f:
            return "deeplab_family" if NATIVE_ATTRIBUTE in f.attrs else "keras_applications"
    except OSError as e:
        raise WeightsError(f"{path}: not a readable HDF5 weights file ({e})") from None


def detect_format(path):
    """(format, path to read) for a weights file; `WeightsError` naming the file otherwise.

    - `.safetensors` (or safetensors bytes): "torch";
    - HDF5 (`.h5`, `.weights.h5`): "deeplab_family" when written by `convert`, otherwise
      "keras_applications";
    - a TensorFlow checkpoint (prefix, `.index` file or directory): "model_garden" when it
      holds an object graph (TF2 `tf.train.Checkpoint`), "slim" when its names are TF1's.
    """
    path = str(path)
    if not os.path.exists(path) and checkpoint_prefix(path) is None:
        raise FileNotFoundError(
            f"{path} does not exist (weights are never downloaded by this package: download "
            "the file once and give its path)"
        )
    if path.endswith(TORCH_PICKLE_SUFFIXES) and not _is_safetensors(path):
        raise WeightsError(
            f"{path} is a pickled PyTorch file, which needs torch to read. Convert it once, "
            f"where torch is installed, to .safetensors: {TORCH_CONVERSION}"
        )
    if os.path.isfile(path) and (path.endswith(".safetensors") or _is_safetensors(path)):
        return "torch", path
    if os.path.isfile(path) and path.endswith(".h5"):
        return _h5_kind(path), path
    prefix, names = checkpoint_prefix(path), None
    if prefix is not None:
        _, names = open_checkpoint(prefix)
    elif os.path.isfile(path):
        try:  # a single-file TF1 checkpoint (slim's model zoo: resnet_v1_101.ckpt, no .index)
            _, names = open_checkpoint(path)
            prefix = path
        except WeightsError:
            pass
    if names is not None:
        if "_CHECKPOINTABLE_OBJECT_GRAPH" not in names:
            return "slim", prefix
        if any(_MODEL_GARDEN_BLOCK.search(n) for n in names):
            return "model_garden", prefix
        raise WeightsError(
            f"{path}: a TF2 checkpoint without Model Garden ResNet blocks. If it is one of our "
            "training checkpoints, start a run from its model dir with training.init_checkpoint"
        )
    if os.path.isfile(path):
        with open(path, "rb") as f:
            magic = f.read(8)
        if magic.startswith(b"\x89HDF\r\n\x1a\n"):
            return _h5_kind(path), path
        if magic.startswith(b"PK") and _zip_names(path) & {"config.json", "model.weights.h5"}:
            raise WeightsError(
                f"{path} is a .keras model archive, not a weights file: load it with "
                "keras.saving.load_model, or write the backbone with "
                "deeplab_family.weights.save_backbone"
            )
        if magic.startswith(b"PK") or magic.startswith(b"\x80"):
            raise WeightsError(
                f"{path} looks like a pickled PyTorch file, which needs torch to read. Convert "
                f"it once to .safetensors: {TORCH_CONVERSION}"
            )
    if os.path.isdir(os.path.join(path, "checkpoints")):
        raise WeightsError(
            f"{path} is a training model dir (checkpoints/): start a run from it with "
            "training.init_checkpoint, not as backbone weights"
        )
    raise WeightsError(
        f"{path}: cannot tell its format (not .safetensors, HDF5 or a TensorFlow checkpoint); "
        f"give format= one of {list(FORMATS)}"
    )


def safetensors_header(path):
    """The JSON header of a safetensors file: {name: {"dtype", "shape", ...}}."""
    with open(path, "rb") as f:
        (size,) = struct.unpack("<Q", f.read(8))
        return json.loads(f.read(size))


def is_model_garden(path):
    """Whether `path` is a Model Garden TF2 checkpoint (a whole task model or a backbone; its
    BottleneckBlocks hold `_conv1`), as opposed to one of our own training checkpoints."""
    if checkpoint_prefix(path) is None:
        return False
    try:
        return detect_format(path)[0] == "model_garden"
    except WeightsError:
        return False
