"""Export a trained model: a SavedModel for TF Serving, and TFLite models.

    python -m deeplab_family.export [--config YAML] --model-dir DIR --export-dir DIR
                                    [--tflite float32,float16,dynamic,int8] [--set k=v ...]

The latest checkpoint of `<model-dir>/checkpoints/` is restored into the model that `evaluate`
scores (`inference.load_inference_model`), built at `export.output_stride` (8 by default, as the
papers evaluate), and written as the next version of a TF Serving model base path:

    <export-dir>/<version>/                 an increasing integer: 1, 2, ...
        saved_model.pb, variables/          the SavedModel
        tflite/<name>_os<N>_<H>x<W>_<mode>.tflite   one per --tflite mode
        export_info.json                    config, checkpoint, signatures, TFLite contracts

One module per job; this package only re-exports them:

- `serving`: the SavedModel's two signatures (`serving_default` takes JPEG/PNG bytes,
  `serve_image_tensor` uint8 pixels), multi-scale + flip baked in, mixed-size batches;
- `tflite`: the fixed-size TFLite model, its conversion in `TFLITE_MODES`, int8 calibration;
- `model`: the exported Keras model (dense atrous convs in the export graphs);
- `export_dir`: `export()`, which writes a version atomically with its `export_info.json`;
- `cli`: the command line (`python -m deeplab_family.export`, `__main__`). No library module
  imports it, and this package does not either.
"""

from deeplab_family.export.export_dir import (
    INFO_FILENAME,
    TFLITE_SUBDIR,
    export,
    latest_version_dir,
    versions,
)
from deeplab_family.export.model import build_export_model, use_dense_atrous_convs
from deeplab_family.export.serving import (
    PAD_CLASS,
    ServingFunctions,
    decode_images,
    write_endpoints,
    write_saved_model,
)
from deeplab_family.export.tflite import (
    TFLITE_MODES,
    calibration_images,
    check_modes,
    convert_saved_model,
    convert_tflite,
    representative_images,
    representative_pattern,
    tflite_filename,
    tflite_ops,
    write_tflite_saved_model,
)

__all__ = [
    "INFO_FILENAME",
    "PAD_CLASS",
    "TFLITE_MODES",
    "TFLITE_SUBDIR",
    "ServingFunctions",
    "build_export_model",
    "calibration_images",
    "check_modes",
    "convert_saved_model",
    "convert_tflite",
    "decode_images",
    "export",
    "latest_version_dir",
    "representative_images",
    "representative_pattern",
    "tflite_filename",
    "tflite_ops",
    "use_dense_atrous_convs",
    "versions",
    "write_endpoints",
    "write_saved_model",
    "write_tflite_saved_model",
]
