"""The training loop in process: checkpoints, resume, summaries, NaN stop, interrupted writes."""

import glob
import io
import os
import re

import numpy as np
import pytest
import tensorflow as tf

from deeplab_family import train as train_cli
from deeplab_family.config import load_config
from deeplab_family.progress import ProgressBar
from deeplab_family.training import checkpoints, loop, strategies
from tests.training.helpers import TEST_OVERRIDES, TINY_CONFIG, data_overrides, tiny_config

ONE_DEVICE = "runtime.strategy=one_device"


def _ckpt_steps(model_dir):
    index = glob.glob(os.path.join(checkpoints.checkpoint_dir(model_dir), "ckpt-*.index"))
    return sorted(int(os.path.basename(p)[5:-6]) for p in index)


def _tags(model_dir):
    tags = set()
    for path in glob.glob(os.path.join(model_dir, loop.SUMMARY_SUBDIR, "events.*")):
        for event in tf.compat.v1.train.summary_iterator(path):
            tags.update(v.tag for v in event.summary.value)
    return tags


def _momentums(trainer):
    return [np.asarray(v) for v in trainer.optimizer.variables if "momentum" in v.path]


def test_train_checkpoints_summaries_and_resume(shards, model_dir):
    config = tiny_config(shards, ONE_DEVICE, "training.steps=4", "training.checkpoint_every=2",
                         "training.keep_checkpoints=2", "training.image_summary_every=2",
                         "training.log_every=2")
    out = io.StringIO()
    result = loop.train(config, model_dir, stream=out)
    assert result["step"] == 4 and result["steps_run"] == 4 and np.isfinite(result["loss"])
    assert _ckpt_steps(model_dir) == [2, 4]
    assert "step 4/4" in out.getvalue() and "img/s" in out.getvalue()
    saved = load_config(os.path.join(model_dir, "config.yaml"))
    assert saved.training.sync_bn is False and saved.model == result["trainer"].model_config
    assert {"loss/loss", "loss/cross_entropy", "loss/weight_decay", "learning_rate",
            "images/input", "images/ground_truth", "images/prediction"} <= _tags(model_dir)

    # Resuming restores the step (so the learning rate) and the optimizer slots.
    longer = tiny_config(shards, ONE_DEVICE, "training.steps=6", "training.checkpoint_every=2",
                         "training.keep_checkpoints=2")
    strategy = tf.distribute.OneDeviceStrategy("/cpu:0")
    fresh = loop.Trainer(longer, strategy)
    assert loop._restore(fresh, model_dir, ProgressBar(6, stream=io.StringIO())) == 4
    assert int(fresh.step.numpy()) == 4
    for got, want in zip(_momentums(fresh), _momentums(result["trainer"])):
        np.testing.assert_array_equal(got, want)
    assert np.abs(_momentums(fresh)[0]).max() > 0
    out = io.StringIO()
    resumed = loop.train(longer, model_dir, stream=out)
    assert "resumed from" in out.getvalue() and "ckpt-4 at step 4" in out.getvalue()
    assert resumed["steps_run"] == 2 and resumed["step"] == 6
    assert _ckpt_steps(model_dir) == [4, 6]
    # Nothing left to do: no step runs.
    again = loop.train(longer, model_dir, stream=io.StringIO())
    assert again["steps_run"] == 0


def _cli(shards, model_dir, *overrides):
    """`python -m deeplab_family.train` in this process (its `main`): the exit status."""
    sets = [*TEST_OVERRIDES, *data_overrides(shards), ONE_DEVICE, *overrides]
    return train_cli.main(["--config", TINY_CONFIG, "--model-dir", model_dir,
                           *[a for s in sets for a in ("--set", s)]])


def test_nan_loss_exits_3_and_keeps_the_last_good_checkpoint(shards, model_dir, monkeypatch,
                                                             capsys):
    """NaN images from step 3 on: the loop raises TrainingDiverged before writing anything,
    the command exits with status 3 and ckpt-2 stays the latest."""
    real = loop.make_dataset

    def poisoned(input_config, context=None, training=True):
        ds = real(input_config, context, training=training).enumerate()
        return ds.map(lambda i, b: (tf.where(i >= 2, np.float32(np.nan), b[0]), b[1]))

    monkeypatch.setattr(loop, "make_dataset", poisoned)
    assert _cli(shards, model_dir, "training.steps=6", "training.checkpoint_every=2") == 3
    err = capsys.readouterr().err
    assert re.match(r"error: the loss is nan at step 3 .*The last good checkpoint is \S*ckpt-2\.",
                    err), err
    assert _ckpt_steps(model_dir) == [2]
    assert checkpoints.latest_checkpoint(model_dir).endswith("ckpt-2")


def test_inf_loss_exits_3_and_keeps_the_last_good_checkpoint(shards, model_dir, monkeypatch,
                                                             capsys):
    """An infinite loss is a divergence too (the real step runs; its loss is made +inf)."""
    real_step = loop.Trainer.train_step

    def step(self, images, labels):
        terms = real_step(self, images, labels)
        return {**terms, "loss": float("inf")} if int(self.step.numpy()) == 2 else terms

    monkeypatch.setattr(loop.Trainer, "train_step", step)
    assert _cli(shards, model_dir, "training.steps=3", "training.checkpoint_every=1") == 3
    err = capsys.readouterr().err
    assert re.match(r"error: the loss is inf at step 2 .*The last good checkpoint is \S*ckpt-1\.",
                    err), err
    assert _ckpt_steps(model_dir) == [1]


class _Stop(Exception):
    pass


def _first_batch(config, model_dir, monkeypatch):
    """The images of the first step `loop.train` takes in `model_dir` (it stops before it)."""
    seen = []

    def capture(self, images, labels):
        seen.append(np.asarray(images))
        raise _Stop

    monkeypatch.setattr(loop.Trainer, "train_step", capture)
    with pytest.raises(_Stop):
        loop.train(config, model_dir, stream=io.StringIO())
    monkeypatch.undo()
    return seen[0]


def test_resume_reseeds_the_input_pipeline_from_seed_and_step(shards, tmp_path, monkeypatch):
    """The module's contract: a run resumed at step k draws its data from (seed, k), not the
    epoch start a fresh run replays; the same (seed, k) gives the same batches."""
    config = tiny_config(shards, ONE_DEVICE, "training.steps=10")
    assert config.train_data.deterministic  # the element order is a function of the seed
    fresh = _first_batch(config, str(tmp_path / "fresh"), monkeypatch)

    resumed_dir = str(tmp_path / "resumed")
    trainer = loop.Trainer(config, tf.distribute.OneDeviceStrategy("/cpu:0"))
    trainer.step.assign(3)
    tf.train.CheckpointManager(trainer.checkpoint, checkpoints.checkpoint_dir(resumed_dir),
                               max_to_keep=1).save(checkpoint_number=3)
    resumed = _first_batch(config, resumed_dir, monkeypatch)
    again = _first_batch(config, resumed_dir, monkeypatch)
    other_seed = _first_batch(tiny_config(shards, ONE_DEVICE, "training.steps=10",
                                          "training.seed=4"), resumed_dir, monkeypatch)
    assert fresh.shape == resumed.shape == (4, 49, 49, 3)
    np.testing.assert_array_equal(resumed, again)
    assert not np.array_equal(resumed, fresh)  # not the epoch start again
    assert not np.array_equal(resumed, other_seed)


def test_an_interrupted_checkpoint_write_never_replaces_the_last_good_one(
    shards, model_dir, monkeypatch
):
    config = tiny_config(shards, ONE_DEVICE, "training.steps=4", "training.checkpoint_every=2")
    real_write = tf.train.Checkpoint._write
    crashed = []

    def crash_part_way(self, file_prefix, options=None, **kwargs):
        # Write the files without the state-file callback, cut the data short, then die:
        # what a kill or a full disk in the middle of a save leaves behind.
        path = real_write(self, file_prefix, options=tf.train.CheckpointOptions())
        for data in glob.glob(f"{path}.data-*"):
            with open(data, "r+b") as f:
                f.truncate(max(1, os.path.getsize(data) // 2))
        crashed.append(path)
        raise OSError("simulated crash in the middle of a checkpoint write")

    # Step 2 is saved normally; the save at step 4 crashes part-way.
    calls = {"n": 0}

    def write(self, file_prefix, options=None, **kwargs):
        calls["n"] += 1
        if calls["n"] == 1:
            return real_write(self, file_prefix, options=options, **kwargs)
        return crash_part_way(self, file_prefix, options, **kwargs)

    monkeypatch.setattr(tf.train.Checkpoint, "_write", write)
    with pytest.raises(OSError, match="simulated crash"):
        loop.train(config, model_dir, stream=io.StringIO())
    assert crashed and crashed[0].endswith("ckpt-4")
    assert checkpoints.latest_checkpoint(model_dir).endswith("ckpt-2")
    state = tf.train.get_checkpoint_state(checkpoints.checkpoint_dir(model_dir))
    assert [os.path.basename(p) for p in state.all_model_checkpoint_paths] == ["ckpt-2"]

    # The next run resumes from the good one and overwrites the broken files.
    monkeypatch.setattr(tf.train.Checkpoint, "_write", real_write)
    out = io.StringIO()
    result = loop.train(config, model_dir, stream=out)
    assert "ckpt-2 at step 2" in out.getvalue() and result["steps_run"] == 2
    assert checkpoints.latest_checkpoint(model_dir).endswith("ckpt-4")
    assert int(tf.train.load_variable(checkpoints.latest_checkpoint(model_dir),
                                      "step/.ATTRIBUTES/VARIABLE_VALUE")) == 4


@pytest.fixture
def op_determinism_restored():
    from tensorflow.python.framework import config as tf_config  # no public "disable"

    was = tf_config.is_op_determinism_enabled()
    yield
    if not was:
        tf_config.disable_op_determinism()


def test_same_seed_same_weights(shards, tmp_path, op_determinism_restored):
    weights = []
    for run in ("a", "b"):
        config = tiny_config(shards, ONE_DEVICE, "training.steps=2", "training.deterministic=true",
                             "training.seed=3")
        result = loop.train(config, str(tmp_path / run), stream=io.StringIO())
        weights.append([np.asarray(w) for w in result["trainer"].model.weights])
    for a, b in zip(*weights):
        np.testing.assert_array_equal(a, b)


def test_aux_outputs_need_weights_before_anything_runs(shards, model_dir):
    config = tiny_config(
        shards, ONE_DEVICE, "model.name=exfuse",
        "model.head={kernel_size: 3, ss_filters: 8, lr_stage_depths: [1, 1, 1, 1]}",
        "model.backbone.output_stride=32",
    )
    with pytest.raises(ValueError, match="aux_ecre.*without a loss weight"):
        loop.Trainer(config, tf.distribute.OneDeviceStrategy("/cpu:0"))


def test_batch_must_split_across_replicas(shards):
    config = tiny_config(shards, "train_data.batch_size=3")
    devices = [d.name for d in tf.config.list_logical_devices("CPU")][:2]
    trainer = loop.Trainer(config, strategies.mirrored_strategy(devices))
    with pytest.raises(ValueError, match="batch_size=3 is the global batch.*2 replicas"):
        trainer.distribute_dataset(config.train_data)


def test_fresh_runs_start_from_the_backbone_weights_file(shards, model_dir, tmp_path):
    """`model.backbone_weights`: a keras.applications ResNet-50 file goes through the importer
    into the backbone of a fresh run (and a missing file is a clear error)."""
    from deeplab_family.weights.keras_applications import keras_applications_resnet

    source = keras_applications_resnet(50)
    kernel = source.get_layer("conv1_conv").kernel
    kernel.assign(np.random.default_rng(0).standard_normal(kernel.shape).astype("float32"))
    path = str(tmp_path / "resnet50_notop.weights.h5")
    source.save_weights(path)
    base = [ONE_DEVICE, "model.backbone={depth: 50, output_stride: 16}"]
    strategy = tf.distribute.OneDeviceStrategy("/cpu:0")
    trainer = loop.Trainer(tiny_config(shards, *base, f"model.backbone_weights={path}"), strategy)
    out = io.StringIO()
    assert loop._restore(trainer, model_dir, ProgressBar(1, stream=out)) == 0
    assert "into 53 layers from" in out.getvalue()
    stem = trainer.model.get_layer("backbone").get_layer("stem_conv1").conv.kernel
    np.testing.assert_array_equal(np.asarray(stem), np.asarray(kernel))

    missing = tiny_config(shards, *base, "model.backbone_weights=nowhere/resnet50.h5")
    with pytest.raises(FileNotFoundError, match="nowhere/resnet50.h5 does not exist.*never "
                                                "downloaded"):
        loop._restore(loop.Trainer(missing, strategy), model_dir,
                      ProgressBar(1, stream=io.StringIO()))
