"""Sharded, deterministic, atomic TFRecord writer for segmentation examples.

One split is written in one call to :func:`write_split`:

- **Deterministic.** Examples are sorted by id and dealt round-robin to the shards (example ``k``
  of the sorted list goes to shard ``k % num_shards``), so every shard is a uniform sample of the
  split and the same inputs always give byte-identical shards, whatever the number of workers.
- **Parallel.** One task per shard, run by a ``spawn`` process pool, with a progress line. No
  TensorFlow is imported: ``framing`` frames the records and ``example`` encodes the
  ``tf.train.Example`` protos, so a worker starts in a fraction of a second.
- **Atomic.** Each shard is written to a hidden temporary name (``.<final>.tmp-<pid>``, which no
  ``<split>-*`` glob matches) and renamed only when every shard of the split is complete; then
  the manifest, the commit record, is written. On any error the temporary files are removed and
  the split's previous shards, if any, are left as they were. A killed run leaves only hidden
  temporary files, which the next run removes.
- **Verifiable.** ``<split>-manifest.json`` holds the count, the sha256 of the sorted ids (one per
  line, ``\\n``-terminated: ``sha256sum`` of the sorted id list), each shard's sha256 and count,
  the per-class pixel histogram and image counts, the label sources, the dataset spec
  (``deeplab_family.data.spec``) and every skipped id with its reason.

Validation happens while the example is loaded (``sources``), and messages name the file and
the problem: ``"label value 42 in SegmentationClass/2007_000032.png is outside 0..20 and is not
255"``.

The modules of the package, by job: ``framing`` (TFRecord records, CRC32C), ``example``
(``tf.train.Example`` encoding), ``sources`` (reading and validating one example), ``writer``
(this one: shards, manifests, worker processes), ``progress`` (the progress line) and ``cli``
(what the builders' command lines share).
"""

import concurrent.futures
import dataclasses
import glob
import hashlib
import itertools
import json
import math
import multiprocessing
import os
import re
from collections import Counter

import numpy as np

from deeplab_family import _files, _validation
from deeplab_family.data import schema
from tfrecords_tools.example import encode_label_png, segmentation_example
from tfrecords_tools.framing import TFRecordFile
from tfrecords_tools.progress import image_progress
from tfrecords_tools.sources import LABEL_VALUES, ExampleSource, InvalidExampleError, load_example

# The writer's own names, and the ones callers used most from it before the split by job
# (`TFRecordFile`, `segmentation_example`, ...; the rest moved to framing/example/sources).
# `load_example` is looked up here when a shard is written, so that tests can replace it.
__all__ = [
    "DEFAULT_EXAMPLES_PER_SHARD",
    "MANIFEST_VERSION",
    "BuildError",
    "ExampleSource",
    "InvalidExampleError",
    "TFRecordFile",
    "WorkerPool",
    "default_num_shards",
    "encode_label_png",
    "ids_sha256",
    "load_example",
    "remove_temp_files",
    "segmentation_example",
    "write_split",
    "write_splits",
]

DEFAULT_EXAMPLES_PER_SHARD = 500
MANIFEST_VERSION = 1

_SPLIT_NAME = re.compile(r"^[A-Za-z0-9_]+$")


class BuildError(RuntimeError):
    """A split could not be written; nothing with a final name was left behind for it."""


# --------------------------------------------------------------------------------------------
# Writing a split.
# --------------------------------------------------------------------------------------------


@dataclasses.dataclass(frozen=True)
class _ShardTask:
    split: str
    index: int
    num_shards: int
    sources: tuple
    output_dir: str
    num_classes: int
    skip_invalid: bool


@dataclasses.dataclass
class _ShardResult:
    index: int
    temp_path: str
    count: int
    sha256: str
    histogram: list
    class_images: list
    skipped: list
    origins: dict


_PROGRESS_QUEUE = None


def _init_worker(queue):
    global _PROGRESS_QUEUE
    _PROGRESS_QUEUE = queue


def _write_shard(task, progress=None):
    """Writes one shard to its temporary name. Top-level, so the spawn pool can run it."""
    final = schema.shard_name(task.split, task.index, task.num_shards)
    # `.<final>.tmp-<pid>`: no glob of final names matches it.
    out = TFRecordFile(_files.temporary_name(os.path.join(task.output_dir, final)))
    histogram = np.zeros(LABEL_VALUES, dtype=np.int64)
    class_images = np.zeros(LABEL_VALUES, dtype=np.int64)
    skipped, origins = [], Counter()
    done = 0
    try:
        for source in task.sources:
            try:
                record, counts = load_example(source, task.num_classes)
            except InvalidExampleError as e:
                if not task.skip_invalid:
                    raise
                skipped.append({"id": source.id, "reason": str(e)})
            else:
                out.write(record)
                histogram += counts
                class_images += counts > 0
                origins[source.label_origin] += 1
            done += 1
            if done % 8 == 0:
                _report_progress(progress, 8)
        _report_progress(progress, done % 8)
        out.close()
    except BaseException:
        out.abort()
        raise
    return _ShardResult(
        task.index,
        out.path,
        out.count,
        out.sha256,
        histogram.tolist(),
        class_images.tolist(),
        skipped,
        dict(origins),
    )


def _report_progress(progress, n):
    if not n:
        return
    if progress is not None:
        progress(n)
    elif _PROGRESS_QUEUE is not None:
        _PROGRESS_QUEUE.put(n)


def _remove_quietly(path):
    try:
        os.remove(path)
    except FileNotFoundError:
        pass


def remove_temp_files(output_dir, split):
    """Removes the temporary files of ``split`` left by this or an earlier (killed) run."""
    patterns = (
        "." + schema.shard_glob(split) + ".tmp-*",
        "." + schema.manifest_name(split) + ".tmp-*",
    )
    for pattern in patterns:
        for path in glob.glob(os.path.join(glob.escape(output_dir), pattern)):
            _remove_quietly(path)


def default_num_shards(count):
    return max(1, math.ceil(count / DEFAULT_EXAMPLES_PER_SHARD))


def _run_in_process(tasks, bar):
    return [_write_shard(task, progress=bar.update) for task in tasks]


class WorkerPool:
    """A ``spawn`` process pool that the splits of one build share, so workers start once.

    Processes start on demand (at most ``num_workers``), when a split is first written with more
    than one shard. Use it as a context manager.
    """

    def __init__(self, num_workers):
        self.num_workers = _validation.positive_int("num_workers", num_workers)
        self._executor = None
        self._queue = None

    def __enter__(self):
        return self

    def __exit__(self, *exc_info):
        self.close()

    def get(self):
        if self._executor is None:
            context = multiprocessing.get_context("spawn")
            self._queue = context.Queue()
            self._executor = concurrent.futures.ProcessPoolExecutor(
                max_workers=self.num_workers,
                mp_context=context,
                initializer=_init_worker,
                initargs=(self._queue,),
            )
        return self._executor, self._queue

    def close(self):
        if self._executor is not None:
            self._executor.shutdown(wait=True, cancel_futures=True)
            self._queue.close()
            self._queue.join_thread()
            self._executor = self._queue = None


def _run_in_pool(tasks, pool, bar, split):
    executor, queue = pool.get()
    futures = [executor.submit(_write_shard, task) for task in tasks]
    results = []
    try:
        pending = set(futures)
        while pending:
            done, pending = concurrent.futures.wait(
                pending, timeout=0.2, return_when=concurrent.futures.FIRST_COMPLETED
            )
            _drain(queue, bar)
            for future in done:
                try:
                    results.append(future.result())
                except concurrent.futures.process.BrokenProcessPool:
                    raise BuildError(
                        f"a worker process died while writing split {split!r}"
                    ) from None
    finally:
        # On failure: cancel what has not started, and let running shards finish (or fail)
        # before the caller removes the temporary files.
        for future in futures:
            future.cancel()
        concurrent.futures.wait(futures)
        _drain(queue, bar)
    return results


def _drain(queue, bar):
    while True:
        try:
            bar.update(queue.get_nowait())
        except Exception:  # noqa: BLE001 (queue.Empty, or a queue closed under us)
            return


def ids_sha256(ids):
    """sha256 of the ids one per line, each ending in a newline (``sort ids | sha256sum``)."""
    return hashlib.sha256("".join(f"{i}\n" for i in ids).encode("utf-8")).hexdigest()


def write_split(
    split,
    sources,
    output_dir,
    *,
    num_classes=None,
    spec=None,
    num_shards=None,
    num_workers=1,
    skip_invalid=False,
    skipped=(),
    dataset="",
    extra=None,
    progress=True,
    pool=None,
):
    """Writes one split as ``<split>-<i:05d>-of-<n:05d>.tfrecord`` shards plus its manifest.

    Args:
        split: str. The split name (letters, digits and ``_``).
        sources: iterable of ``ExampleSource``; ids must be unique.
        output_dir: str. Created if needed. Other splits in it are left alone.
        num_classes: int. Valid labels are ``0..num_classes-1`` and ``schema.IGNORE_LABEL``;
            None takes the spec's.
        spec: ``deeplab_family.data.spec.DatasetSpec`` or None. Recorded in the manifest
            (``"dataset_spec"``), where training, evaluation, TensorBoard, ``predict`` and the
            export read the class names and colours.
        num_shards: int or None. None: one shard per 500 examples. Never more than the number of
            examples.
        num_workers: int. Processes; 1 writes in this process.
        skip_invalid: bool. Record invalid examples in the manifest and go on, instead of failing.
        skipped: iterable of ``{"id", "reason"}`` found before loading (bad ids, missing files),
            recorded in the manifest.
        dataset: str. A name recorded in the manifest.
        extra: dict. More manifest fields (for example the input roots).
        progress: bool. Show a progress line on stderr (``tfrecords_tools.progress``).
        pool: WorkerPool or None. A pool shared with other splits; None starts one for this
            split when it needs more than one process.

    Returns:
        The manifest, as a dict.

    Raises:
        BuildError: nothing was written for this split; the message names the file and problem.
    """
    if not isinstance(split, str) or not _SPLIT_NAME.match(split):
        raise ValueError(f"split must match [A-Za-z0-9_]+. Received: split={split!r}")
    if num_shards is not None:
        _validation.positive_int("num_shards", num_shards)
    _validation.positive_int("num_workers", num_workers)
    if spec is not None:
        if num_classes is not None and num_classes != spec.num_classes:
            raise ValueError(
                f"num_classes={num_classes} but dataset spec {spec.name!r} has "
                f"{spec.num_classes} classes"
            )
        num_classes = spec.num_classes
        extra = {**(extra or {}), "dataset_spec": spec.to_dict()}
        dataset = dataset or spec.name
    if num_classes is None:
        raise ValueError("write_split needs num_classes or a spec")
    sources = sorted(sources, key=lambda s: s.id)
    ids = [s.id for s in sources]
    if len(set(ids)) != len(ids):
        dup = next(i for i, j in itertools.pairwise(ids) if i == j)
        raise ValueError(f"duplicate id {dup!r} in the sources of split {split!r}")
    skipped = list(skipped)
    if not sources:
        raise BuildError(_empty_split_message(split, skipped))

    num_shards = min(num_shards or default_num_shards(len(sources)), len(sources))
    os.makedirs(output_dir, exist_ok=True)
    remove_temp_files(output_dir, split)
    tasks = [
        _ShardTask(
            split,
            i,
            num_shards,
            tuple(sources[i::num_shards]),
            output_dir,
            num_classes,
            skip_invalid,
        )
        for i in range(num_shards)
    ]
    bar = image_progress(len(sources), split, progress)
    try:
        if num_workers == 1 or num_shards == 1:
            results = _run_in_process(tasks, bar)
        elif pool is not None:
            results = _run_in_pool(tasks, pool, bar, split)
        else:
            with WorkerPool(min(num_workers, num_shards)) as own_pool:
                results = _run_in_pool(tasks, own_pool, bar, split)
        results.sort(key=lambda r: r.index)
        for r in results:
            skipped.extend(r.skipped)
        count = sum(r.count for r in results)
        if count == 0:
            raise BuildError(_empty_split_message(split, skipped))
        manifest = _manifest(
            split, num_classes, num_shards, results, sources, skipped, dataset, extra
        )
        _commit(output_dir, split, results, manifest)
    except InvalidExampleError as e:
        raise BuildError(
            f"{e} (split {split!r}: nothing was written for it; run with --skip-invalid to "
            "record such examples in the manifest and go on)"
        ) from None
    finally:
        bar.close()
        remove_temp_files(output_dir, split)
    return manifest


def write_splits(
    plans, output_dir, *, num_classes=None, num_workers=1, split_options=None, **options
):
    """Writes several splits, one after the other, with one worker pool (workers start once).

    Args:
        plans: dict ``{split: (sources, skipped)}``, written in its order.
        output_dir: str. As in ``write_split``.
        num_classes: int or None. As in ``write_split``.
        num_workers: int. As in ``write_split``.
        **options: the other keyword arguments of ``write_split`` (``spec``, ...; not
            ``skipped`` or ``pool``).
        split_options: ``{split: {option: value}}`` or None: options of one split that replace
            those of ``**options`` (a split's own ``dataset`` name, say).

    Returns:
        ``{split: manifest}``.
    """
    split_options = split_options or {}
    with WorkerPool(num_workers) as pool:
        return {
            split: write_split(
                split,
                sources,
                output_dir,
                num_classes=num_classes,
                num_workers=num_workers,
                skipped=skipped,
                pool=pool,
                **{**options, **split_options.get(split, {})},
            )
            for split, (sources, skipped) in plans.items()
        }


def _empty_split_message(split, skipped):
    message = f"split {split!r} is empty: no example to write"
    if skipped:
        reasons = "; ".join(f"{s['id']}: {s['reason']}" for s in skipped[:3])
        more = f" and {len(skipped) - 3} more" if len(skipped) > 3 else ""
        message += f" (all {len(skipped)} were skipped: {reasons}{more})"
    return message


def _manifest(split, num_classes, num_shards, results, sources, skipped, dataset, extra):
    not_loaded = {s["id"] for r in results for s in r.skipped}
    written = [s.id for s in sources if s.id not in not_loaded]
    histogram = np.sum([r.histogram for r in results], axis=0)
    class_images = np.sum([r.class_images for r in results], axis=0)
    classes = list(range(num_classes)) + [schema.IGNORE_LABEL]
    origins = Counter()
    for r in results:
        origins.update(r.origins)
    manifest = {
        "format_version": MANIFEST_VERSION,
        "dataset": dataset,
        "split": split,
        "count": sum(r.count for r in results),
        "ids_sha256": ids_sha256(written),
        "num_classes": num_classes,
        "ignore_label": schema.IGNORE_LABEL,
        "num_shards": num_shards,
        "shards": [
            {
                "file": schema.shard_name(split, r.index, num_shards),
                "count": r.count,
                "sha256": r.sha256,
            }
            for r in results
        ],
        "class_pixel_histogram": {str(c): int(histogram[c]) for c in classes},
        # Images holding each class (255: images with ignored pixels).
        "class_image_counts": {str(c): int(class_images[c]) for c in classes},
        "label_sources": dict(sorted(origins.items())),
        "skipped": sorted(skipped, key=lambda s: (s["id"], s["reason"])),
    }
    if extra:
        manifest.update(extra)
    return manifest


def _commit(output_dir, split, results, manifest):
    """Renames the finished shards into place, drops stale shards, then writes the manifest."""
    manifest_path = os.path.join(output_dir, schema.manifest_name(split))
    # The manifest is the commit record: remove the old one first, so that a crash during the
    # renames leaves a split without a manifest (visibly incomplete), never a wrong one.
    _remove_quietly(manifest_path)
    final_names = set()
    for r in results:
        final = schema.shard_name(split, r.index, manifest["num_shards"])
        os.replace(r.temp_path, os.path.join(output_dir, final))
        final_names.add(final)
    for path in glob.glob(os.path.join(glob.escape(output_dir), schema.shard_glob(split))):
        if os.path.basename(path) not in final_names:
            _remove_quietly(path)
    _files.write_text(manifest_path, json.dumps(manifest, indent=2) + "\n")
    _fsync_dir(output_dir)


def _fsync_dir(path):
    try:
        fd = os.open(path, os.O_RDONLY)
    except OSError:
        return
    try:
        os.fsync(fd)
    except OSError:
        pass
    finally:
        os.close(fd)
