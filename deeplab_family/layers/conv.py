"""Convolutions: `AtrousConv2D` (native dilated/grouped conv) and `ConvNormAct`."""

import keras
from keras import ops

from deeplab_family import _validation, defaults

# The BatchNorm settings a layer built from `ConvNormAct`s takes and hands to each of them.
NORM_SETTINGS = ("synchronized", "norm_momentum", "norm_epsilon")


def fixed_padding(kernel_size, dilation_rate):
    """Symmetric "same" padding of research/deeplab's `conv2d_same`: (begin, end) per axis.

    A stride-2 "same" conv in TF pads asymmetrically on even inputs (0 before, 1 after), which
    shifts features by one pixel against keras.applications, Caffe and research/deeplab. Padding
    `k_eff - 1` split evenly, then a VALID conv, keeps every stride aligned to the pixel centres
    and gives the same output size, ceil(H / stride).
    """
    pads = []
    for k, r in zip(kernel_size, dilation_rate):
        total = (k - 1) * r
        pads.append((total // 2, total - total // 2))
    return pads


@keras.saving.register_keras_serializable(package="deeplab_family")
class AtrousConv2D(keras.layers.Conv2D):
    """A `keras.layers.Conv2D` whose dilated and grouped paths run as one native conv op.

    Keras' `Conv2D(dilation_rate=r)` lowers to `tf.nn.convolution`, which on CPU wraps the conv
    in SpaceToBatch/BatchToSpace. Atrous convolution (DeepLabv3 Sec 3.1, Eq. 1) is the same sum,
    `y[i] = sum_k x[i + r*k] w[k]`, so this layer hands the rate straight to the conv kernel
    (`tf.nn.conv2d(..., dilations=r)`), which is measurably faster on CPU and converts to a
    single TFLite CONV_2D with dilation factors. Grouped convs take the same path.

    Strided "same" convs pad symmetrically by `(k - 1) * r` (see `fixed_padding`), like
    keras.applications' ResNets and research/deeplab; output size is still ceil(H / stride).

    `skip_padded_taps=True` (stride 1, "same", rate > 1, groups 1 only) computes the same sum
    tap by tap: each kernel tap is a 1x1 conv over the part of the map where that tap reads real
    input, padded back into place, and the taps are added. Taps that would read only the zero
    padding cost nothing. At large rates on small maps, e.g. ASPP's rates 12 and 18 on a 33x33
    map, most of a dense conv's work multiplies padding (DeepLabv3 Fig. 4): under XLA on CPU,
    whose conv is dense, this path is 1.2x to 2x faster for those convs; oneDNN's native conv
    (no XLA) already skips most of it, and both paths cost about the same there.

    All `keras.layers.Conv2D` arguments are accepted; only `data_format="channels_last"` is
    supported.

    Args:
        skip_padded_taps: bool. Compute the atrous conv tap by tap, skipping what falls in
            the padding (see above). Same function, same variables; default False.

    Example:

    >>> conv = AtrousConv2D(256, 3, dilation_rate=12, padding="same", use_bias=False)
    >>> tuple(conv(keras.ops.ones((1, 33, 33, 64))).shape)
    (1, 33, 33, 256)
    """

    def __init__(self, filters, kernel_size, skip_padded_taps=False, **kwargs):
        data_format = kwargs.get("data_format") or "channels_last"
        if data_format != "channels_last":
            raise ValueError(
                f"AtrousConv2D supports only data_format='channels_last'. "
                f"Received: data_format={data_format!r}"
            )
        _validation.boolean("skip_padded_taps", skip_padded_taps)
        super().__init__(filters, kernel_size, **kwargs)
        self.skip_padded_taps = skip_padded_taps

    def convolution_op(self, inputs, kernel):
        # keras.ops.conv is not enough here: under the TF backend it takes the
        # SpaceToBatch path for any rate > 1. tf.nn.conv2d keeps it one op.
        import tensorflow as tf

        padding = self.padding.upper()
        if (
            self.skip_padded_taps
            and padding == "SAME"
            and max(self.strides) == 1
            and max(self.dilation_rate) > 1
            and self.groups == 1
        ):
            return _conv_by_valid_taps(inputs, kernel, self.dilation_rate)
        if padding == "SAME" and max(self.strides) > 1:
            (hb, he), (wb, we) = fixed_padding(self.kernel_size, self.dilation_rate)
            inputs = ops.pad(inputs, [[0, 0], [hb, he], [wb, we], [0, 0]])
            padding = "VALID"
        return tf.nn.conv2d(
            inputs,
            kernel,
            strides=[1, *self.strides, 1],
            padding=padding,
            dilations=[1, *self.dilation_rate, 1],
        )

    def get_config(self):
        return {**super().get_config(), "skip_padded_taps": self.skip_padded_taps}


def _conv_by_valid_taps(x, kernel, dilation_rate):
    """A stride-1 "same" dilated conv as a sum over kernel taps of 1x1 convs on valid regions.

    Tap (i, j) reads x[o + d] at output o, with d = (i * r - pad_begin) per axis ("same"
    padding: pad_begin = (k - 1) * r // 2). It contributes only where 0 <= o + d < size; there
    it is a 1x1 conv (a matmul) of the shifted input, elsewhere zero. Groups of 1 only. Sizes
    are read at run time, so H and W may be None; a tap entirely in the padding gives an empty
    slice.
    """
    import tensorflow as tf

    kh, kw = kernel.shape[0], kernel.shape[1]
    (pad_h, _), (pad_w, _) = fixed_padding((kh, kw), dilation_rate)
    shape = tf.shape(x)
    sizes = (shape[1], shape[2])

    def span(offset, size):
        """Output range [begin, end) where a tap at `offset` reads inside [0, size)."""
        begin = tf.minimum(tf.maximum(-offset, 0), size)
        end = tf.maximum(tf.minimum(size - offset, size), begin)
        return begin, end

    def conv1x1(part, tap):
        # A matmul rather than a 1x1 Conv2D: TF's CPU Conv2D returns a wrongly shaped tensor
        # for an empty input, and a tap entirely in the padding has an empty slice.
        part_shape = tf.shape(part)
        y = tf.matmul(tf.reshape(part, [-1, kernel.shape[2]]), tap)
        return tf.reshape(y, tf.concat([part_shape[:3], [kernel.shape[3]]], axis=0))

    terms = []
    for i in range(kh):
        dy = i * dilation_rate[0] - pad_h
        for j in range(kw):
            dx = j * dilation_rate[1] - pad_w
            tap = kernel[i, j]
            if dy == 0 and dx == 0:
                terms.append(conv1x1(x, tap))
                continue
            (y0, y1), (x0, x1) = span(dy, sizes[0]), span(dx, sizes[1])
            part = conv1x1(x[:, y0 + dy : y1 + dy, x0 + dx : x1 + dx, :], tap)
            paddings = [[0, 0], [y0, sizes[0] - y1], [x0, sizes[1] - x1], [0, 0]]
            terms.append(tf.pad(part, paddings))
    return tf.add_n(terms)


def _fused_inference_batch_norm(x, norm):
    """`norm(x, training=False)` for NHWC `x`, as one FusedBatchNormV3 op (exact epsilon)."""
    import tensorflow as tf

    y, *_ = tf.raw_ops.FusedBatchNormV3(
        x=x,
        scale=ops.convert_to_tensor(norm.gamma),
        offset=ops.convert_to_tensor(norm.beta),
        mean=ops.convert_to_tensor(norm.moving_mean),
        variance=ops.convert_to_tensor(norm.moving_variance),
        epsilon=norm.epsilon,
        data_format="NHWC",
        is_training=False,
    )
    return y


@keras.saving.register_keras_serializable(package="deeplab_family")
class ConvNormAct(keras.layers.Layer):
    """Convolution (no bias) + BatchNorm + activation, the unit every model here is built from.

    The conv is an `AtrousConv2D`, so a rate > 1 runs as a native dilated conv. At inference
    (BN on its moving statistics: `training` false, or BN frozen) under a float32 policy, the
    BN runs as a single FusedBatchNormV3 op, which TensorFlow's graph optimiser fuses with the
    conv and the ReLU into one kernel on CPU; same variables, same function.

    Args:
        filters: int. Output channels.
        kernel_size: int or (int, int). Kernel size; asymmetric kernels such as (15, 1) are
            allowed (GCN).
        strides: int. Stride; cannot be combined with `dilation_rate > 1`.
        dilation_rate: int or (int, int). Atrous rate r of DeepLabv3 Eq. 1.
        groups: int. Grouped convolution (ResNeXt); must divide `filters` and the input
            channels.
        activation: str or None. Activation after the norm; `None` for a linear output.
        use_norm: bool. Whether to apply BatchNormalization. Without it the conv has a bias.
        synchronized: bool. Synchronise BN statistics across replicas under `tf.distribute`.
        norm_momentum: float. BN moving-average momentum, default `defaults.BN_MOMENTUM`
            (DeepLabv3 Sec 4.1 trains with decay 0.9997).
        norm_epsilon: float. BN epsilon, default `defaults.BN_EPSILON` (1e-5).
        kernel_initializer: initializer for the conv kernel.
        skip_padded_taps: bool. Passed to `AtrousConv2D`: compute a dilated conv tap by tap,
            skipping the taps' work on the zero padding (same function; faster under XLA at
            large rates, e.g. in ASPP).

    Example:

    >>> layer = ConvNormAct(256, 3, dilation_rate=6)
    >>> tuple(layer(keras.ops.ones((2, 33, 33, 64))).shape)
    (2, 33, 33, 256)

    Reference:
        Chen et al., "Rethinking Atrous Convolution for Semantic Image Segmentation", 2017.
    """

    def __init__(
        self,
        filters,
        kernel_size=3,
        strides=1,
        dilation_rate=1,
        groups=1,
        activation="relu",
        use_norm=True,
        synchronized=False,
        norm_momentum=defaults.BN_MOMENTUM,
        norm_epsilon=defaults.BN_EPSILON,
        kernel_initializer="he_normal",
        skip_padded_taps=False,
        **kwargs,
    ):
        super().__init__(**kwargs)
        _validation.positive_int("filters", filters)
        kernel_size = _validation.int_pair("kernel_size", kernel_size)
        _validation.positive_int("strides", strides)
        dilation_rate = _validation.int_pair("dilation_rate", dilation_rate)
        _validation.positive_int("groups", groups)
        if filters % groups:
            raise ValueError(
                f"groups must divide filters. Received: filters={filters}, groups={groups}"
            )
        if strides > 1 and max(dilation_rate) > 1:
            raise ValueError(
                "strides > 1 cannot be combined with dilation_rate > 1 (a strided stage becomes "
                f"a dilated one instead). Received: strides={strides}, "
                f"dilation_rate={dilation_rate}"
            )
        _validation.probability("norm_momentum", norm_momentum)
        _validation.positive_number("norm_epsilon", norm_epsilon)
        self.filters = filters
        self.kernel_size = kernel_size
        self.strides = strides
        self.dilation_rate = dilation_rate
        self.groups = groups
        self.activation = activation
        self.use_norm = use_norm
        self.synchronized = synchronized
        self.norm_momentum = norm_momentum
        self.norm_epsilon = norm_epsilon
        self.kernel_initializer = keras.initializers.get(kernel_initializer)
        self.skip_padded_taps = skip_padded_taps

        self.conv = AtrousConv2D(
            filters,
            kernel_size,
            strides=strides,
            dilation_rate=dilation_rate,
            groups=groups,
            padding="same",
            use_bias=not use_norm,
            kernel_initializer=self.kernel_initializer,
            skip_padded_taps=skip_padded_taps,
            dtype=self.dtype_policy,
            name="conv",
        )
        self.norm = (
            keras.layers.BatchNormalization(
                momentum=norm_momentum,
                epsilon=norm_epsilon,
                synchronized=synchronized,
                dtype=self.dtype_policy,
                name="bn",
            )
            if use_norm
            else None
        )
        self.act = (
            keras.layers.Activation(activation, dtype=self.dtype_policy, name="act")
            if activation is not None
            else None
        )

    def build(self, input_shape):
        channels = input_shape[-1]
        if channels is not None and channels % self.groups:
            raise ValueError(
                f"groups must divide the input channels. Received: input channels={channels}, "
                f"groups={self.groups} (layer {self.name!r})"
            )
        if not self.conv.built:
            self.conv.build(input_shape)
        out_shape = self.conv.compute_output_shape(input_shape)
        if self.norm is not None and not self.norm.built:
            self.norm.build(out_shape)

    def call(self, inputs, training=None):
        x = self.conv(inputs)
        if self.norm is not None:
            if self._fused_inference_norm(training):
                x = _fused_inference_batch_norm(x, self.norm)
            else:
                x = self.norm(x, training=training)
        if self.act is not None:
            x = self.act(x)
        return x

    def _fused_inference_norm(self, training):
        # Inference BN (moving statistics: not training, or BN frozen) as one FusedBatchNormV3
        # op instead of Keras 3's elementwise multiply and add. TF's graph optimiser (remapper,
        # oneDNN on CPU) then fuses conv + BN + ReLU into a single _FusedConv2D, as it does for
        # tf_keras' fused BN; without it each ConvNormAct costs two to three extra passes over
        # its output (about 20% of DeepLabV3-R101's CPU latency, see benchmarks/models.py).
        # Same variables and the same function; float32 only (mixed precision keeps Keras' BN,
        # which upcasts to float32) and only with the TensorFlow backend.
        return (
            not (training and self.norm.trainable)
            and self.compute_dtype == "float32"
            and keras.backend.backend() == "tensorflow"
        )

    def compute_output_shape(self, input_shape):
        return self.conv.compute_output_shape(input_shape)

    def get_config(self):
        return {
            **super().get_config(),
            "filters": self.filters,
            "kernel_size": self.kernel_size,
            "strides": self.strides,
            "dilation_rate": self.dilation_rate,
            "groups": self.groups,
            "activation": self.activation,
            "use_norm": self.use_norm,
            **norm_config(self),
            "kernel_initializer": keras.initializers.serialize(self.kernel_initializer),
            "skip_padded_taps": self.skip_padded_taps,
        }


def store_norm_settings(layer, synchronized, norm_momentum, norm_epsilon):
    """Keeps the BatchNorm settings of a layer built from `ConvNormAct`s on attributes of the
    same names (`norm_config` reads them back for its `get_config`) and returns the keyword
    arguments that hand them, with the layer's dtype policy, to each `ConvNormAct` inside.

    Example:

    >>> layer = keras.layers.Layer()
    >>> unit = store_norm_settings(layer, False, 0.99, 1e-3)
    >>> norm_config(layer)
    {'synchronized': False, 'norm_momentum': 0.99, 'norm_epsilon': 0.001}
    >>> tuple(ConvNormAct(8, 1, **unit)(keras.ops.ones((1, 5, 5, 3))).shape)
    (1, 5, 5, 8)
    """
    layer.synchronized = synchronized
    layer.norm_momentum = norm_momentum
    layer.norm_epsilon = norm_epsilon
    return {**norm_config(layer), "dtype": layer.dtype_policy}


def norm_config(layer):
    """`{"synchronized": ..., "norm_momentum": ..., "norm_epsilon": ...}` of `layer`, in that
    order: the BatchNorm part of its `get_config`."""
    return {name: getattr(layer, name) for name in NORM_SETTINGS}
