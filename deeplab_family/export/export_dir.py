"""The export directory: `export()` writes the next version of a TF Serving model base path.

    <export-dir>/<version>/                 an increasing integer: 1, 2, ...
        saved_model.pb, variables/          the SavedModel (`serving.py`)
        tflite/<name>_os<N>_<H>x<W>_<mode>.tflite   one per TFLite mode (`tflite.py`)
        export_info.json                    config, checkpoint, signatures, TFLite contracts,
                                            the dataset spec (class names and colours)

The version is assembled in `<export-dir>/.tmp-export-*` and renamed when complete, so a
model server polling `<export-dir>` never sees a half-written version.

The orchestration lives here rather than in the package `__init__`: it is the one job that
knows the directory layout and the atomic publication, and it only calls the SavedModel and
TFLite writers; the `__init__` only re-exports.
"""

import datetime
import os
import shutil
import tempfile

from deeplab_family._files import write_json
from deeplab_family.data.spec import check_num_classes, experiment_spec
from deeplab_family.export.model import build_export_model
from deeplab_family.export.serving import PAD_CLASS, write_saved_model
from deeplab_family.export.tflite import (
    calibration_images,
    check_modes,
    convert_saved_model,
    representative_pattern,
    tflite_filename,
    tflite_ops,
    tflite_signature,
    write_tflite_saved_model,
)
from deeplab_family.inference import window_report
from deeplab_family.precision import for_inference

INFO_FILENAME = "export_info.json"
TFLITE_SUBDIR = "tflite"


def versions(export_dir):
    """The integer version directories of `export_dir`, sorted."""
    if not os.path.isdir(export_dir):
        return []
    return sorted(
        int(name) for name in os.listdir(export_dir)
        if name.isdigit() and os.path.isdir(os.path.join(export_dir, name))
    )


def latest_version_dir(export_dir):
    """`<export_dir>/<highest version>`, or None."""
    found = versions(export_dir)
    return os.path.join(export_dir, str(found[-1])) if found else None


def _publish(tmp, export_dir):
    """Renames the finished `tmp` to the next free version; returns its path."""
    for _ in range(100):
        found = versions(export_dir)
        target = os.path.join(export_dir, str(found[-1] + 1 if found else 1))
        if os.path.exists(target):  # e.g. a stray file with a numeric name
            continue
        try:
            os.rename(tmp, target)
            return target
        except OSError:  # another export took this version between listing and renaming
            continue
    raise RuntimeError(f"could not find a free version number in {export_dir}")


def _signatures(export_config):
    """The SavedModel signatures as `export_info.json` describes them."""
    return {
        "serving_default": {"inputs": {"image_bytes": "string [batch]"}},
        "serve_image_tensor": {"inputs": {"images": "uint8 [batch, H, W, 3]"}},
        "outputs": {
            "semantic_predictions": f"uint8 [batch, H, W]; {PAD_CLASS} = padding of a "
                                    "mixed-size batch",
            "image_sizes": "int32 [batch, 2]",
            **({"probabilities": "float32 [batch, H, W, num_classes]"}
               if export_config.probabilities else {}),
        },
    }


def _write_tflite(config, model, version_dir, modes, log):
    """Converts `model` in every mode into `<version_dir>/tflite/`; returns `{mode: info}`.

    The graph ends at `export.tflite_output` (the classes, or float32 logits or probabilities
    for the delegates: `tflite.py`); each entry records the input and output as the file's
    signature states them.
    """
    export_config = config.export
    size = export_config.tflite_size
    output = export_config.tflite_output
    os.makedirs(os.path.join(version_dir, TFLITE_SUBDIR))
    fixed = write_tflite_saved_model(model, size, os.path.join(version_dir, ".tflite-saved-model"),
                                     output)
    written = {}
    for mode in modes:
        representative = int8_io = None
        if mode == "int8":
            log(f"export: calibrating int8 on {export_config.representative_samples} images "
                f"from {representative_pattern(config)}")
            representative = calibration_images(config)
            int8_io = export_config.tflite_int8_io
        log(f"export: TFLite {mode} at {size[0]}x{size[1]}, output {output}")
        content = convert_saved_model(fixed, mode, representative, int8_io)
        name = tflite_filename(config.model.name, export_config.output_stride, size, mode,
                               output)
        with open(os.path.join(version_dir, TFLITE_SUBDIR, name), "wb") as f:
            f.write(content)
        written[mode] = {
            "file": f"{TFLITE_SUBDIR}/{name}",
            "bytes": len(content),
            **tflite_signature(content),
            "ops": tflite_ops(content),
        }
    shutil.rmtree(fixed)
    return written


def export(config, model_dir, export_dir, tflite_modes=(), log=print):
    """Restores the latest checkpoint of `model_dir` and writes a new version.

    With `export.window`, the experiment's `inference.window` is baked into both SavedModel
    signatures (`serving.ServingFunctions`) and recorded as "window" in `export_info.json`
    (null without); `export.window` without an `inference.window` is a ValueError.
    `export.precision` ("precision" in `export_info.json`) is the SavedModel's: with bfloat16
    its network runs in bfloat16 (`precision.for_inference`), while the TFLite files are
    converted from the float32 model (TFLite has no bfloat16 kernels; its float16 and int8
    modes are its own reduced precisions).

    Returns:
        The info dict also written to `<version>/export_info.json` (with "path").
    """
    modes = check_modes(tflite_modes)
    if config.model.num_classes > PAD_CLASS:
        raise ValueError(
            f"num_classes={config.model.num_classes} does not fit the uint8 predictions "
            f"(at most {PAD_CLASS} classes)"
        )
    spec = experiment_spec(config, model_dir)
    check_num_classes(config.model.num_classes, spec)
    export_config = config.export
    window = config.inference.window if export_config.window else None
    if export_config.window and window is None:
        raise ValueError(
            "export.window is true but inference.window is not set: give the window to bake "
            "in, e.g. --set 'inference.window={size: [513, 513]}', or set export.window=false"
        )
    model, checkpoint = build_export_model(config, model_dir, precision="float32")
    served = for_inference(model, export_config.precision)
    os.makedirs(export_dir, exist_ok=True)
    tmp = tempfile.mkdtemp(prefix=".tmp-export-", dir=export_dir)
    try:
        log(f"export: {checkpoint} -> SavedModel (output stride {export_config.output_stride}, "
            f"scales {list(export_config.scales)}, flip {export_config.flip}, window "
            f"{window_report(window)}, {export_config.precision})")
        write_saved_model(served, tmp, export_config, window)
        info = {
            "checkpoint": checkpoint,
            "created": datetime.datetime.now(datetime.UTC).isoformat(timespec="seconds"),
            "model": config.model.name,
            "num_classes": config.model.num_classes,
            "output_stride": export_config.output_stride,
            "scales": list(export_config.scales),
            "flip": export_config.flip,
            # Sliding windows baked into both signatures (`export.window`), or null.
            "window": window_report(window),
            # The SavedModel network's precision (the TFLite files are converted from float32).
            "precision": export_config.precision,
            "signatures": _signatures(export_config),
            # Class names and colours for clients (`predict`'s masks, overlays and legend).
            "dataset_spec": spec.to_dict() if spec is not None else None,
            "tflite": _write_tflite(config, model, tmp, modes, log) if modes else {},
            "config": config.to_dict(),
        }
        write_json(os.path.join(tmp, INFO_FILENAME), info)
        os.chmod(tmp, 0o755)  # mkdtemp's 0700 would hide the version from a server's user
        path = _publish(tmp, export_dir)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    # The final path is only known after the rename; export_info.json stays relative.
    info["path"] = path
    return info
