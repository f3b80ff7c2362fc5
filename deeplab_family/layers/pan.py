"""Pyramid Attention Network components (Li et al., BMVC 2018): `FeaturePyramidAttention` and
`GlobalAttentionUpsample`."""

import keras
from keras import ops

from deeplab_family import _validation, defaults
from deeplab_family.layers.conv import ConvNormAct, norm_config, store_norm_settings
from deeplab_family.layers.resize import ResizeLike

# FeaturePyramidAttention's choices (PANHead's fpa_* options take the same).
FPA_POOLINGS = ("avg", "max")  # Table 1 "AVE", "MAX"
FPA_GLOBAL_POOLING_MERGES = ("add", "concat")
FPA_ATTENTIONS = ("pyramid", "se")  # Table 1: FPA, "ResNet101+SE"


def _upsample_ratio(name, value):
    if value != "half_pixel":
        _validation.positive_int(name, value)
    return value


def _aligned_resize(ratio, dtype, name):
    """Upsampling between backbone-aligned maps whose strides differ by `ratio` (an int):
    corner-aligned and stride-exact. "half_pixel": `tf.image.resize`'s geometry."""
    if ratio == "half_pixel":
        return ResizeLike("bilinear", dtype=dtype, name=name)
    return ResizeLike("bilinear", align_corners=True, stride=ratio, dtype=dtype, name=name)


@keras.saving.register_keras_serializable(package="deeplab_family")
class FeaturePyramidAttention(keras.layers.Layer):
    """Feature Pyramid Attention, FPA (PAN Sec 3.1, Fig 3b, Table 1).

    A pixel-wise attention map computed by a small U-shaped pyramid multiplies a 1x1-conv copy
    of the input; a global-pooling branch adds image-level context.

    - Master: 1x1 conv + BN + ReLU to `filters` channels.
    - Pyramid (`attention="pyramid"`): level 1 is the input downsampled once (stride-2
      pooling) then a 7x7 conv; level 2 downsamples level 1 and applies 5x5; level 3
      downsamples level 2 and applies 3x3 (Fig 3b; "C357", `kernel_sizes=(7, 5, 3)`). A 32x32
      input gives 16x16, 8x8 and 4x4 levels (Sec 4.1.1). As in the common ports of PAN, each
      level has a second conv of the same kernel on the branch that is merged, while the
      first conv's output feeds the next level. Merging is U-shaped from the coarsest level up:
      upsample the coarser map bilinearly to the finer map's run-time size and add, so odd
      sizes align. A 1x1 conv maps the merged level-1 map to `filters` channels (the ports'
      final upsampling deconv; here applied before the upsample, at 1/4 of the pixels), and it
      is upsampled to the input size. Every pyramid conv is conv + BN + ReLU.
    - SE (`attention="se"`, Table 1 "ResNet101+SE"): the pyramid is replaced by a channel
      attention vector, global average pool -> 1x1 conv -> ReLU -> 1x1 conv -> sigmoid, as in
      SENet (plain convs with bias, squeeze width `filters // se_ratio`).
    - Global pooling branch (`global_pooling`, the dotted box of Fig 3b): global average pool
      -> 1x1 conv + BN + ReLU -> upsampled to the input size. PAN 3.1 says it is "concatenated
      with the output features": `global_pooling_merge="concat"` (default) concatenates it and
      projects back to `filters` with a 1x1 conv + BN + ReLU (the output width is `filters`
      either way). The public ports add it instead ("add"), with no extra conv.

    Table 1's rows are `kernel_sizes` in {(3, 3, 3), (7, 5, 3)} x `pooling` in {"max", "avg"} x
    `global_pooling` in {False, True}, plus `attention="se", global_pooling=False`.

    About BatchNorm in the global-pooling branch: its statistics are over the batch of 1x1
    pooled maps, so with batch size 1 in training mode the branch outputs a constant and its
    conv gets no gradient. Train with several images per replica (PAN uses 16).

    Args:
        filters: int. Output channels (of the master branch and of the attention).
        pyramid_filters: int or None. Channels inside the pyramid. The paper does not give them;
            `None` uses `filters // 4`, the ratio of the public ports (512 for 2048).
        kernel_sizes: sequence of odd ints. The pyramid's kernels from the finest level to the
            coarsest; (7, 5, 3) is "C357", (3, 3, 3) is "C333". Its length is the number of
            levels (3 in the paper).
        pooling: str. "avg" ("AVE", the paper's choice) or "max" ("MAX") for the stride-2
            downsampling.
        global_pooling: bool. Whether to add the global-pooling branch ("GP").
        global_pooling_merge: str. "concat" (Sec 3.1, default) or "add" (the public ports),
            see above.
        attention: str. "pyramid" (FPA) or "se" (Table 1's SENet-style baseline).
        se_ratio: int. Channel reduction of the SE attention (16 as in SENet); unused with the
            pyramid.
        synchronized, norm_momentum, norm_epsilon: the BatchNorm settings of every conv + BN,
            as `ConvNormAct`'s.

    Example:

    >>> fpa = FeaturePyramidAttention(64, kernel_sizes=(7, 5, 3), pooling="avg")
    >>> tuple(fpa(keras.ops.ones((2, 33, 33, 128))).shape)
    (2, 33, 33, 64)

    Reference:
        Li et al., "Pyramid Attention Network for Semantic Segmentation", BMVC 2018.
    """

    def __init__(
        self,
        filters,
        pyramid_filters=None,
        kernel_sizes=(7, 5, 3),
        pooling="avg",
        global_pooling=True,
        global_pooling_merge="concat",
        attention="pyramid",
        se_ratio=16,
        synchronized=False,
        norm_momentum=defaults.BN_MOMENTUM,
        norm_epsilon=defaults.BN_EPSILON,
        **kwargs,
    ):
        super().__init__(**kwargs)
        _validation.positive_int("filters", filters)
        if pyramid_filters is not None:
            _validation.positive_int("pyramid_filters", pyramid_filters)
        kernel_sizes = _validation.odd_ints("kernel_sizes", kernel_sizes)
        _validation.one_of("pooling", pooling, FPA_POOLINGS)
        _validation.one_of("global_pooling_merge", global_pooling_merge, FPA_GLOBAL_POOLING_MERGES)
        _validation.one_of("attention", attention, FPA_ATTENTIONS)
        _validation.positive_int("se_ratio", se_ratio)
        self.filters = filters
        self.pyramid_filters = pyramid_filters
        self.kernel_sizes = kernel_sizes
        self.pooling = pooling
        self.global_pooling = bool(global_pooling)
        self.global_pooling_merge = global_pooling_merge
        self.attention = attention
        self.se_ratio = se_ratio
        unit = store_norm_settings(self, synchronized, norm_momentum, norm_epsilon)
        self._pyramid_width = pyramid_filters or max(filters // 4, 1)
        self.master = ConvNormAct(filters, 1, name="master", **unit)

        pools, down_convs, level_convs = [], [], []
        self.attention_proj = None
        self.se_squeeze = self.se_excite = self.se_pool = None
        if attention == "pyramid":
            pool_cls = (
                keras.layers.AveragePooling2D if pooling == "avg" else keras.layers.MaxPooling2D
            )
            for i, k in enumerate(kernel_sizes):
                # 2x2 stride-2 "same" pooling: ceil(H / 2), so odd sizes keep their last row.
                pools.append(
                    pool_cls(
                        2, strides=2, padding="same", dtype=self.dtype_policy, name=f"pool_{i + 1}"
                    )
                )
                down_convs.append(
                    ConvNormAct(self._pyramid_width, k, name=f"down_conv_{i + 1}", **unit)
                )
                level_convs.append(
                    ConvNormAct(self._pyramid_width, k, name=f"level_conv_{i + 1}", **unit)
                )
        # Tuples, not lists: tf.train.Checkpoint does not see layers in Keras-tracked lists.
        self.pools, self.down_convs, self.level_convs = (
            tuple(pools), tuple(down_convs), tuple(level_convs)
        )
        if attention == "pyramid":
            self.attention_proj = ConvNormAct(filters, 1, name="attention_proj", **unit)
            # Half-pixel resizes, unlike the decoders' corner-aligned ones: a 2x2 stride-2 pool
            # puts level pixel j on the centre of its window, pixel 2j + 1/2 of the finer map,
            # which is where `tf.image.resize` puts it (exactly for even sizes; at odd ones the
            # "same" pool's last window is cut by the edge and the resize stretches by under
            # half a coarse pixel).
            self.level_resize = ResizeLike("bilinear", dtype=self.dtype_policy, name="level_up")
            self.attention_resize = ResizeLike(
                "bilinear", dtype=self.dtype_policy, name="attention_up"
            )
        else:
            self.level_resize = self.attention_resize = None
            self.se_pool = keras.layers.GlobalAveragePooling2D(
                keepdims=True, dtype=self.dtype_policy, name="se_pool"
            )
            self.se_squeeze = ConvNormAct(
                max(filters // se_ratio, 1),
                1,
                use_norm=False,
                activation="relu",
                dtype=self.dtype_policy,
                name="se_squeeze",
            )
            self.se_excite = ConvNormAct(
                filters,
                1,
                use_norm=False,
                activation="sigmoid",
                dtype=self.dtype_policy,
                name="se_excite",
            )

        self.gp_pool = self.gp_conv = self.gp_resize = self.gp_project = None
        if self.global_pooling:
            self.gp_pool = keras.layers.GlobalAveragePooling2D(
                keepdims=True, dtype=self.dtype_policy, name="gp_pool"
            )
            self.gp_conv = ConvNormAct(filters, 1, name="gp_conv", **unit)
            # From a 1x1 map: a broadcast, whatever the alignment.
            self.gp_resize = ResizeLike("bilinear", dtype=self.dtype_policy, name="gp_up")
            if global_pooling_merge == "concat":
                self.gp_project = ConvNormAct(filters, 1, name="gp_project", **unit)

    def build(self, input_shape):
        batch, _, _, channels = input_shape
        spatial = (batch, None, None)
        self.master.build(input_shape)
        if self.attention == "pyramid":
            in_channels = channels
            for down, level in zip(self.down_convs, self.level_convs):
                down.build((*spatial, in_channels))
                level.build((*spatial, self._pyramid_width))
                in_channels = self._pyramid_width
            self.attention_proj.build((*spatial, self._pyramid_width))
        else:
            self.se_squeeze.build((batch, 1, 1, channels))
            self.se_excite.build((batch, 1, 1, self.se_squeeze.filters))
        if self.global_pooling:
            self.gp_conv.build((batch, 1, 1, channels))
            if self.gp_project is not None:
                self.gp_project.build((*spatial, 2 * self.filters))

    def pyramid_features(self, inputs, training=None):
        """The pyramid's merged maps, finest level first (level 1 at 1/2 of the input size).

        This is what `call` uses; it is public so the geometry of Sec 4.1.1 can be inspected.
        """
        if not self.built:  # called directly, before the layer itself
            self.build(tuple(inputs.shape))
        levels = []
        x = inputs
        for pool, down, level in zip(self.pools, self.down_convs, self.level_convs):
            x = down(pool(x), training=training)
            levels.append(level(x, training=training))
        # U-shape from the coarsest level up (Fig 3b): the sums are of non-negative ReLU maps,
        # so the ports' extra ReLU after each sum would be the identity and is left out.
        merged = [levels[-1]]
        for finer in reversed(levels[:-1]):
            merged.insert(0, ops.add(finer, self.level_resize([merged[0], finer])))
        return merged

    def call(self, inputs, training=None):
        master = self.master(inputs, training=training)
        if self.attention == "pyramid":
            top = self.pyramid_features(inputs, training=training)[0]
            attention = self.attention_proj(top, training=training)
            attention = self.attention_resize([attention, inputs])
        else:
            attention = self.se_excite(
                self.se_squeeze(self.se_pool(inputs), training=training), training=training
            )
        x = ops.multiply(master, attention)
        if self.global_pooling:
            gp = self.gp_conv(self.gp_pool(inputs), training=training)
            gp = self.gp_resize([gp, inputs])
            if self.gp_project is None:
                x = ops.add(x, gp)
            else:
                x = self.gp_project(ops.concatenate([x, gp], axis=-1), training=training)
        return x

    def compute_output_shape(self, input_shape):
        return (*input_shape[:3], self.filters)

    def get_config(self):
        return {
            **super().get_config(),
            "filters": self.filters,
            "pyramid_filters": self.pyramid_filters,
            "kernel_sizes": self.kernel_sizes,
            "pooling": self.pooling,
            "global_pooling": self.global_pooling,
            "global_pooling_merge": self.global_pooling_merge,
            "attention": self.attention,
            "se_ratio": self.se_ratio,
            **norm_config(self),
        }


@keras.saving.register_keras_serializable(package="deeplab_family")
class GlobalAttentionUpsample(keras.layers.Layer):
    """Global Attention Upsample, GAU (PAN Sec 3.2, Fig 4, Table 3).

    `call([low, high])`: high-level features give a global context vector that gates a
    reduced copy of the low-level features; the upsampled high-level features are added.

    - Low: `low_kernel_size` conv + BN to `filters` channels (3x3 in the paper, 1x1 is
      Table 3's other row). No ReLU here: the sum gets one at the end, as in the public ports.
    - Gate: high -> global average pool -> 1x1 conv + BN + ReLU ("1x1 convolution with batch
      normalization and nonlinearity", Sec 3.2), multiplied into the low map.
    - High: bilinearly upsampled to `low`'s run-time size. When its channels differ from
      `filters` a 1x1 conv + BN projects it first (at the coarse resolution; a 1x1 conv and BN
      commute with bilinear resizing, so this is the same map at a fraction of the cost). In
      PAN's decoder with one width throughout, the FPA and GAU outputs already have `filters`
      channels, so the identity is used there, like a ResNet shortcut; the ports' learnt
      deconvolution is replaced by the plain upsampling Fig 4 draws.
    - Output: ReLU(gated low + upsampled high).

    Alignment of the upsampling: `low` and `high` are backbone-aligned maps (pixel `i` of a
    stride-`s` map sits on image pixel `s * i`), so with `upsample_ratio = r` = stride(high) /
    stride(low) the resize is corner-aligned and stride-exact (`ResizeLike(align_corners=True,
    stride=r)`): low pixel `p` reads high at `p / r`, at every input size. A half-pixel resize
    would shift the high map by (r - 1) / 2 low pixels (6 image pixels from stride 16 to 4,
    carried down the decoder by the identity path). `r = 1` (equal strides, e.g. res5 into res4
    of a dilated backbone) is the identity. The default 2 is the step between consecutive
    levels of an undilated backbone; PAN's builder passes each GAU the ratio of the backbone's
    `feature_strides`. Configs saved without `upsample_ratio` load with "half_pixel", the
    resize they were trained with.

    `global_pooling=False` is Table 3's first row: the low-level reduction plus the upsampled
    high-level features, without the gate.

    About BatchNorm in the gate: its statistics are over the batch of 1x1 pooled maps; with
    batch size 1 in training mode the gate is the constant ReLU(beta) (zero at initialisation),
    which switches off the low-level path. Train with several images per replica.

    Args:
        filters: int. Output channels.
        low_kernel_size: int. Kernel of the low-level reduction conv: 3 (paper) or 1.
        global_pooling: bool. Whether to gate the low-level features (Table 3 "GP").
        upsample_ratio: int or "half_pixel". stride(high) / stride(low), see above (2 by
            default); "half_pixel" is a plain `tf.image.resize`, not aligned to the backbone.
        synchronized, norm_momentum, norm_epsilon: the BatchNorm settings of every conv + BN,
            as `ConvNormAct`'s.

    Example:

    >>> gau = GlobalAttentionUpsample(64, upsample_ratio=2)
    >>> tuple(gau([keras.ops.ones((2, 65, 65, 32)), keras.ops.ones((2, 33, 33, 128))]).shape)
    (2, 65, 65, 64)

    Reference:
        Li et al., "Pyramid Attention Network for Semantic Segmentation", BMVC 2018.
    """

    def __init__(
        self,
        filters,
        low_kernel_size=3,
        global_pooling=True,
        upsample_ratio=2,
        synchronized=False,
        norm_momentum=defaults.BN_MOMENTUM,
        norm_epsilon=defaults.BN_EPSILON,
        **kwargs,
    ):
        super().__init__(**kwargs)
        _validation.positive_int("filters", filters)
        _validation.positive_int("low_kernel_size", low_kernel_size)
        _validation.odd_int("low_kernel_size", low_kernel_size)
        _upsample_ratio("upsample_ratio", upsample_ratio)
        self.filters = filters
        self.low_kernel_size = low_kernel_size
        self.global_pooling = bool(global_pooling)
        self.upsample_ratio = upsample_ratio
        self._unit = store_norm_settings(self, synchronized, norm_momentum, norm_epsilon)
        self.low_conv = ConvNormAct(
            filters, low_kernel_size, activation=None, name="low_conv", **self._unit
        )
        if self.global_pooling:
            self.gate_pool = keras.layers.GlobalAveragePooling2D(
                keepdims=True, dtype=self.dtype_policy, name="gate_pool"
            )
            self.gate_conv = ConvNormAct(filters, 1, name="gate_conv", **self._unit)
        else:
            self.gate_pool = self.gate_conv = None
        self.high_proj = None
        self.resize = _aligned_resize(upsample_ratio, self.dtype_policy, "high_up")
        self.out_act = keras.layers.ReLU(dtype=self.dtype_policy, name="out_relu")

    def build(self, input_shape):
        if not isinstance(input_shape, (list, tuple)) or len(input_shape) != 2:
            raise ValueError(
                f"GlobalAttentionUpsample takes [low, high]. Received: input_shape={input_shape}"
            )
        low_shape, high_shape = input_shape
        high_channels = high_shape[-1]
        self.low_conv.build(low_shape)
        if self.gate_conv is not None:
            self.gate_conv.build((high_shape[0], 1, 1, high_channels))
        if high_channels != self.filters:
            self.high_proj = ConvNormAct(
                self.filters, 1, activation=None, name="high_proj", **self._unit
            )
            self.high_proj.build(high_shape)

    def call(self, inputs, training=None):
        low, high = inputs
        x = self.low_conv(low, training=training)
        if self.gate_conv is not None:
            x = ops.multiply(x, self.gate_conv(self.gate_pool(high), training=training))
        if self.high_proj is not None:
            high = self.high_proj(high, training=training)
        return self.out_act(ops.add(x, self.resize([high, low])))

    def compute_output_shape(self, input_shape):
        return (*input_shape[0][:3], self.filters)

    def get_config(self):
        return {
            **super().get_config(),
            "filters": self.filters,
            "low_kernel_size": self.low_kernel_size,
            "global_pooling": self.global_pooling,
            "upsample_ratio": self.upsample_ratio,
            **norm_config(self),
        }

    @classmethod
    def from_config(cls, config):
        # Saved before the ratio existed: keep the half-pixel resize the weights were trained
        # with.
        return cls(**{"upsample_ratio": "half_pixel", **config})
