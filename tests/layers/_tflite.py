"""Converts a Keras model to TFLite with builtin ops only and runs it with ai_edge_litert."""

import numpy as np
import tensorflow as tf


def run_tflite_builtins(model, x, path):
    """Converts `model` (one fixed-size input) with TFLITE_BUILTINS only, writes it to `path`,
    runs it on `x` and returns (output, set of op names)."""
    from ai_edge_litert.interpreter import Interpreter

    converter = tf.lite.TFLiteConverter.from_keras_model(model)
    converter.target_spec.supported_ops = [tf.lite.OpsSet.TFLITE_BUILTINS]
    path.write_bytes(converter.convert())
    interp = Interpreter(model_path=str(path))
    ops = {d["op_name"] for d in interp._get_ops_details()}
    assert not any("FLEX" in o.upper() or "CUSTOM" in o.upper() for o in ops), ops
    interp.allocate_tensors()
    interp.set_tensor(interp.get_input_details()[0]["index"], np.asarray(x, np.float32))
    interp.invoke()
    return interp.get_tensor(interp.get_output_details()[0]["index"]), ops
