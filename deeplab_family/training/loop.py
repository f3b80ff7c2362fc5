"""One custom training loop for every `tf.distribute` strategy.

`strategy.run` + `strategy.distribute_datasets_from_function`, the same code on one CPU, on the
GPUs of one machine (MirroredStrategy), on many machines (MultiWorkerMirroredStrategy, where
Keras `fit` fails: keras-team/keras#20585) and on TPUs (the strategies: `strategies.py`). What
each step does (DeepLabv3 Sec 4.1,
Appendix A; PAN Sec 4):

- the model's logits are at the input size, and the loss compares them with the untouched
  labels (`training.label_downsampling`: at the logits' own stride instead, Table 8); 255 is
  ignored; the loss is normalised by the valid pixels of the *global* batch, so it
  is the same at any replica count (`losses.py`);
- SGD with momentum and the poly learning rate (`schedules.py`), evaluated at the loop's own
  step counter (it also counts the steps that mixed_float16 skips, so the schedule ends at
  `training.steps` whatever happens);
- BatchNorm statistics synchronised across replicas (`training.sync_bn`, by default on with more
  than one replica), or frozen (`training.freeze_bn`, DeepLabv3's stage 2 at OS8);
- mixed precision: the model is built under the dtype policy (its logits stay float32, so the
  losses are float32); with mixed_float16 a `LossScaleOptimizer` scales the loss.

Around the steps:

- checkpoints (`tf.train.Checkpoint(model, optimizer, step)`, the contract of `checkpoints.py`)
  every `checkpoint_every` steps and at the end, keeping `keep_checkpoints`. Starting again with
  the same model dir resumes from the latest one: same step, learning rate and optimizer slots.
  TensorFlow writes a checkpoint's files first and only then records it in the `checkpoint`
  state file (atomically), so a write cut short leaves the previous checkpoint as the latest.
- data position on resume: not restored exactly (that would put the shuffle buffer, up to
  `shuffle_buffer` decoded images, into every checkpoint). The input pipeline is re-seeded from
  (seed, step), so a resumed run sees a fresh shuffle instead of replaying the epoch's start:
  the same position in expectation.
- a NaN or Inf loss stops training with `TrainingDiverged` before anything else is written; the
  last good checkpoint stays the latest.
- a progress line (loss, lr, images/s, ETA), TensorBoard scalars every `log_every` steps and
  images (input, ground truth, prediction in the VOC palette) every `image_summary_every` steps,
  under `<model_dir>/train`.

Example:

(The last two lines are not run as a doctest: they need the synthetic TFRecords of `make demo`
and minutes of CPU. `tests/training/test_loop.py` runs `train` on small shards.)

>>> from deeplab_family.config import load_config
>>> from deeplab_family.training.loop import train
>>> config = load_config("train_configs/tiny_deeplabv3_os16_synthetic.yaml")
>>> result = train(config, "runs/tiny")  # doctest: +SKIP
>>> result["step"]  # doctest: +SKIP
800
"""

import dataclasses
import math
import os
import shutil
import tempfile
import time

import keras
import numpy as np
import tensorflow as tf

from deeplab_family.config import save_config
from deeplab_family.data import palette
from deeplab_family.data.pipeline import make_dataset
from deeplab_family.data.schema import IGNORE_LABEL
from deeplab_family.data.spec import check_num_classes, experiment_spec, save_spec
from deeplab_family.models import build_model
from deeplab_family.progress import ProgressBar
from deeplab_family.training import checkpoints
from deeplab_family.training.losses import (
    check_aux_weights,
    conv_kernels,
    output_strides,
    replica_losses,
)
from deeplab_family.training.schedules import PolyWithWarmup
from deeplab_family.training.strategies import (
    describe,
    is_multi_worker,
    make_strategy,
    worker_role,
)

SUMMARY_SUBDIR = "train"
MAX_SUMMARY_IMAGES = 3


class TrainingDiverged(RuntimeError):
    """The loss became NaN or Inf; nothing was written after the last good checkpoint."""


def set_global_determinism(seed, deterministic):
    """Seeds Python, NumPy and TensorFlow; optionally makes TensorFlow ops deterministic.

    Global state: called by the training entry points (`train`), never by library code.
    """
    keras.utils.set_random_seed(seed)
    if deterministic:
        tf.config.experimental.enable_op_determinism()


def freeze_batch_norm(model):
    """Makes every BatchNormalization layer non-trainable: moving statistics are used and kept,
    gamma and beta are not updated (DeepLabv3 Sec 4.1, stage 2 at OS8). Returns the count."""
    count = 0
    for layer in model._flatten_layers(include_self=False, recursive=True):
        if isinstance(layer, keras.layers.BatchNormalization):
            layer.trainable = False
            count += 1
    return count


def _mix(seed, step):
    """The input pipeline's seed for a run that starts at `step` (a 31-bit int)."""
    return (int(seed) * 1_000_003 + int(step) * 7_919 + 17) % (1 << 31)


# ----------------------------------------------------------------------------------------------
# The step


class Trainer:
    """The model, optimizer, step counter and distributed train step of one experiment.

    Built under `strategy.scope()`. `train_step(images, labels)` takes distributed values (from
    `distribute_dataset`) and returns the global loss terms as Python floats.

    Args:
        config: `config.ExperimentConfig`.
        strategy: a `tf.distribute.Strategy`.
        spec: the `data.spec.DatasetSpec` of the data, or None: the colours of the TensorBoard
            images (VOC's without one).
    """

    def __init__(self, config, strategy, spec=None):
        self.config = config
        self.strategy = strategy
        self.spec = spec
        training = config.training
        self.num_replicas = strategy.num_replicas_in_sync
        self.sync_bn = (
            training.sync_bn if training.sync_bn is not None else self.num_replicas > 1
        )
        backbone = dataclasses.replace(config.model.backbone, synchronized_bn=self.sync_bn)
        self.model_config = dataclasses.replace(config.model, backbone=backbone)
        policy = training.mixed_precision
        self.policy = None if policy in (None, "float32") else policy
        self.loss_scaling = self.policy == "mixed_float16"
        self.ignore_label = (
            config.train_data.ignore_label if config.train_data else IGNORE_LABEL
        )
        self.schedule = PolyWithWarmup.from_training_config(training)

        with strategy.scope():
            self.model = build_model(self.model_config, dtype=self.policy)
            self.frozen_bn_layers = freeze_batch_norm(self.model) if training.freeze_bn else 0
            self.step = tf.Variable(
                0,
                dtype=tf.int64,
                trainable=False,
                name="step",
                aggregation=tf.VariableAggregation.ONLY_FIRST_REPLICA,
            )
            # The rate follows our step counter, not the optimizer's iterations: those stop
            # counting on the steps that loss scaling skips.
            optimizer = keras.optimizers.SGD(
                learning_rate=lambda: self.schedule(self.step), momentum=training.momentum
            )
            if self.loss_scaling:
                optimizer = keras.optimizers.LossScaleOptimizer(optimizer)
            optimizer.build(self.model.trainable_variables)
            self.optimizer = optimizer
        self.aux_loss_weights = check_aux_weights(self.model.output.keys(),
                                                  training.aux_loss_weights)
        self.kernels = conv_kernels(self.model)
        # DeepLabv3 Table 8 without "UL": each output's loss at its logits' own stride.
        self.label_strides = (
            output_strides(self.model) if training.label_downsampling else None
        )
        self.checkpoint = tf.train.Checkpoint(
            model=self.model, optimizer=self.optimizer, step=self.step
        )
        replica_fn = self._replica_step
        if training.jit_compile:
            devices = " ".join(strategy.extended.worker_devices)
            if self.num_replicas > 1 and "GPU" not in devices and "TPU" not in devices:
                # XLA places the compiled step on one device and cannot reach the variables of
                # the other logical CPUs ("Trying to access resource ... located in device").
                raise ValueError(
                    "training.jit_compile needs GPUs or TPUs when there are several replicas; "
                    "on a CPU use runtime.strategy=one_device (or jit_compile=false)"
                )
            replica_fn = tf.function(replica_fn, jit_compile=True)
        self._replica_fn = replica_fn
        self._train_step = tf.function(self._distributed_step)
        self._predict = tf.function(self._distributed_predict)

    # -- one replica

    def _replica_step(self, images, labels):
        trainable = self.model.trainable_variables
        with tf.GradientTape() as tape:
            outputs = self.model(images, training=True)
            terms = replica_losses(
                outputs,
                labels,
                aux_loss_weights=self.aux_loss_weights,
                weight_decay=self.config.training.weight_decay,
                kernels=self.kernels,
                num_replicas=self.num_replicas,
                ignore_label=self.ignore_label,
                label_strides=self.label_strides,
            )
            loss = terms["loss"]
            if self.loss_scaling:
                loss = self.optimizer.scale_loss(loss)
        grads = tape.gradient(loss, trainable)
        if self.loss_scaling:
            grads = _agree_on_finiteness(grads)
        self.optimizer.apply_gradients(zip(grads, trainable))
        return terms

    # -- all replicas

    def _distributed_step(self, images, labels):
        learning_rate = self.schedule(self.step)
        terms = self.strategy.run(self._replica_fn, args=(images, labels))
        self.step.assign_add(1)
        out = {k: self.strategy.reduce(tf.distribute.ReduceOp.SUM, v, axis=None)
               for k, v in terms.items()}
        out["learning_rate"] = learning_rate
        if self.loss_scaling:
            out["loss_scale"] = tf.identity(self.optimizer.dynamic_scale)
        return out

    def _distributed_predict(self, images):
        def predict(x):
            return tf.argmax(self.model(x, training=False)["logits"], axis=-1, output_type=tf.int32)

        return self.strategy.run(predict, args=(images,))

    def train_step(self, images, labels):
        """One optimisation step on a distributed batch; the global loss terms as floats."""
        return {k: float(v) for k, v in self._train_step(images, labels).items()}

    def predict_first_replica(self, images):
        """argmax predictions of the first local replica's images (for summaries)."""
        predictions = self._predict(images)
        return self.strategy.experimental_local_results(predictions)[0]

    def distribute_dataset(self, input_config):
        """`(images, labels)` batches of `input_config`, split across the replicas."""
        if input_config.batch_size % self.num_replicas:
            raise ValueError(
                f"train_data.batch_size={input_config.batch_size} is the global batch and must "
                f"be divisible by the {self.num_replicas} replicas"
            )
        return self.strategy.distribute_datasets_from_function(
            lambda context: make_dataset(input_config, context, training=True)
        )


def _agree_on_finiteness(grads):
    """Poisons every replica's gradients when any replica's are not finite.

    `LossScaleOptimizer` decides per replica whether to skip a step, on the replica's own
    (not yet all-reduced) gradients; replicas that disagreed would diverge (or wait for each
    other forever under MultiWorkerMirroredStrategy). One all-reduce of a flag makes them agree.
    """
    finite = tf.reduce_all([tf.reduce_all(tf.math.is_finite(g)) for g in grads if g is not None])
    context = tf.distribute.get_replica_context()
    bad = tf.cast(tf.logical_not(finite), tf.float32)
    if context is not None and context.num_replicas_in_sync > 1:
        bad = context.all_reduce(tf.distribute.ReduceOp.SUM, bad)
    poison = tf.where(bad > 0, tf.constant(float("nan")), tf.constant(0.0))
    return [None if g is None else g + tf.cast(poison, g.dtype) for g in grads]


# ----------------------------------------------------------------------------------------------
# The loop


def _summary_images(images, labels, predictions, spec=None):
    """uint8 (k, H, W, 3) input, ground truth and prediction images, in the dataset's palette
    (the spec's; VOC's without one)."""
    images = np.clip(np.asarray(images)[:MAX_SUMMARY_IMAGES], 0, 255).astype(np.uint8)
    labels = np.asarray(labels)[:MAX_SUMMARY_IMAGES].astype(np.int64)
    predictions = np.asarray(predictions)[:MAX_SUMMARY_IMAGES].astype(np.int64)
    colormap = spec.colormap() if spec is not None else palette.VOC_COLORMAP
    # 255 keeps the ignore colour; other labels wrap into the 256-entry map.
    return images, palette.colorize(labels % 256, colormap), palette.colorize(predictions % 256,
                                                                              colormap)


def _restore(trainer, model_dir, progress):
    """Resumes from the model dir, or initialises from training.init_checkpoint or the backbone
    weights. Returns the step training starts at."""
    config = trainer.config
    latest = checkpoints.latest_checkpoint(model_dir)
    if latest:
        status = trainer.checkpoint.restore(latest)
        try:
            status.assert_existing_objects_matched()
        except AssertionError as e:
            raise ValueError(
                f"the checkpoint {latest} does not match this config's model and optimizer "
                f"({e}); use a new --model-dir, or the config the checkpoint was trained with"
            ) from None
        step = int(trainer.step.numpy())
        progress.message(f"resumed from {latest} at step {step}")
        return step
    if config.training.init_checkpoint:
        path = config.training.init_checkpoint
        from deeplab_family.weights import detect

        if detect.is_model_garden(path):
            from deeplab_family.weights import import_model_weights

            report = import_model_weights(trainer.model, detect.checkpoint_prefix(path))
            progress.message(f"initialised the model: {report.summary()} "
                             "(training.init_checkpoint)")
        else:
            prefix = checkpoints.restore_model(trainer.model, path)
            progress.message(f"initialised the model from {prefix} (training.init_checkpoint)")
    elif config.model.backbone_weights:
        path = config.model.backbone_weights
        from deeplab_family.weights import import_weights

        report = import_weights(
            trainer.model.get_layer("backbone"), path, config.model.backbone_weights_format
        )
        progress.message(f"initialised the backbone: {report.summary()}")
    else:
        _check_random_init(config)
    return 0


def _check_random_init(config):
    """A fresh run of a full-size backbone without pretrained weights stops, unless
    `model.random_init: true` says it is meant: every paper starts from ImageNet weights."""
    from deeplab_family.backbones.config import STANDARD_STAGE_CHANNELS

    model = config.model
    if model.random_init or tuple(model.backbone.stage_channels) != STANDARD_STAGE_CHANNELS:
        return
    raise ValueError(
        f"model.backbone is a full-size {model.name} backbone, and the papers train it from "
        "ImageNet weights, but neither model.backbone_weights nor training.init_checkpoint is "
        "set. Give the ImageNet file named in the config's comments or in the README's table "
        "'Weights for each paper config' (downloaded once by you, never by this package; "
        "`python -m deeplab_family.weights inspect FILE` prints the model.backbone section "
        "that loads it), or a model dir to start from, or set model.random_init: true to "
        "train from random weights on purpose."
    )


def _check_same_step(trainer):
    """Under multi-worker training every worker must resume at the same step."""
    strategy = trainer.strategy
    if not is_multi_worker(strategy) or strategy.num_replicas_in_sync == 1:
        return
    own = int(trainer.step.numpy())
    per_replica = strategy.run(lambda: tf.cast(trainer.step.read_value(), tf.float64))
    total = float(strategy.reduce(tf.distribute.ReduceOp.SUM, per_replica, axis=None))
    if total != own * strategy.num_replicas_in_sync:
        raise RuntimeError(
            f"this worker resumed at step {own} but the others did not (sum of the steps "
            f"{total:g}): the model dir must be on storage that every worker sees"
        )


def _check_train_data(config, model_dir):
    """Refuses a config without training shards, or whose model's class count is not the
    data's, before a model is built. Returns the dataset spec (or None)."""
    if config.train_data is None or not config.train_data.all_patterns:
        raise ValueError("train_data.file_pattern is empty: say which TFRecord shards to train on")
    spec = experiment_spec(config, model_dir)
    check_num_classes(config.model.num_classes, spec)
    return spec


def _data_lines(config):
    """Log lines for mixed sources and hard-image oversampling (none for one plain source)."""
    from deeplab_family.data.pipeline import hard_class_ids
    from deeplab_family.data.spec import count_examples

    data, lines = config.train_data, []
    if data.sources:
        parts = []
        counts = [count_examples(p) for p, _ in data.source_list]
        weights = [w for _, w in data.source_list]
        if weights[0] is None:
            weights = counts
        total = sum(w or 0 for w in weights) or 1
        for (pattern, _), count, weight in zip(data.source_list, counts, weights):
            share = f"{100 * weight / total:.1f}%" if weight else "?"
            parts.append(f"{pattern} ({count if count is not None else '?'} examples, {share})")
        lines.append("train_data sources: " + "; ".join(parts))
    if data.oversample:
        ids = hard_class_ids(data)
        lines.append(f"oversample: images holding class(es) {ids} "
                     f"({', '.join(map(str, data.oversample['classes']))}) read "
                     f"{data.oversample['factor']} times")
    return lines


def _prepare_model_dir(trainer, model_dir, is_chief, progress):
    """Writes the resolved config (sync BN decided, on the chief only) to the model dir."""
    config = trainer.config
    resolved_training = dataclasses.replace(config.training, sync_bn=trainer.sync_bn)
    resolved = dataclasses.replace(config, model=trainer.model_config, training=resolved_training)
    if is_chief:
        path = save_config(resolved, model_dir)
        progress.message(f"config written to {path}")
        spec = trainer.spec
        if spec is not None:
            save_spec(spec, model_dir)
            progress.message(f"dataset {spec.name}: {spec.num_classes} classes ({spec.source})")


def _setup_line(trainer):
    """The log line that says how this run trains: strategy, BN, precision."""
    return (
        f"strategy: {describe(trainer.strategy)}; sync BN {'on' if trainer.sync_bn else 'off'}"
        + (f"; {trainer.frozen_bn_layers} BN layers frozen" if trainer.frozen_bn_layers else "")
        + (f"; {trainer.policy}" if trainer.policy else "")
    )


class _CheckpointWriter:
    """Saves the trainer's checkpoints: the chief's into `<model_dir>/checkpoints`, keeping
    `training.keep_checkpoints`; another worker's into a scratch dir deleted after each save.

    Non-chief workers must take part in saving (the variables may need collectives) but write
    where nobody reads (TF's multi-worker recipe).
    """

    def __init__(self, trainer, model_dir, is_chief, role):
        self.is_chief = is_chief
        if is_chief:
            self.directory = checkpoints.checkpoint_dir(model_dir)
        else:
            self.directory = tempfile.mkdtemp(prefix=f"deeplab-{role}-")
        keep = trainer.config.training.keep_checkpoints if is_chief else 1
        self.manager = tf.train.CheckpointManager(
            trainer.checkpoint, self.directory, max_to_keep=keep
        )

    def save(self, step):
        """Writes the checkpoint of `step`; returns its prefix on the chief, None elsewhere."""
        self.manager.save(checkpoint_number=step)
        if not self.is_chief:
            shutil.rmtree(self.directory, ignore_errors=True)
            return None
        return self.manager.latest_checkpoint

    def close(self):
        """Deletes a non-chief worker's scratch dir."""
        if not self.is_chief:
            shutil.rmtree(self.directory, ignore_errors=True)


def _build_dataset(trainer, start):
    """The distributed batches of a run starting at `start`, re-seeded from (seed, start)."""
    config = trainer.config
    training = config.training
    base_seed = config.train_data.seed if config.train_data.seed is not None else training.seed
    input_config = dataclasses.replace(
        config.train_data,
        seed=_mix(base_seed, start),
        deterministic=config.train_data.deterministic or training.deterministic,
    )
    return iter(trainer.distribute_dataset(input_config))


def _check_finite(terms, step, model_dir, ignore_label):
    """Raises `TrainingDiverged` on a NaN or Inf loss, before the step writes anything."""
    loss = terms["loss"]
    if math.isfinite(loss):
        return
    good = checkpoints.latest_checkpoint(model_dir)
    raise TrainingDiverged(
        f"the loss is {loss} at step {step} (cross-entropy {terms['cross_entropy']}, "
        f"learning rate {terms['learning_rate']:.3g}); training stopped without writing a "
        f"checkpoint. The last good checkpoint is "
        f"{good or 'none (no checkpoint was written yet)'}. Lower training.learning_rate, add "
        f"training.warmup_steps, or check the data (labels must be in 0..num_classes-1 or "
        f"{ignore_label})."
    )


class _Throughput:
    """Images/s and the ETA over a window of recent steps that starts after the first step
    (which traces the step function)."""

    WINDOW_STEPS = 50  # a sliding-ish window: the recent speed, not the mean since the start

    def __init__(self, global_batch, total_steps):
        self.global_batch = global_batch
        self.total_steps = total_steps
        self.window_start, self.window_steps = None, 0
        self.images_per_sec, self.eta = None, None

    def update(self, step):
        """Counts a step that just ended at `step`; returns (images/s, ETA in s), or Nones."""
        now = time.monotonic()
        if self.window_start is None:
            self.window_start, self.window_steps = now, 0
        else:
            self.window_steps += 1
            elapsed = now - self.window_start
            if elapsed > 0:
                self.images_per_sec = self.window_steps * self.global_batch / elapsed
                self.eta = (self.total_steps - step) * elapsed / self.window_steps
            if self.window_steps >= self.WINDOW_STEPS:
                self.window_start, self.window_steps = now, 0
        return self.images_per_sec, self.eta


def _write_summaries(trainer, step, terms, images_per_sec, images, labels):
    """TensorBoard scalars every `log_every` steps, images every `image_summary_every` steps."""
    training = trainer.config.training
    if step % training.log_every == 0 or step == training.steps:
        for name, value in terms.items():
            if name != "valid_pixels":
                tf.summary.scalar(f"loss/{name}" if name not in (
                    "learning_rate", "loss_scale") else name, value, step=step)
        if images_per_sec:
            tf.summary.scalar("images_per_sec", images_per_sec, step=step)
    every = training.image_summary_every
    if every and (step % every == 0 or step == 1):
        predictions = trainer.predict_first_replica(images)
        local = trainer.strategy.experimental_local_results
        shown = _summary_images(local(images)[0], local(labels)[0], predictions, trainer.spec)
        for name, value in zip(("input", "ground_truth", "prediction"), shown):
            tf.summary.image(f"images/{name}", value, step=step, max_outputs=MAX_SUMMARY_IMAGES)


def _run_steps(trainer, batches, start, *, model_dir, saver, is_chief, progress):
    """Trains from step `start` to `training.steps`, with progress, summaries and checkpoints.
    Returns the last step and its loss terms."""
    training = trainer.config.training
    writer = (
        tf.summary.create_file_writer(os.path.join(model_dir, SUMMARY_SUBDIR))
        if is_chief else tf.summary.create_noop_writer()
    )
    throughput = _Throughput(trainer.config.train_data.batch_size, training.steps)
    step, terms = start, {}
    try:
        with writer.as_default():
            while step < training.steps:
                images, labels = next(batches)
                terms = trainer.train_step(images, labels)
                step += 1
                _check_finite(terms, step, model_dir, trainer.ignore_label)
                images_per_sec, eta = throughput.update(step)
                progress.update(step, terms["loss"], terms["learning_rate"], images_per_sec, eta,
                                final=step == training.steps)
                _write_summaries(trainer, step, terms, images_per_sec, images, labels)
                if step % training.checkpoint_every == 0 or step == training.steps:
                    prefix = saver.save(step)
                    if prefix is not None:
                        progress.message(f"checkpoint {prefix}")
                writer.flush()
    finally:
        writer.close()
    return step, terms


def _finish(trainer, model_dir, start, step, terms):
    """What `train` returns (see there)."""
    return {
        "step": step,
        "loss": terms.get("loss"),
        "steps_run": step - start,
        "checkpoint": checkpoints.latest_checkpoint(model_dir),
        "trainer": trainer,
    }


def train(config, model_dir, *, strategy=None, stream=None):
    """Trains `config` into `model_dir`, resuming from its latest checkpoint if it has one.

    An entry point: it seeds Python, NumPy and TensorFlow (`training.seed`) and, with
    `training.deterministic`, turns on op determinism.

    Args:
        config: `config.ExperimentConfig`.
        model_dir: str. Checkpoints go to `<model_dir>/checkpoints`, TensorBoard summaries to
            `<model_dir>/train`, the resolved config to `<model_dir>/config.yaml`.
        strategy: a `tf.distribute.Strategy`, or None for
            `strategies.make_strategy(config.runtime)`.
        stream: where the progress goes (stdout).

    Returns:
        A dict: "step" (the last step), "loss" (the last step's loss, or None when there was
        nothing to do), "steps_run", "checkpoint" (the latest prefix), "trainer".

    Raises:
        TrainingDiverged: the loss became NaN or Inf (nothing written after the last good
            checkpoint).
    """
    training = config.training
    strategy = strategy or make_strategy(config.runtime)  # first: it may split the CPU
    set_global_determinism(training.seed, training.deterministic)
    is_chief, role = worker_role(strategy)
    progress = ProgressBar(training.steps, every=training.log_every, stream=stream)
    spec = _check_train_data(config, model_dir)

    trainer = Trainer(config, strategy, spec)
    _prepare_model_dir(trainer, model_dir, is_chief, progress)
    progress.message(_setup_line(trainer))
    for line in _data_lines(config):
        progress.message(line)
    saver = _CheckpointWriter(trainer, model_dir, is_chief, role)
    try:
        start = _restore(trainer, model_dir, progress)
        _check_same_step(trainer)
        if start >= training.steps:
            progress.message(f"already trained: step {start} >= training.steps={training.steps}")
            return _finish(trainer, model_dir, start, start, {})
        step, terms = _run_steps(trainer, _build_dataset(trainer, start), start,
                                 model_dir=model_dir, saver=saver, is_chief=is_chief,
                                 progress=progress)
    finally:
        saver.close()
    return _finish(trainer, model_dir, start, step, terms)
