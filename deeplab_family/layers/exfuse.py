"""ExFuse components (Zhang et al., ECCV 2018): `SemanticEmbeddingBranch`, `SemanticSupervision`,
`SubPixelUpsample` (the parameter-free upsample of ECRE) and `DenselyAdjacentPrediction`."""

import keras
from keras import ops

from deeplab_family import _validation, defaults
from deeplab_family.layers.conv import ConvNormAct, norm_config, store_norm_settings
from deeplab_family.layers.resize import ResizeLike

# DenselyAdjacentPrediction's borders (ExFuseHead's dap_border takes the same).
DAP_BORDERS = ("average", "zero")


@keras.saving.register_keras_serializable(package="deeplab_family")
class SemanticEmbeddingBranch(keras.layers.Layer):
    """Semantic Embedding Branch, SEB (ExFuse Sec 3.1, Eq 2, Fig 4).

    `call([low, high_1, ..., high_n])` returns `low * prod_i up(conv(high_i))`: each higher
    level is mapped to `low`'s channels by a 3x3 conv, bilinearly upsampled to `low`'s
    run-time size, and the maps multiply `low` element-wise. This is F(x_l, x_{l+1}, ..., x_L)
    of Eq 2; Fig 4: "if there are more than one groups of high-level features, the component
    outputs the production of each feature map after upsampling".

    The conv is a plain 3x3 conv with bias, no BatchNorm and no ReLU. Fig 4 draws only
    "3x3 conv", and its output is a multiplicative gate: a ReLU would let a gate sit at exactly
    zero and cut both the low-level feature and its gradient there, and the GCN decoder that
    ExFuse extends uses no BN in its blocks either.

    Alignment of the upsampling: the inputs are backbone-aligned maps (pixel `i` of a stride-`s`
    map sits on image pixel `s * i`), so high `i` is resized corner-aligned and stride-exactly
    with its ratio `r_i` = stride(high_i) / stride(low) (`ResizeLike(align_corners=True,
    stride=r_i)`): low pixel `p` reads high_i at `p / r_i`, at every input size. A half-pixel
    resize would shift the gate by (r_i - 1) / 2 low pixels (14 image pixels for res5 into res2
    of a stride-32 backbone). `r_i = 1` (equal strides, a dilated backbone) is the identity.
    The default `None` means consecutive levels of an undilated backbone, (2, 4, 8, ...);
    ExFuse's builder passes the ratios of the backbone's `feature_strides`. Configs saved
    without `upsample_ratios` load with "half_pixel", the resize they were trained with.

    Args:
        filters: int or None. Channels of each conv, which must equal `low`'s channels; `None`
            reads them from `low` in `build`.
        kernel_size: int. Kernel of the convs (3 in Fig 4).
        upsample_ratios: sequence of ints, None or "half_pixel". stride(high_i) / stride(low),
            one per high-level input, see above; "half_pixel" is a plain `tf.image.resize`,
            not aligned to the backbone.

    Example:

    >>> seb = SemanticEmbeddingBranch(upsample_ratios=(2, 4))
    >>> low = keras.ops.ones((1, 65, 65, 16))
    >>> highs = [keras.ops.ones((1, 33, 33, 32)), keras.ops.ones((1, 17, 17, 64))]
    >>> tuple(seb([low, *highs]).shape)
    (1, 65, 65, 16)

    Reference:
        Zhang et al., "ExFuse: Enhancing Feature Fusion for Semantic Segmentation", ECCV 2018.
    """

    def __init__(self, filters=None, kernel_size=3, upsample_ratios=None, **kwargs):
        super().__init__(**kwargs)
        if filters is not None:
            _validation.positive_int("filters", filters)
        _validation.positive_int("kernel_size", kernel_size)
        _validation.odd_int("kernel_size", kernel_size)
        if upsample_ratios is not None and upsample_ratios != "half_pixel":
            try:
                ratios = tuple(upsample_ratios)
            except TypeError:
                ratios = ()
            if not ratios or any(
                isinstance(r, bool) or not isinstance(r, int) or r < 1 for r in ratios
            ):
                raise ValueError(
                    "upsample_ratios must be None, 'half_pixel' or a non-empty sequence of ints "
                    f">= 1, one per high-level input. Received: upsample_ratios={upsample_ratios!r}"
                )
            upsample_ratios = ratios
        self.filters = filters
        self.kernel_size = kernel_size
        self.upsample_ratios = upsample_ratios
        self.convs = []
        self.resizes = []

    def build(self, input_shape):
        if (
            not isinstance(input_shape, (list, tuple))
            or len(input_shape) < 2
            or not isinstance(input_shape[0], (list, tuple))
        ):
            raise ValueError(
                "SemanticEmbeddingBranch takes [low, high_1, ...] with at least one high-level "
                f"input. Received: input_shape={input_shape}"
            )
        channels = input_shape[0][-1]
        if self.filters is not None and self.filters != channels:
            raise ValueError(
                "filters must equal the low-level input's channels (the outputs multiply it). "
                f"Received: filters={self.filters}, low-level channels={channels}"
            )
        # A tuple: tf.train.Checkpoint does not see layers in Keras-tracked lists.
        self.convs = tuple([
            ConvNormAct(
                channels,
                self.kernel_size,
                use_norm=False,
                activation=None,
                dtype=self.dtype_policy,
                name=f"high_conv_{i}",
            )
            for i in range(len(input_shape) - 1)
        ])
        for conv, shape in zip(self.convs, input_shape[1:]):
            conv.build(shape)
        num_high = len(input_shape) - 1
        ratios = self.upsample_ratios
        if ratios is None:
            ratios = tuple(2 ** (i + 1) for i in range(num_high))
        elif ratios == "half_pixel":
            ratios = (None,) * num_high
        elif len(ratios) != num_high:
            raise ValueError(
                "upsample_ratios must give one ratio per high-level input. Received: "
                f"upsample_ratios={self.upsample_ratios!r} for {num_high} high-level inputs"
            )
        self.resizes = tuple(
            ResizeLike("bilinear", dtype=self.dtype_policy, name=f"resize_{i}")
            if r is None
            else ResizeLike(
                "bilinear", align_corners=True, stride=r, dtype=self.dtype_policy,
                name=f"resize_{i}",
            )
            for i, r in enumerate(ratios)
        )

    def call(self, inputs):
        low, *highs = inputs
        x = low
        for conv, resize, high in zip(self.convs, self.resizes, highs):
            x = ops.multiply(x, resize([conv(high), low]))
        return x

    def compute_output_shape(self, input_shape):
        return tuple(input_shape[0])

    def get_config(self):
        ratios = self.upsample_ratios
        return {
            **super().get_config(),
            "filters": self.filters,
            "kernel_size": self.kernel_size,
            "upsample_ratios": list(ratios) if isinstance(ratios, tuple) else ratios,
        }

    @classmethod
    def from_config(cls, config):
        # Saved before the ratios existed: keep the half-pixel resize the weights were trained
        # with.
        return cls(**{"upsample_ratios": "half_pixel", **config})


@keras.saving.register_keras_serializable(package="deeplab_family")
class SemanticSupervision(keras.layers.Layer):
    """Semantic Supervision block, SS (ExFuse Sec 3.1, Fig 3, Table 2).

    Attached to the tail of a backbone stage: two convs, then (for backbone pre-training on
    ImageNet) a global-pool + fully-connected classifier whose loss is one term of the weighted
    auxiliary loss. After pre-training the classifier is dropped; ExFuse takes the *second
    conv's output* as that stage's feature for segmentation fine-tuning (+1.5% instead of +1.1%,
    Sec 3.1, Table 3 #2).

    The text does not give Fig 3's kernel sizes or widths; both are arguments. We use two
    3x3 conv + BN + ReLU units (the backbone's own unit) with 256 channels by default, which
    stays cheap at every stage it is attached to (res-2 to res-5 have 256 to 2048 channels).
    The weights of the auxiliary losses belong to the training loop.

    Returns the features, or `{"features": ..., "logits": ...}` when `num_classes` is set.

    Args:
        filters: int. Channels of both convs, and so of the features.
        kernel_size: int. Kernel of both convs.
        num_classes: int or None. Adds the classification head (global average pool -> Dense)
            used to pre-train the backbone; `None` leaves it out.
        synchronized, norm_momentum, norm_epsilon: the BatchNorm settings of both convs, as
            `ConvNormAct`'s.

    Example:

    >>> ss = SemanticSupervision(filters=64, num_classes=1000)
    >>> out = ss(keras.ops.ones((2, 33, 33, 32)))
    >>> tuple(out["features"].shape), tuple(out["logits"].shape)
    ((2, 33, 33, 64), (2, 1000))

    Reference:
        Zhang et al., "ExFuse: Enhancing Feature Fusion for Semantic Segmentation", ECCV 2018.
    """

    def __init__(
        self,
        filters=256,
        kernel_size=3,
        num_classes=None,
        synchronized=False,
        norm_momentum=defaults.BN_MOMENTUM,
        norm_epsilon=defaults.BN_EPSILON,
        **kwargs,
    ):
        super().__init__(**kwargs)
        _validation.positive_int("filters", filters)
        _validation.positive_int("kernel_size", kernel_size)
        _validation.odd_int("kernel_size", kernel_size)
        if num_classes is not None:
            _validation.positive_int("num_classes", num_classes)
        self.filters = filters
        self.kernel_size = kernel_size
        self.num_classes = num_classes
        unit = store_norm_settings(self, synchronized, norm_momentum, norm_epsilon)
        self.conv1 = ConvNormAct(filters, kernel_size, name="conv1", **unit)
        self.conv2 = ConvNormAct(filters, kernel_size, name="conv2", **unit)
        if num_classes is not None:
            self.pool = keras.layers.GlobalAveragePooling2D(dtype=self.dtype_policy, name="pool")
            self.classifier = keras.layers.Dense(
                num_classes, dtype=self.dtype_policy, name="classifier"
            )
        else:
            self.pool = self.classifier = None

    def build(self, input_shape):
        mid = (*input_shape[:3], self.filters)
        self.conv1.build(input_shape)
        self.conv2.build(mid)
        if self.classifier is not None:
            self.classifier.build((input_shape[0], self.filters))

    def call(self, inputs, training=None):
        features = self.conv2(self.conv1(inputs, training=training), training=training)
        if self.classifier is None:
            return features
        return {"features": features, "logits": self.classifier(self.pool(features))}

    def compute_output_shape(self, input_shape):
        features = (*input_shape[:3], self.filters)
        if self.classifier is None:
            return features
        return {"features": features, "logits": (input_shape[0], self.num_classes)}

    def get_config(self):
        return {
            **super().get_config(),
            "filters": self.filters,
            "kernel_size": self.kernel_size,
            "num_classes": self.num_classes,
            **norm_config(self),
        }


@keras.saving.register_keras_serializable(package="deeplab_family")
class SubPixelUpsample(keras.layers.Layer):
    """Parameter-free sub-pixel upsample (depth to space) of ECRE (ExFuse Sec 3.2, Fig 5).

    `(N, H, W, C * s * s) -> (N, H * s, W * s, C)` by rearranging channels, with TF's
    `depth_to_space` layout: output pixel `(i * s + a, j * s + b)`, channel `c` comes from input
    pixel `(i, j)`, channel `(a * s + b) * C + c`. It has no weights, which is the point of
    ECRE: the auxiliary loss reaches the high-level channels explicitly, not through a
    learnt deconvolution. Converts to the TFLite builtin DEPTH_TO_SPACE.

    Args:
        scale: int. Upsampling factor s (2 for ECRE's stride-2 step).

    Example:

    >>> tuple(SubPixelUpsample(2)(keras.ops.ones((1, 17, 17, 84))).shape)
    (1, 34, 34, 21)

    Reference:
        Zhang et al., "ExFuse: Enhancing Feature Fusion for Semantic Segmentation", ECCV 2018;
        Shi et al., "Real-Time Single Image and Video Super-Resolution Using an Efficient
        Sub-Pixel Convolutional Neural Network", CVPR 2016.
    """

    def __init__(self, scale=2, **kwargs):
        super().__init__(**kwargs)
        _validation.positive_int("scale", scale)
        self.scale = scale

    def build(self, input_shape):
        channels = input_shape[-1]
        if channels is not None and channels % (self.scale**2):
            raise ValueError(
                f"input channels must be divisible by scale**2 = {self.scale**2}. "
                f"Received: input channels={channels}, scale={self.scale}"
            )

    def call(self, inputs):
        if self.scale == 1:
            return inputs
        return ops.depth_to_space(inputs, self.scale)

    def compute_output_shape(self, input_shape):
        s = self.scale
        batch, h, w, c = input_shape
        return (
            batch,
            None if h is None else h * s,
            None if w is None else w * s,
            None if c is None else c // (s * s),
        )

    def get_config(self):
        return {**super().get_config(), "scale": self.scale}


@keras.saving.register_keras_serializable(package="deeplab_family")
class DenselyAdjacentPrediction(keras.layers.Layer):
    """Densely Adjacent Prediction, DAP (ExFuse Sec 3.2, Eq 3, Fig 6).

    Each position predicts, in k x k channel groups, the scores of its k x k neighbours; the
    score at (i, j) is the average of what its neighbours predicted for it (Eq 3):

        r[i, j] = 1 / (k * k) * sum_{0 <= l, m < k} x[i + l - k // 2, j + m - k // 2, group l*k+m]

    Channel layout: group-major. With C = channels / (k * k) output channels, input channels
    `[g * C, (g + 1) * C)` are group `g = l * k + m`, where `l` is the row offset and `m` the
    column offset. So 189 = 21 * 9 input channels give 21 scores for k = 3 (ExFuse's setting).

    Borders (the paper does not say): positions outside the map contribute zero.
    `border="zero"` (default) keeps Eq 3's constant 1 / (k * k), which is what a zero-padded
    implementation of Eq 3 computes; border scores are then shrunk towards zero by the fraction
    of missing neighbours (an argmax is unaffected). `border="average"` divides by the number of
    neighbours inside the map instead, so that every output is a true average ("averaging the
    associated scores", Sec 3.2) and a constant input gives a constant output.

    It has no weights. It runs as one pad, k * k strided slices and adds: O(k * k * C) work per
    pixel instead of the O(k^4 * C^2) of an equivalent fixed conv, and converts to TFLite
    builtins (PAD, STRIDED_SLICE, ADD, MUL).

    Args:
        kernel_size: int. The odd window size k (3 in ExFuse).
        border: str. "zero" or "average" (`DAP_BORDERS`), see above.

    Example:

    >>> tuple(DenselyAdjacentPrediction(3)(keras.ops.ones((1, 33, 33, 189))).shape)
    (1, 33, 33, 21)

    Reference:
        Zhang et al., "ExFuse: Enhancing Feature Fusion for Semantic Segmentation", ECCV 2018.
    """

    def __init__(self, kernel_size=3, border="zero", **kwargs):
        super().__init__(**kwargs)
        _validation.positive_int("kernel_size", kernel_size)
        _validation.odd_int("kernel_size", kernel_size)
        _validation.one_of("border", border, DAP_BORDERS)
        self.kernel_size = kernel_size
        self.border = border
        self._groups = kernel_size * kernel_size

    def build(self, input_shape):
        channels = input_shape[-1]
        if channels is None or channels % self._groups:
            raise ValueError(
                f"input channels must be a multiple of kernel_size**2 = {self._groups}. "
                f"Received: input channels={channels}, kernel_size={self.kernel_size}"
            )

    def _window_sum(self, x, channels_per_group):
        """sum_{l,m} x_pad[i + l, j + m, group l*k+m] over the zero-padded map."""
        k = self.kernel_size
        p = k // 2
        padded = ops.pad(x, [[0, 0], [p, p], [p, p], [0, 0]])
        total = None
        for l in range(k):
            # Static slice ends relative to the padded end: x_pad[l : l + H] without reading H.
            rows = slice(l, l - 2 * p if l < 2 * p else None)
            for m in range(k):
                cols = slice(m, m - 2 * p if m < 2 * p else None)
                if channels_per_group is None:
                    part = padded[:, rows, cols, :]
                else:
                    g = l * k + m
                    c0 = g * channels_per_group
                    part = padded[:, rows, cols, c0 : c0 + channels_per_group]
                total = part if total is None else ops.add(total, part)
        return total

    def call(self, inputs):
        channels = inputs.shape[-1] // self._groups
        total = self._window_sum(inputs, channels)
        if self.border == "zero":
            return ops.multiply(total, ops.cast(1.0 / self._groups, total.dtype))
        ones = ops.ones_like(inputs[..., :1])
        count = self._window_sum(ones, None)
        return ops.divide(total, count)

    def compute_output_shape(self, input_shape):
        return (*input_shape[:3], input_shape[-1] // self._groups)

    def get_config(self):
        return {**super().get_config(), "kernel_size": self.kernel_size, "border": self.border}
