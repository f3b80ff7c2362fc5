"""Helpers shared by the training, CLI and evaluation tests."""

import os
import socket

from tfrecords_tools import synthetic, voc

REPO = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
TINY_CONFIG = os.path.join(REPO, "train_configs", "tiny_deeplabv3_os16_synthetic.yaml")

# Every registered model at a few thousand weights: the checkpoint and export tests' configs
# (`ModelConfig(name, num_classes, backbone=dict(TINY_BACKBONE), head=TINY_HEADS[name])`).
TINY_BACKBONE = {
    "stage_depths": (1, 1, 1, 1),
    "stage_widths": (8, 8, 8, 8),
    "stage_channels": (16, 16, 16, 16),
    "stem_width": 8,
    "output_stride": 16,
}
TINY_HEADS = {
    "deeplabv3": {"aspp_filters": 8},
    "deeplabv3_cascade": {},
    "pan": {"filters": 8},
    "gcn": {"kernel_size": 3},
    "exfuse": {"kernel_size": 3, "ss_filters": 8, "lr_stage_depths": [1, 1, 1, 1]},
}

# Smaller than the demo's tiny model, for steps that take a fraction of a second.
TEST_OVERRIDES = [
    "model.backbone.stage_widths=[8, 8, 16, 16]",
    "model.backbone.stage_channels=[16, 16, 32, 32]",
    "model.backbone.stem_width=8",
    "model.head.aspp_filters=8",
    "train_data.crop_size=49",
    "train_data.batch_size=4",
    "train_data.shuffle_buffer=16",
    "training.log_every=1",
    "training.image_summary_every=0",
]


def build_synthetic_shards(folder, num_train=16, num_val=6, image_size=(72, 96), seed=0):
    """Synthetic VOC+SBD layout -> train_aug and val shards with the real VOC builder."""
    out = synthetic.generate(folder, num_train=num_train, num_val=num_val, seed=seed,
                             image_size=image_size)
    shard_dir = os.path.join(folder, "tfrecords")
    voc.build(out["voc_root"], ["train_aug", "val"], shard_dir, sbd_root=out["sbd_root"],
              num_workers=1, progress=False)
    return {
        "train": os.path.join(shard_dir, "train_aug-*.tfrecord"),
        "val": os.path.join(shard_dir, "val-*.tfrecord"),
    }


def data_overrides(shards):
    return [f"train_data.file_pattern={shards['train']}", f"eval_data.file_pattern={shards['val']}"]


def tiny_config(shards, *overrides, small=True):
    """The tiny YAML with the test shards (and the test model size unless `small=False`)."""
    from deeplab_family.config import load_config

    base = TEST_OVERRIDES if small else []
    return load_config(TINY_CONFIG, [*base, *data_overrides(shards), *overrides])


def free_port():
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def subprocess_env(**extra):
    """Environment for child Python processes: quiet TF, no GPU probing, the repo importable."""
    env = dict(os.environ)
    env.update(
        TF_CPP_MIN_LOG_LEVEL="2",
        CUDA_VISIBLE_DEVICES="",
        PYTHONPATH=REPO + os.pathsep + env.get("PYTHONPATH", ""),
        PYTHONUNBUFFERED="1",
    )
    env.update(extra)
    return env
