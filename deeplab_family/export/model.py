"""The Keras model that is exported: `inference.load_inference_model` at
`export.output_stride` (the model `evaluate` scores, dense atrous convs included), at
`export.precision` (`precision.for_inference`: float32, or bfloat16 with BN folded and float32
logits)."""

from deeplab_family.inference import (  # noqa: F401 (re-exported: export.use_dense_atrous_convs)
    load_inference_model,
    use_dense_atrous_convs,
)
from deeplab_family.precision import for_inference


def build_export_model(config, model_dir, precision=None):
    """The model at `config.export.output_stride` with the latest checkpoint of `model_dir`
    restored (`inference.load_inference_model`, with its dense atrous convs) and at `precision`
    (`precision.for_inference`; None: `config.export.precision`).

    With bfloat16 the SavedModel's signatures run the network in bfloat16 (weights cast once,
    BN folded into the convs) and still return float32 probabilities and the argmax of float32
    scores. TFLite has no bfloat16 kernels (it has its own float16 and int8 modes): convert
    the TFLite files from the float32 model (`precision="float32"`, or
    `precision.for_inference` applied to it afterwards for the SavedModel).

    Returns:
        `(model, checkpoint prefix)`.
    """
    model, checkpoint = load_inference_model(config.model, model_dir,
                                             config.export.output_stride)
    model = for_inference(model, config.export.precision if precision is None else precision)
    return model, checkpoint
