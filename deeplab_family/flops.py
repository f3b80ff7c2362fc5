"""Analytic multiply-accumulate (MAC) and FLOP counts of a Keras model, from its traced graph.

The model is traced once in a `tf.function` at a concrete input shape, and every op that does
a dense contraction contributes `(output elements) x (reduction length)` MACs, read from the
static shapes of the graph:

- `Conv2D`, `Conv3D`: output elements x kernel taps x kernel input depth. The kernel's input
  depth is `C_in / groups`, so grouped convs count right; dilation does not change the count.
- `DepthwiseConv2dNative`: output elements x kernel taps.
- `Conv2DBackpropInput` (transposed conv): input (`out_backprop`) elements x kernel taps x
  output depth.
- `MatMul`, `BatchMatMul*`: batch x M x N x K.
- `Einsum` with two operands: the product of the sizes of all distinct labels.

Not counted: BatchNorm, activations, additions and multiplications by a gate, pooling, resizes,
padding, reductions, and single-operand einsums. Biases are not counted either. These are
memory-bound and small next to the convs; excluding them is the usual convention (e.g. the
"FLOPs" of ResNet papers, where 1 FLOP is 1 MAC or 2 x MAC depending on the paper:
`count_flops` = 2 x `count_macs`).

Ops inside nested functions (`PartitionedCall`, control flow) are counted once per call site
when their function is in the graph's library; a `While` loop body would be counted once per
loop, not per iteration (the models here have no loops).
"""

import numpy as np
import tensorflow as tf


def _shape(tensor, op):
    shape = tensor.shape
    if shape.rank is None or any(d is None for d in shape.as_list()):
        raise ValueError(
            f"count_macs needs static shapes; op {op.name!r} ({op.type}) has {tensor.name} "
            f"with shape {shape}. Give a fully defined input_shape."
        )
    return shape.as_list()


def _einsum_macs(op):
    equation = op.get_attr("equation").decode()
    inputs, _ = equation.replace(" ", "").split("->")
    terms = inputs.split(",")
    if len(terms) != 2 or "." in equation:
        return 0
    sizes = {}
    for term, tensor in zip(terms, op.inputs):
        for label, dim in zip(term, _shape(tensor, op)):
            sizes[label] = max(sizes.get(label, 1), dim)
    return int(np.prod(list(sizes.values()), dtype=np.int64))


def _op_macs(op):
    kind = op.type
    if kind in ("Conv2D", "Conv3D"):
        kernel = _shape(op.inputs[1], op)
        taps_times_depth = int(np.prod(kernel[:-1]))
        return int(np.prod(_shape(op.outputs[0], op), dtype=np.int64)) * taps_times_depth
    if kind == "DepthwiseConv2dNative":
        kh, kw = _shape(op.inputs[1], op)[:2]
        return int(np.prod(_shape(op.outputs[0], op), dtype=np.int64)) * kh * kw
    if kind == "Conv2DBackpropInput":
        kh, kw, c_out, _ = _shape(op.inputs[1], op)
        return int(np.prod(_shape(op.inputs[2], op), dtype=np.int64)) * kh * kw * c_out
    if kind == "MatMul":
        a = _shape(op.inputs[0], op)
        k = a[0] if op.get_attr("transpose_a") else a[1]
        return int(np.prod(_shape(op.outputs[0], op), dtype=np.int64)) * k
    if kind.startswith("BatchMatMul"):
        a = _shape(op.inputs[0], op)
        k = a[-2] if op.get_attr("adj_x") else a[-1]
        return int(np.prod(_shape(op.outputs[0], op), dtype=np.int64)) * k
    if kind == "Einsum":
        return _einsum_macs(op)
    return 0


def _graph_macs(graph, library, depth=0):
    total = 0
    for op in graph.get_operations():
        total += _op_macs(op)
        for attr in ("f", "then_branch", "else_branch", "body", "cond"):
            try:
                fn = op.get_attr(attr)
            except ValueError:
                continue
            name = getattr(fn, "name", None)
            if name is None or name not in library or depth > 8:
                continue
            total += _graph_macs(library[name], library, depth + 1)
    return total


def count_macs(model, input_shape=(513, 513, 3), batch_size=1, training=False):
    """Multiply-accumulates of one forward pass of `model` at `input_shape`.

    Args:
        model: a Keras model, or any callable `(tensor, training=...) -> outputs`.
        input_shape: shape without batch, fully defined, e.g. (513, 513, 3).
        batch_size: batch dimension of the traced input (MACs scale linearly with it).
        training: passed to the model call; False counts inference.

    Returns:
        int.
    """
    spec = tf.TensorSpec((batch_size, *input_shape), tf.float32)
    fn = tf.function(lambda x: model(x, training=training), autograph=False)
    concrete = fn.get_concrete_function(spec)
    graph = concrete.graph
    library = {}
    for fdef_name, function in getattr(graph, "_functions", {}).items():
        fn_graph = getattr(function, "graph", None)
        if fn_graph is not None:
            library[fdef_name] = fn_graph
    return _graph_macs(graph, library)


def count_flops(model, input_shape=(513, 513, 3), batch_size=1, training=False):
    """2 x `count_macs`: one multiply and one add per MAC."""
    return 2 * count_macs(model, input_shape, batch_size, training)
