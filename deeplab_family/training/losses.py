"""The training loss: pixel cross-entropy + weighted auxiliary losses + weight decay.

Every term is written so that **summing it over the replicas gives the loss of the global
batch**, which is what `tf.distribute` needs: the optimizer all-reduces (sums) the replicas'
gradients, so the summed gradient is the gradient of the global loss whatever the replica count
(DeepLabv3 Sec 4.1 computes BN statistics, and hence the loss, over the batch of 16; a per-replica
mean would weight replicas with few valid pixels too much).

- By default, cross-entropy on the full-resolution logits against the untouched labels
  (DeepLabv3 Sec 4.1, "Upsampling logits"; Appendix A, Table 8): summed over the valid pixels
  of this replica and divided by the number of valid pixels **in the global batch** (an
  all-reduce of the counts). Pixels labelled `ignore_label` (255: VOC's void border, padding)
  are left out of both.
- `training.label_downsampling` (Table 8's row without "UL", "upsampling logits": the
  ground truth is downsampled instead): each output's loss is taken at the stride of the
  logits before their final resize (`output_strides`: 16 for DeepLabv3 at output stride 16),
  on the labels at image pixels `(s*i, s*j)` (nearest, the pixel each logit sits on, as
  research/deeplab's `resize_nearest_neighbor(align_corners=True)` picks at 513 = 16 * 32 + 1).
  The model still upsamples, but its stride-exact resize reproduces the low-resolution logit
  exactly at those pixels (and sends the whole gradient there), so the loss and its gradient
  are those of the logits that were never upsampled.
- `aux_*` outputs: the same loss on each, times its weight from `training.aux_loss_weights`. An
  aux output without a weight is an error, and so is a weight for an output the model lacks, so
  a typo cannot silently switch a loss off.
- Weight decay, research/deeplab's definition `wd * 1/2 * sum ||w||^2` (as
  `keras.regularizers.L2(wd / 2)` / `slim.l2_regularizer(wd)` / `tf.nn.l2_loss`), on conv
  kernels only: not on BN gamma/beta, not on biases. It is added once per global batch, so each
  replica adds `1 / num_replicas` of it. Its gradient is `wd * w`, i.e. the "weight decay 1e-4"
  of DeepLabv3 and PAN Sec 4 in SGD's usual sense.

Example:

Inside `strategy.run`, `num_replicas` is `strategy.num_replicas_in_sync`, and the sum of
`terms["loss"]` over the replicas is the global loss. On its own (one replica), with a model
whose logits are all zero, the cross-entropy is log(num_classes):

>>> import keras
>>> import numpy as np
>>> from deeplab_family.training.losses import conv_kernels, replica_losses
>>> model = keras.Sequential([keras.Input((4, 4, 3)), keras.layers.Conv2D(21, 1)])
>>> images, labels = np.zeros((2, 4, 4, 3), np.float32), np.zeros((2, 4, 4), np.int32)
>>> terms = replica_losses({"logits": model(images, training=True)}, labels, num_replicas=1,
...                        aux_loss_weights={}, weight_decay=1e-4, kernels=conv_kernels(model))
>>> bool(np.isclose(terms["cross_entropy"], np.log(21)))
True
"""

import tensorflow as tf

from deeplab_family.data.schema import IGNORE_LABEL

AUX_PREFIX = "aux_"


def check_aux_weights(output_names, aux_loss_weights):
    """Checks that every `aux_*` output has a weight and every weight an output.

    Returns the `{output_name: weight}` of the aux outputs, in a fixed (sorted) order.
    """
    aux_outputs = sorted(n for n in output_names if n.startswith(AUX_PREFIX))
    weights = dict(aux_loss_weights or {})
    missing = [n for n in aux_outputs if n not in weights]
    if missing:
        raise ValueError(
            f"the model has auxiliary output(s) {missing} without a loss weight. Set "
            f"training.aux_loss_weights, e.g. --set training.aux_loss_weights="
            f"'{{{missing[0]}: 1.0}}' (0.0 trains without it)."
        )
    unknown = sorted(set(weights) - set(aux_outputs))
    if unknown:
        raise ValueError(
            f"training.aux_loss_weights names {unknown}, which the model does not output. "
            f"The model's auxiliary outputs: {aux_outputs or 'none'}."
        )
    bad = {n: w for n, w in weights.items() if not (isinstance(w, (int, float)) and w >= 0)}
    if bad:
        raise ValueError(f"training.aux_loss_weights must be numbers >= 0. Received: {bad}")
    return {n: float(weights[n]) for n in aux_outputs}


def output_strides(model):
    """`{output name: stride}` of the logits each output is resized from (`label_downsampling`).

    Read from the output's `<name>_resize` layer (`models.common.full_resolution`): its
    stride-exact `ResizeLike` stride (1 where a decoder already works at full resolution).
    Raises `ValueError` for an output without one, whose low-resolution grid is unknown.
    """
    strides = {}
    for name in model.output:
        try:
            layer = model.get_layer(f"{name}_resize")
        except ValueError:
            layer = None
        stride = getattr(layer, "stride", None)
        if stride is None:
            raise ValueError(
                f"training.label_downsampling needs each output's logits resized by a "
                f"stride-exact `{name}_resize` layer; output {name!r} has none. Received: "
                f"layer={layer!r}"
            )
        strides[name] = int(stride)
    return strides


def at_stride(logits, labels, stride):
    """`logits` and `labels` at image pixels `(s*i, s*j)`: the low-resolution logits' grid."""
    if stride == 1:
        return logits, labels
    return logits[:, ::stride, ::stride], labels[:, ::stride, ::stride]


def valid_mask(labels, ignore_label=IGNORE_LABEL):
    """float32 mask of the pixels that count (label != ignore_label)."""
    return tf.cast(tf.not_equal(labels, ignore_label), tf.float32)


def cross_entropy_sum(logits, labels, ignore_label=IGNORE_LABEL):
    """Sum over the valid pixels of the softmax cross-entropy, and the number of valid pixels.

    Args:
        logits: float `(batch, H, W, num_classes)`, at the resolution of `labels`.
        labels: int `(batch, H, W)`; `ignore_label` pixels do not count.

    Returns:
        (float32 sum, float32 count).
    """
    logits = tf.cast(logits, tf.float32)
    labels = tf.cast(labels, tf.int32)
    logits_hw = tf.shape(logits)[1:3]
    labels_hw = tf.shape(labels)[1:3]
    with tf.control_dependencies([
        tf.debugging.assert_equal(
            logits_hw, labels_hw,
            message="logits and labels differ in size: the model must upsample its logits to "
                    "the input size (DeepLabv3 Sec 4.1); labels are downsampled only by "
                    "training.label_downsampling",
        )
    ]):
        mask = valid_mask(labels, ignore_label)
    # Ignored pixels get class 0 so the op stays in range; the mask then removes them.
    safe = tf.where(mask > 0, labels, tf.zeros_like(labels))
    pixel = tf.nn.sparse_softmax_cross_entropy_with_logits(labels=safe, logits=logits)
    return tf.reduce_sum(pixel * mask), tf.reduce_sum(mask)


def global_sum(value):
    """Sum of `value` over the replicas in sync (itself outside `tf.distribute`)."""
    context = tf.distribute.get_replica_context()
    if context is None or context.num_replicas_in_sync == 1:
        return value
    return context.all_reduce(tf.distribute.ReduceOp.SUM, value)


def conv_kernels(model):
    """The conv kernels of `model`: every trainable 4-D variable named `kernel`.

    This covers Conv2D, AtrousConv2D, Conv2DTranspose, the asymmetric GCN convs and grouped
    convs, and leaves out BN gamma/beta and all biases (research/deeplab regularises only
    `weights`).
    """
    return [
        v for v in model.trainable_variables
        if len(v.shape) == 4 and v.name.split("/")[-1].split(":")[0].endswith("kernel")
    ]


def weight_decay_loss(kernels, weight_decay):
    """`weight_decay * 1/2 * sum ||w||^2` over `kernels` (float32)."""
    if not kernels or weight_decay == 0:
        return tf.constant(0.0, tf.float32)
    squares = tf.add_n([tf.reduce_sum(tf.square(tf.cast(k, tf.float32))) for k in kernels])
    return weight_decay * 0.5 * squares


def replica_losses(
    outputs,
    labels,
    *,
    aux_loss_weights,
    weight_decay=0.0,
    kernels=(),
    num_replicas=1,
    ignore_label=IGNORE_LABEL,
    label_strides=None,
):
    """The loss terms of one replica; summed over the replicas they are the global-batch loss.

    Args:
        outputs: the model's output dict: "logits" and optional "aux_*", float32, full size.
        labels: int `(batch, H, W)` of this replica.
        aux_loss_weights: `{aux_name: weight}` as returned by `check_aux_weights`.
        weight_decay: the `wd` of `wd * 1/2 * ||w||^2`.
        kernels: the variables that decay (`conv_kernels(model)`).
        num_replicas: replicas in sync (the decay is split between them).
        ignore_label: the label that is not scored.
        label_strides: None (the loss at full resolution), or `{output name: stride}`
            (`output_strides(model)`): each output's loss at that stride, on the labels
            subsampled to it and normalised by the valid pixels there (`label_downsampling`).

    Returns:
        A dict of float32 scalars: "loss" (what is differentiated), "cross_entropy", one entry
        per aux output (unweighted) and "weight_decay"; plus "valid_pixels" (this replica's).
    """
    strides = dict(label_strides or {})
    denominators = {}  # by stride: one all-reduce of the valid pixels per stride

    def scored(name):
        stride = strides.get(name, 1)
        ce_sum, count = cross_entropy_sum(*at_stride(outputs[name], labels, stride),
                                          ignore_label)
        if stride not in denominators:
            # The count does not depend on the weights; the guard keeps an all-ignored batch
            # at 0.
            denominators[stride] = tf.maximum(tf.stop_gradient(global_sum(count)), 1.0)
        return ce_sum / denominators[stride], count

    terms = {}
    terms["cross_entropy"], count = scored("logits")
    total = terms["cross_entropy"]
    for name, weight in aux_loss_weights.items():
        terms[name], _ = scored(name)
        if weight:
            total = total + weight * terms[name]
    terms["weight_decay"] = weight_decay_loss(kernels, weight_decay) / num_replicas
    terms["loss"] = total + terms["weight_decay"]
    terms["valid_pixels"] = count
    return terms
