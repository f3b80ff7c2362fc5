"""`exfuse`: the GCN baseline plus ExFuse's five components (Zhang et al., ECCV 2018, Sec 3,
Fig 2), each a switch, in any combination (Table 3 rows 1-7); and the Semantic Supervision
classifier for the backbone's ImageNet pre-training (Sec 3.1, Fig 3, Table 2).

The paper's fully-equipped model (Table 3 #7, the head defaults), as YAML:

```yaml
model:
  name: exfuse
  num_classes: 21
  backbone: {depth: 101, groups: 32, width_per_group: 4}   # ResNeXt-101 32x4d, stride 32
  head: {ss: true, lr: true, seb: true, ecre: ecre, dap: true}
```

The training loop supervises "aux_ecre" (present with `ecre: ecre` or `deconv_supervised`)
with the same segmentation loss as "logits"; the paper gives no weight for it.

Ablation rows (tests/models/test_gcn_exfuse.py lists them all):

- Table 3: #1 all off (= `gcn`), #2 `ss`, #3 `ss, lr`, #4 `ss, lr, ecre`, #5 `ss, lr, seb`,
  #6 `ss, lr, seb, dap`, #7 all five.
- Table 4 (on #3): `ecre: off | deconv_supervised | subpixel | ecre`.
- Table 5 (on #5): baseline, `wide_decoder: true` (189 channels, no DAP), `dap: true`.
- Table 6: `feature_levels` with all five switches.
"""

import dataclasses

import keras
from keras import ops

from deeplab_family import _validation
from deeplab_family.backbones import BackboneConfig, build_backbone
from deeplab_family.backbones.presets import LR_STAGE_DEPTHS
from deeplab_family.layers import (
    DenselyAdjacentPrediction,
    SemanticEmbeddingBranch,
    SemanticSupervision,
)
from deeplab_family.layers.exfuse import DAP_BORDERS
from deeplab_family.models.common import full_resolution, image_input
from deeplab_family.models.gcn import LEVEL_KEYS, decoder_options, gcn_decoder
from deeplab_family.models.registry import register_model

ECRE_MODES = ("off", "deconv_supervised", "subpixel", "ecre")  # ExFuse Table 4 rows 1-4
SEB_LEVELS = (1, 2, 3)  # Sec 3.1: "We use the component for features of Level 1-3"


@dataclasses.dataclass(frozen=True)
class ExFuseHead:
    """Head options of `exfuse`. The defaults are the fully-equipped model (Table 3 #7).

    Args:
        feature_levels, kernel_size, deconv_kernel_size: as `GCNHead` (Table 6 varies
            `feature_levels`).
        ss: Semantic Supervision (Sec 3.1, Fig 3). Each used stage output passes through a
            `SemanticSupervision` block (two 3x3 conv + BN + ReLU, no classifier) and the
            decoder takes the *second conv's output* (Sec 3.1: +1.5% against +1.1% for the
            stage output itself). The blocks' auxiliary classifiers exist only in the
            pre-training model (`build_ss_pretraining_classifier`), whose weights
            `transfer_ss_pretraining_weights` copies into this model. All four stages get a
            block: "attached to the tail of each stage" (Sec 3.1).
        ss_filters: channels of the SS convs (not given by the paper; 256, see
            `SemanticSupervision`).
        lr: Layer Rearrangement (Sec 3.1). True replaces `config.backbone.stage_depths` by
            `lr_stage_depths` and keeps every other backbone field (widths, cardinality,
            channels, stem, output stride, ...). With ResNeXt-101 32x4d this is exactly the
            `resnext101_32x4d_lr` preset, whose FLOP-matched widths are the original ones
            (`presets.layer_rearranged_widths`: a bottleneck unit costs the same at every
            stage, so moving units keeps the MACs). `multi_grid`, if set, must then have one
            rate per unit of the rearranged last stage.
        lr_stage_depths: the rearranged units per stage ({8, 8, 9, 8}, Sec 3.1).
        seb: Semantic Embedding Branch (Sec 3.1, Eq 2, Fig 4) on levels 1-3: the level's
            feature is multiplied by the upsampled 3x3 convs of *every* higher level's
            feature (level 1 by levels 2, 3 and 4), before its GCN block. "Feature" is what
            the decoder takes from each stage: the backbone output, or the SS block's output
            with `ss` (the SS blocks are part of the pre-trained encoder).
        ecre: Explicit Channel Resolution Embedding (Sec 3.2, Fig 5), Table 4's four rows:
            "off": the top level's first x2 step is a deconvolution (baseline);
            "deconv_supervised": the same, plus the auxiliary output "aux_ecre" on it (#2);
            "subpixel": the top level's GCN outputs 4x the decoder channels and the step is a
            parameter-free `SubPixelUpsample` (depth to space), no auxiliary output (#3);
            "ecre": sub-pixel plus "aux_ecre" (#4, Fig 5).
            `True`/`False` mean "ecre"/"off". "aux_ecre" is the map after that first x2 step
            (num_classes channels; with `dap`, the parameter-free DAP of it; with
            `wide_decoder`, a 1x1 conv of it), bilinearly resized to the input size, float32.
        dap: Densely Adjacent Prediction (Sec 3.2, Eq 3, Fig 6): every GCN, deconvolution and
            BR of the decoder carries num_classes * k * k channels (189 for 21 classes and
            k = 3; 4x that on the top level with sub-pixel ECRE), and DAP turns the final
            map into num_classes scores.
        dap_kernel_size: DAP's window k (3).
        dap_border: "zero" or "average" (`layers.exfuse.DAP_BORDERS`), see
            `DenselyAdjacentPrediction`.
        wide_decoder: Table 5 #2, "Baseline (more channels)": the decoder channels of `dap`
            without DAP; a 1x1 conv (with bias) maps the final map to num_classes scores.
            Cannot be combined with `dap`.

    Reference:
        Zhang et al., "ExFuse: Enhancing Feature Fusion for Semantic Segmentation", ECCV 2018.
    """

    feature_levels: tuple[int, ...] = (1, 2, 3, 4)
    kernel_size: int = 15
    deconv_kernel_size: int = 4
    ss: bool = True
    ss_filters: int = 256
    lr: bool = True
    lr_stage_depths: tuple[int, ...] = LR_STAGE_DEPTHS
    seb: bool = True
    ecre: str = "ecre"
    dap: bool = True
    dap_kernel_size: int = 3
    dap_border: str = "zero"
    wide_decoder: bool = False

    def __post_init__(self):
        levels = decoder_options(self.feature_levels, self.kernel_size, self.deconv_kernel_size)
        object.__setattr__(self, "feature_levels", levels)
        _validation.positive_int("ss_filters", self.ss_filters)
        _validation.odd_int("dap_kernel_size", self.dap_kernel_size)
        for name in ("ss", "lr", "seb", "dap", "wide_decoder"):
            _validation.boolean(name, getattr(self, name))
        ecre = self.ecre
        if isinstance(ecre, bool):
            ecre = "ecre" if ecre else "off"
        _validation.explained(
            _validation.one_of, "ecre", ecre,
            f"ecre must be one of {list(ECRE_MODES)} (or a bool: true = 'ecre').",
            allowed=ECRE_MODES,
        )
        object.__setattr__(self, "ecre", ecre)
        depths = _validation.explained(
            _validation.int_tuple, "lr_stage_depths", self.lr_stage_depths,
            "lr_stage_depths must be 4 ints >= 1 (res2..res5).", length=4, minimum=1,
        )
        object.__setattr__(self, "lr_stage_depths", depths)
        _validation.one_of("dap_border", self.dap_border, DAP_BORDERS)
        _validation.require(
            not (self.dap and self.wide_decoder),
            "wide_decoder is Table 5's control without DAP; it cannot be combined with dap=True "
            "(which already uses the wide decoder).",
        )

    @property
    def supervised_ecre(self):
        return self.ecre in ("deconv_supervised", "ecre")


def exfuse_backbone_config(backbone, head):
    """The backbone an `exfuse` model builds: `backbone` with `lr` applied."""
    if not head.lr:
        return backbone
    try:
        return backbone.replace(stage_depths=head.lr_stage_depths)
    except ValueError as err:
        raise ValueError(
            f"model.head.lr=True rearranges the backbone to stage_depths="
            f"{head.lr_stage_depths}, which the backbone config rejects: {err}"
        ) from err


def _ss_block(filters, bb, name, dtype, num_classes=None):
    return SemanticSupervision(
        filters,
        num_classes=num_classes,
        synchronized=bb.synchronized_bn,
        norm_momentum=bb.norm_momentum,
        norm_epsilon=bb.norm_epsilon,
        dtype=dtype,
        name=name,
    )


@register_model("exfuse", ExFuseHead)
def build_exfuse(config, head, dtype=None):
    """Builds ExFuse (Fig 2) with the components `head` switches on."""
    bb = exfuse_backbone_config(config.backbone, head)
    images = image_input()
    backbone = build_backbone(bb, dtype=dtype, name="backbone")
    features = backbone(images)

    levels = head.feature_levels
    used = set(levels)
    if head.seb:  # SEB feeds every higher level's feature, selected or not (Eq 2: x_l..x_L)
        used |= {h for level in levels if level in SEB_LEVELS for h in range(level + 1, 5)}
    x = {}
    for level in sorted(used):
        key = LEVEL_KEYS[level]
        x[level] = (
            _ss_block(head.ss_filters, bb, f"ss_{key}", dtype)(features[key])
            if head.ss
            else features[key]
        )

    level_inputs = {}
    for level in levels:
        if head.seb and level in SEB_LEVELS:
            highs = [x[h] for h in range(level + 1, 5)]
            # Each gate resized stride-exactly from its level's stride to this one's.
            strides = backbone.feature_strides
            ratios = [
                strides[LEVEL_KEYS[h]] // strides[LEVEL_KEYS[level]] for h in range(level + 1, 5)
            ]
            level_inputs[level] = SemanticEmbeddingBranch(
                upsample_ratios=ratios, dtype=dtype, name=f"seb_{LEVEL_KEYS[level]}"
            )([x[level], *highs])
        else:
            level_inputs[level] = x[level]

    groups = head.dap_kernel_size**2
    channels = config.num_classes * (groups if head.dap or head.wide_decoder else 1)
    decoded, first_up = gcn_decoder(
        images,
        features,
        backbone.feature_strides,
        level_inputs,
        channels,
        kernel_size=head.kernel_size,
        deconv_kernel_size=head.deconv_kernel_size,
        first_upsample="subpixel" if head.ecre in ("subpixel", "ecre") else "deconv",
        dtype=dtype,
    )

    def classify(y, name):
        """Decoder channels -> num_classes scores."""
        if head.dap:
            # Parameter-free, so on the ECRE branch the supervision stays "explicit" (Sec 3.2).
            return DenselyAdjacentPrediction(
                head.dap_kernel_size, border=head.dap_border, dtype=dtype, name=f"{name}_dap"
            )(y)
        if head.wide_decoder:
            return keras.layers.Conv2D(
                config.num_classes, 1, dtype=dtype, name=f"{name}_classifier"
            )(y)
        return y

    outputs = {
        "logits": full_resolution(
            classify(decoded, "head"), images, name="logits", dtype=dtype, stride=1
        )
    }
    if head.supervised_ecre:
        # first_up is the top level's x2 step, aligned to the level below it (or, from res2,
        # the uncropped 1/2 map): that level's stride.
        top = max(head.feature_levels)
        ecre_stride = backbone.feature_strides[LEVEL_KEYS[top - 1]] if top > 1 else 2
        outputs["aux_ecre"] = full_resolution(
            classify(first_up, "aux_ecre"), images, name="aux_ecre", dtype=dtype,
            stride=ecre_stride,
        )
    return keras.Model(images, outputs, name="exfuse")


# --------------------------------------------------------------------------------------------
# Semantic Supervision pre-training (Sec 3.1, Fig 3, Table 2)

SS_STAGES = ("res2", "res3", "res4", "res5")


def _aux_weights(value):
    if isinstance(value, dict):
        unknown = sorted(set(value) - set(SS_STAGES))
        if unknown:
            raise ValueError(f"aux_weights keys must be in {list(SS_STAGES)}. Received: {unknown}")
        value = [value.get(k, 0.0) for k in SS_STAGES]
    elif isinstance(value, (int, float)) and not isinstance(value, bool):
        value = [value] * len(SS_STAGES)
    value = [float(v) for v in value]
    if len(value) != len(SS_STAGES) or any(v < 0 for v in value):
        raise ValueError(
            f"aux_weights must be a float >= 0, 4 of them (res2..res5) or a dict. "
            f"Received: aux_weights={value!r}"
        )
    return tuple(value)


@keras.saving.register_keras_serializable(package="deeplab_family")
class SSPretrainingClassifier(keras.Model):
    """The backbone classifier with Semantic Supervision heads, for ImageNet pre-training.

    images -> backbone -> global average pool of res5 -> Dense: "logits" (the main
    classifier); and on each stage's output a `SemanticSupervision` block (two 3x3 conv + BN +
    ReLU -> global average pool -> Dense): "aux_res2" .. "aux_res5". All logits are float32.
    The training loss is the main cross-entropy plus the weighted sum of the auxiliary ones
    (Sec 3.1: "The overall classification loss equals to a weighted summation of all
    auxiliary branches"): `weighted_loss`, or `model.compile(loss=..., loss_weights=
    model.loss_weights_dict)`. After pre-training, `transfer_ss_pretraining_weights` copies
    the backbone and the SS convs into an `exfuse` model built with `ss: true` and the same
    backbone; the classifiers are dropped.

    The paper gives no auxiliary weights. The default 0.3 is GoogLeNet's (which Sec 3.1 cites
    as the source of the idea), so the four auxiliaries together weigh 1.2x the main loss.

    Args:
        backbone_config: a `BackboneConfig` (or dict); build it with the same `lr` depths as
            the segmentation model it is for. The output stride does not matter for the
            weights; ImageNet classification uses 32.
        num_classes: classes of every classifier (1000 for ImageNet).
        aux_weights: float (every stage), 4 floats (res2..res5) or {"res2": w, ...}.
        ss_filters: channels of the SS convs; must match the segmentation model's.
        dtype: dtype policy of the layers; the logits stay float32.

    Example:

    A small ResNet here, so that it runs in a second (`BackboneConfig(depth=101, groups=32,
    width_per_group=4)` is the paper's ResNeXt-101):

    >>> small = BackboneConfig(stage_depths=(1, 1, 1, 1), stage_widths=(8, 8, 16, 16),
    ...                        stage_channels=(16, 32, 32, 64), stem_width=8)
    >>> model = build_ss_pretraining_classifier(small, num_classes=1000)
    >>> outputs = model(keras.ops.zeros((2, 64, 64, 3)))
    >>> sorted(outputs)
    ['aux_res2', 'aux_res3', 'aux_res4', 'aux_res5', 'logits']
    >>> loss = model.weighted_loss(keras.ops.array([3, 7]), outputs)  # one class id per image
    >>> tuple(loss.shape), tuple(outputs["logits"].shape)
    ((), (2, 1000))
    """

    def __init__(
        self,
        backbone_config=None,
        num_classes=1000,
        aux_weights=0.3,
        ss_filters=256,
        dtype=None,
        **kwargs,
    ):
        bb = BackboneConfig.from_dict(backbone_config or BackboneConfig())
        aux = _aux_weights(aux_weights)
        images = image_input()
        features = build_backbone(bb, dtype=dtype, name="backbone")(images)

        def as_float32(x, name):
            return keras.layers.Activation("linear", dtype="float32", name=name)(x)

        pooled = keras.layers.GlobalAveragePooling2D(dtype=dtype, name="pool")(features["res5"])
        outputs = {
            "logits": as_float32(
                keras.layers.Dense(num_classes, dtype=dtype, name="classifier")(pooled), "logits"
            )
        }
        for key in SS_STAGES:
            ss = _ss_block(ss_filters, bb, f"ss_{key}", dtype, num_classes=num_classes)
            outputs[f"aux_{key}"] = as_float32(ss(features[key])["logits"], f"aux_{key}")
        kwargs.setdefault("name", "ss_pretraining_classifier")
        super().__init__(inputs=images, outputs=outputs, **kwargs)
        self.backbone_config = bb
        self.num_classes = num_classes
        self.aux_weights = aux
        self.ss_filters = ss_filters
        self.layer_dtype = keras.dtype_policies.get(dtype).name if dtype is not None else None

    @property
    def loss_weights_dict(self):
        """{"logits": 1.0, "aux_res2": w2, ...}, for `compile(loss_weights=...)`."""
        return {"logits": 1.0, **{f"aux_{k}": w for k, w in zip(SS_STAGES, self.aux_weights)}}

    def weighted_loss(self, labels, outputs):
        """Mean sparse cross-entropy of "logits" plus the weighted auxiliary ones (a scalar).

        Args:
            labels: int class ids, shape (batch,).
            outputs: this model's output dict.
        """
        total = 0.0
        for name, weight in self.loss_weights_dict.items():
            if weight:
                ce = keras.losses.sparse_categorical_crossentropy(
                    labels, outputs[name], from_logits=True
                )
                total = total + weight * ops.mean(ce)
        return total

    def get_config(self):
        return {
            "name": self.name,
            "trainable": self.trainable,
            "backbone_config": self.backbone_config.to_dict(),
            "num_classes": self.num_classes,
            "aux_weights": list(self.aux_weights),
            "ss_filters": self.ss_filters,
            "dtype": self.layer_dtype,
        }

    @classmethod
    def from_config(cls, config, custom_objects=None):
        return cls(**config)


def build_ss_pretraining_classifier(
    backbone_config, num_classes=1000, aux_weights=0.3, ss_filters=256, dtype=None
):
    """Builds the SS pre-training classifier (ExFuse Sec 3.1, Fig 3); see
    `SSPretrainingClassifier`. For an `exfuse` model with `lr: true`, pass
    `exfuse_backbone_config(backbone, head)` so that the rearranged backbone is pre-trained."""
    return SSPretrainingClassifier(
        backbone_config,
        num_classes=num_classes,
        aux_weights=aux_weights,
        ss_filters=ss_filters,
        dtype=dtype,
    )


def transfer_ss_pretraining_weights(classifier, model):
    """Copies the backbone and the SS blocks' convs of a pre-trained `classifier` into an
    `exfuse` `model` built with `ss: true` (the classifiers are dropped, Sec 3.1).

    Raises `ValueError` if the backbones differ (e.g. `lr` in one and not the other).
    """
    source, target = classifier.get_layer("backbone"), model.get_layer("backbone")
    if [tuple(w.shape) for w in source.weights] != [tuple(w.shape) for w in target.weights]:
        raise ValueError(
            "The classifier's backbone does not match the model's: build the classifier with "
            "exfuse_backbone_config(config.backbone, head) of the model."
        )
    target.set_weights(source.get_weights())
    copied = 0
    for key in SS_STAGES:
        try:
            block = model.get_layer(f"ss_{key}")
        except ValueError:  # this stage's SS block is unused by the model's feature_levels
            continue
        src = classifier.get_layer(f"ss_{key}")
        block.conv1.set_weights(src.conv1.get_weights())
        block.conv2.set_weights(src.conv2.get_weights())
        copied += 1
    if not copied:
        raise ValueError("The model has no Semantic Supervision blocks (build it with ss: true).")
