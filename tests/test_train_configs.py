"""train_configs/: every YAML loads, is named by its geometry, cites its source, and holds the
papers' numbers (one source of truth for them)."""

import glob
import os
import re

import pytest

from deeplab_family.config import load_config
from deeplab_family.models.registry import head_config
from deeplab_family.weights.source import Architecture, check_architecture

CONFIG_DIR = os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))),
                          "train_configs")
CONFIGS = sorted(glob.glob(os.path.join(CONFIG_DIR, "*.yaml")))
NAME = re.compile(r"^(tiny_)?(?P<model>[a-z0-9_]+?)_(?P<backbone>r101deep|r101|x101)?_?"
                  r"os(?P<os>8|16|32)_(?P<dataset>[a-z_]+)(_t3r\d[a-z_]*)?\.yaml$")


def _load(name):
    return load_config(os.path.join(CONFIG_DIR, name))


@pytest.mark.parametrize("path", CONFIGS, ids=os.path.basename)
def test_config_loads_is_named_by_its_geometry_and_cites_its_source(path):
    config = load_config(path)
    head_config(config.model)  # the head options are valid for the model
    name = os.path.basename(path)
    match = NAME.match(name)
    assert match, f"{name} is not {{model}}_{{backbone}}_os{{N}}_{{dataset}}.yaml"
    assert int(match["os"]) == config.model.backbone.output_stride
    assert name.replace("tiny_", "").startswith(config.model.name)
    with open(path) as f:
        header = f.read().split("\n\n")[0]
    assert header.startswith("#") and (re.search(r"Sec|Table|Appendix", header)
                                       or name.startswith("tiny_"))
    if config.model.name == "exfuse" and config.model.head.get("ecre") in ("ecre",):
        assert config.training.aux_loss_weights == {"aux_ecre": 1.0}
    else:
        assert config.training.aux_loss_weights == {}


# The published files the paper configs name, as each format's reader describes them
# (deeplab_family/weights/*.py): ResNet-101 everywhere, the widths of ResNet or ResNeXt 32x4d.
_R101 = dict(stage_depths=(3, 4, 23, 3), stage_channels=(256, 512, 1024, 2048), stem_width=64)
PUBLISHED = {
    # keras.applications: Caffe's layout, BGR mean inputs.
    "resnet101_weights_tf_dim_ordering_tf_kernels_notop.h5": Architecture(
        **_R101, stage_widths=(64, 128, 256, 512), stem="standard", groups=1,
        stride_in_1x1=True, stride_unit="first", preprocessing=("caffe",)),
    # research/deeplab resnet_v1_101_beta: slim's layout, the deep stem, its RGB mean.
    "resnet_v1_101_2018_05_04/model.ckpt": Architecture(
        **_R101, stage_widths=(64, 128, 256, 512), stem="deep", groups=1,
        stride_in_1x1=False, stride_unit="last", preprocessing=("deeplab", "slim")),
    # timm resnext101_32x4d: stride on the grouped 3x3, RGB mean/std.
    "resnext101_32x4d.gluon_in1k/model.safetensors": Architecture(
        **_R101, stage_widths=(128, 256, 512, 1024), stem="standard", groups=32,
        stride_in_1x1=False, stride_unit="first", preprocessing=("torch",)),
}


@pytest.mark.parametrize("path", CONFIGS, ids=os.path.basename)
def test_paper_configs_name_their_weights(path):
    """A full-size backbone names its ImageNet file and is set up so that the importer's own
    architecture check accepts that file, or (ExFuse's Layer Rearrangement, no public file)
    starts from training.init_checkpoint, which its header explains; runs from random weights
    are asked for explicitly."""
    config = load_config(path)
    model = config.model
    if tuple(model.backbone.stage_channels) != (256, 512, 1024, 2048):
        assert os.path.basename(path).startswith("tiny_") and model.random_init
        return
    assert not model.random_init
    with open(path) as f:
        text = f.read()
    if model.backbone_weights is None:
        assert config.training.init_checkpoint or (
            model.name == "exfuse" and model.head.get("lr") and "training.init_checkpoint" in text
        ), path
        return
    published = next(k for k in PUBLISHED if model.backbone_weights.endswith(k))
    check_architecture(model.backbone, PUBLISHED[published], model.backbone_weights)


# DeepLabv3 Sec 4.3 and ExFuse Sec 4.2: "bicycle, chair, table, pottedplant, and sofa".
HARD_CLASSES = ["bicycle", "chair", "diningtable", "pottedplant", "sofa"]


def test_deeplabv3_protocol():
    stage1 = _load("deeplabv3_r101_os16_voc_trainaug.yaml")
    assert stage1.model.backbone.depth == 101 and stage1.model.backbone.multi_grid == (1, 2, 4)
    assert stage1.model.head == {"image_pooling": True, "aspp_filters": 256}
    assert stage1.train_data.crop_size == (513, 513) and stage1.train_data.batch_size == 16
    assert (stage1.train_data.min_scale, stage1.train_data.max_scale) == (0.5, 2.0)
    t = stage1.training
    assert (t.learning_rate, t.steps, t.poly_power, t.momentum, t.weight_decay) == (
        0.007, 30000, 0.9, 0.9, 1e-4)
    assert stage1.model.backbone.norm_momentum == 0.9997 and not t.freeze_bn
    assert stage1.evaluation.output_stride == 8 and stage1.evaluation.flip
    assert stage1.evaluation.scales == (0.5, 0.75, 1.0, 1.25, 1.5, 1.75)

    stage2 = _load("deeplabv3_r101_os8_voc_trainval.yaml")
    assert stage2.model.backbone.output_stride == 8 and stage2.training.freeze_bn
    assert stage2.training.learning_rate == 0.001 and stage2.training.steps == 30000
    assert "trainval" in stage2.train_data.file_pattern and stage2.training.init_checkpoint
    # Sec 4.3's bootstrapping: images with the five hard classes read twice.
    assert stage2.train_data.oversample == {"classes": HARD_CLASSES, "factor": 2}

    # Sec 4.2: COCO pre-training with stage 1's model and protocol, evaluated on VOC.
    coco = _load("deeplabv3_r101_os16_coco.yaml")
    assert coco.model == stage1.model and coco.training == stage1.training
    assert "coco/train2017" in coco.train_data.file_pattern
    assert coco.eval_data == stage1.eval_data

    cascade = _load("deeplabv3_cascade_r101_os16_voc_trainaug.yaml")
    assert cascade.model.backbone.cascade_blocks == 3
    assert cascade.model.backbone.multi_grid == (1, 2, 1)

    city = _load("deeplabv3_r101_os16_cityscapes.yaml")
    assert city.train_data.crop_size == (769, 769) and city.training.steps == 90000
    assert city.model.num_classes == 19 and city.evaluation.dataset == "cityscapes"


def test_pan_protocol():
    voc = _load("pan_r101deep_os16_voc_trainaug.yaml")
    assert voc.model.backbone.stem == "deep" and voc.model.backbone.output_stride == 16
    assert voc.training.learning_rate == 0.004 and voc.train_data.batch_size == 16
    assert voc.training.weight_decay == 1e-4 and voc.train_data.crop_size == (512, 512)
    # "random scaling between 0.5 and 2" (Sec 4): continuous, not research/deeplab's steps.
    for name in ("pan_r101deep_os16_voc_trainaug.yaml", "pan_r101deep_os16_cityscapes.yaml"):
        data = _load(name).train_data
        assert (data.min_scale, data.max_scale, data.scale_step) == (0.5, 2.0, 0.0)
    assert _load("pan_r101deep_os16_cityscapes.yaml").train_data.crop_size == (768, 768)


def test_exfuse_table3_rows():
    rows = {
        "gcn_x101_os32_voc_trainaug.yaml": None,
        "exfuse_x101_os32_voc_trainaug_t3r2_ss.yaml": (True, False, False, "off", False),
        "exfuse_x101_os32_voc_trainaug_t3r3_ss_lr.yaml": (True, True, False, "off", False),
        "exfuse_x101_os32_voc_trainaug_t3r4_ss_lr_ecre.yaml": (True, True, False, "ecre", False),
        "exfuse_x101_os32_voc_trainaug_t3r5_ss_lr_seb.yaml": (True, True, True, "off", False),
        "exfuse_x101_os32_voc_trainaug_t3r6_ss_lr_seb_dap.yaml": (True, True, True, "off", True),
        "exfuse_x101_os32_voc_trainaug.yaml": (True, True, True, "ecre", True),
    }
    for name, switches in rows.items():
        config = _load(name)
        assert config.model.backbone.groups == 32 and config.train_data.crop_size == (512, 512)
        if switches is None:
            assert config.model.name == "gcn"
            continue
        head = head_config(config.model)
        assert (head.ss, head.lr, head.seb, head.ecre, head.dap) == switches, name


def test_exfuse_coco_stages_and_test_set_fine_tune():
    """ExFuse Sec 4.2: stage 1 mixes COCO, SBD and VOC (every image alike: no weights); the
    test-set fine-tune freezes BN on trainval and duplicates the hard-class images."""
    full = _load("exfuse_x101_os32_voc_trainaug.yaml")
    stage1 = _load("exfuse_x101_os32_coco_sbd_voc.yaml")
    assert stage1.model == full.model and stage1.train_data.file_pattern == ""
    assert [(p.split("/")[-1], w) for p, w in stage1.train_data.source_list] == [
        ("train2017-*.tfrecord", None), ("train_aug-*.tfrecord", None)]
    assert stage1.train_data.crop_size == full.train_data.crop_size  # "crop size unchanged"
    test = _load("exfuse_x101_os32_voc_trainval.yaml")
    assert test.model == full.model and test.training.freeze_bn
    assert "trainval" in test.train_data.file_pattern and test.training.init_checkpoint
    assert test.train_data.oversample == {"classes": HARD_CLASSES, "factor": 2}
    from deeplab_family.data.spec import load_spec

    assert load_spec("voc").class_ids(HARD_CLASSES) == [2, 9, 11, 16, 18]


@pytest.mark.parametrize("path", [p for p in CONFIGS if "_voc_" in os.path.basename(p)],
                         ids=os.path.basename)
def test_voc_configs_evaluate_on_the_padded_crop_of_their_paper(path):
    # DeepLabv3 Sec 4.1: "crop size to be 513 during both training and test on PASCAL VOC
    # 2012"; PAN Sec 4.1 and ExFuse/GCN: 512x512. Native size stays an option (null).
    expected = {"deeplabv3": (513, 513), "pan": (512, 512), "gcn": (512, 512),
                "exfuse": (512, 512)}
    config = load_config(path)
    name = config.model.name.replace("_cascade", "")
    assert config.eval_data.eval_crop_size == expected[name]
    assert config.train_data.crop_size == expected[name]
    native = load_config(path, ["eval_data.eval_crop_size=null"])
    assert native.eval_data.eval_crop_size is None
