"""The Keras model that is exported: `inference.load_inference_model` at
`export.output_stride` (the model `evaluate` scores), with dense atrous convs."""

from deeplab_family.inference import load_inference_model


def use_dense_atrous_convs(model):
    """Switches every `AtrousConv2D` of `model` to the native dilated conv; returns the count.

    ASPP computes its atrous convs tap by tap (`skip_padded_taps`, a speed-up under XLA on
    CPU). Same variables, same function, but exported it becomes, per conv, nine
    STRIDED_SLICE + FULLY_CONNECTED + PAD and an ADD_N in TFLite: BatchNorm no longer folds
    into a CONV_2D, ADD_N has no int8 kernel (a float island with DEQUANTIZE / QUANTIZE in the
    "full integer" model, and int8 mIoU drops), and the model server without XLA gains
    nothing (oneDNN's dilated conv already skips the padding). Export graphs therefore use one
    dilated CONV_2D per conv. The flag is read at call time, so this only changes the traced
    graphs, not the weights or the config.
    """
    from deeplab_family.layers.conv import AtrousConv2D

    switched = 0
    for layer in model._flatten_layers(include_self=False, recursive=True):
        if isinstance(layer, AtrousConv2D) and getattr(layer, "skip_padded_taps", False):
            layer.skip_padded_taps = False
            switched += 1
    return switched


def build_export_model(config, model_dir):
    """The model at `config.export.output_stride` with the latest checkpoint of `model_dir`
    restored (`inference.load_inference_model`) and dense atrous convs
    (`use_dense_atrous_convs`).

    Returns:
        `(model, checkpoint prefix)`.
    """
    model, checkpoint = load_inference_model(config.model, model_dir,
                                             config.export.output_stride)
    use_dense_atrous_convs(model)
    return model, checkpoint
