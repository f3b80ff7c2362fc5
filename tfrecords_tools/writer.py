"""Sharded, deterministic, atomic TFRecord writer for segmentation examples.

One split is written in one call to :func:`write_split`:

- **Deterministic.** Examples are sorted by id and dealt round-robin to the shards (example ``k``
  of the sorted list goes to shard ``k % num_shards``), so every shard is a uniform sample of the
  split and the same inputs always give byte-identical shards, whatever the number of workers.
- **Parallel.** One task per shard, run by a ``spawn`` process pool (no TensorFlow is imported:
  the TFRecord framing and the ``tf.train.Example`` encoding are done here), with a progress bar.
- **Atomic.** Each shard is written to a hidden temporary name (``.<final>.tmp-<pid>``, which no
  ``<split>-*`` glob matches) and renamed only when every shard of the split is complete; then
  the manifest, the commit record, is written. On any error the temporary files are removed and
  the split's previous shards, if any, are left as they were. A killed run leaves only hidden
  temporary files, which the next run removes.
- **Verifiable.** ``<split>-manifest.json`` holds the count, the sha256 of the sorted ids (one per
  line, ``\\n``-terminated: ``sha256sum`` of the sorted id list), each shard's sha256 and count,
  the per-class pixel histogram, the label sources, and every skipped id with its reason.

Validation happens while the example is loaded, and messages name the file and the problem:
``"label value 42 in SegmentationClass/2007_000032.png is outside 0..20 and is not 255"``.
"""

import concurrent.futures
import dataclasses
import functools
import glob
import hashlib
import io
import itertools
import json
import math
import multiprocessing
import os
import re
import struct
import sys
from collections import Counter

import numpy as np
from PIL import Image

from deeplab_family.data import schema

DEFAULT_EXAMPLES_PER_SHARD = 500
MANIFEST_VERSION = 1

_SPLIT_NAME = re.compile(r"^[A-Za-z0-9_]+$")


class InvalidExampleError(ValueError):
    """One example cannot be written; the message names the file and the problem."""


class BuildError(RuntimeError):
    """A split could not be written; nothing with a final name was left behind for it."""


# --------------------------------------------------------------------------------------------
# CRC32C (Castagnoli), as the TFRecord format needs it, without TensorFlow.
#
# The plain table-driven loop is far too slow in Python for 100 KB records, so the data are cut
# into equal chunks whose CRCs are computed side by side with numpy (slicing by 4), then
# combined: a CRC register is linear over GF(2), and "feed n zero bytes" is a 32x32 bit matrix.
# --------------------------------------------------------------------------------------------

_CRC32C_POLY = 0x82F63B78  # reflected Castagnoli polynomial


def _make_crc_tables():
    table = np.zeros(256, dtype=np.uint32)
    for i in range(256):
        c = i
        for _ in range(8):
            c = (c >> 1) ^ _CRC32C_POLY if c & 1 else c >> 1
        table[i] = c
    tables = np.zeros((4, 256), dtype=np.uint32)
    tables[0] = table
    for k in range(1, 4):
        tables[k] = (tables[k - 1] >> 8) ^ table[tables[k - 1] & 0xFF]
    return tables


_CRC_TABLES = _make_crc_tables()
_CRC_TABLE_LIST = _CRC_TABLES[0].tolist()


def _crc_update_py(data, crc):
    table = _CRC_TABLE_LIST
    for byte in data:
        crc = table[(crc ^ byte) & 0xFF] ^ (crc >> 8)
    return crc


def _gf2_apply(columns, x):
    result, i = 0, 0
    while x:
        if x & 1:
            result ^= columns[i]
        x >>= 1
        i += 1
    return result


@functools.cache
def _zeros_operator(log2_bytes):
    """The register map "feed 2**log2_bytes zero bytes", as the images of the 32 unit vectors."""
    if log2_bytes == 0:
        return tuple(_crc_update_py(b"\0", 1 << i) for i in range(32))
    half = _zeros_operator(log2_bytes - 1)
    return tuple(_gf2_apply(half, c) for c in half)


@functools.cache
def _zeros_operator_tables(log2_bytes):
    columns = np.array(_zeros_operator(log2_bytes), dtype=np.uint32)
    byte = np.arange(256)
    tables = np.zeros((4, 256), dtype=np.uint32)
    for part in range(4):
        for bit in range(8):
            tables[part][((byte >> bit) & 1) == 1] ^= columns[8 * part + bit]
    return tables


def _feed_zeros(register, num_bytes):
    k = 0
    while num_bytes:
        if num_bytes & 1:
            register = _gf2_apply(_zeros_operator(k), register)
        num_bytes >>= 1
        k += 1
    return register


def crc32c(data):
    """CRC32C of ``data`` (bytes-like), as TFRecord files use it."""
    data = memoryview(data).cast("B")
    n = len(data)
    if n < 1024:
        return _crc_update_py(data, 0xFFFFFFFF) ^ 0xFFFFFFFF
    chunk = 32 if n < (1 << 20) else 128
    num_chunks = -(-n // chunk)
    # Leading zero bytes do not change a register that starts at 0, so pad at the front.
    buf = np.zeros(num_chunks * chunk, dtype=np.uint8)
    buf[num_chunks * chunk - n :] = np.frombuffer(data, dtype=np.uint8)
    words = np.ascontiguousarray(buf.view("<u4").reshape(num_chunks, chunk // 4).T)
    t0, t1, t2, t3 = _CRC_TABLES
    reg = np.zeros(num_chunks, dtype=np.uint32)
    for word in words:
        c = reg ^ word
        reg = t3[c & 0xFF] ^ t2[(c >> 8) & 0xFF] ^ t1[(c >> 16) & 0xFF] ^ t0[c >> 24]
    level = chunk.bit_length() - 1  # chunk is a power of two
    while len(reg) > 1:
        if len(reg) & 1:  # a leading zero chunk contributes nothing
            reg = np.concatenate([np.zeros(1, dtype=np.uint32), reg])
        m0, m1, m2, m3 = _zeros_operator_tables(level)
        a = reg[0::2]
        reg = m0[a & 0xFF] ^ m1[(a >> 8) & 0xFF] ^ m2[(a >> 16) & 0xFF] ^ m3[a >> 24] ^ reg[1::2]
        level += 1
    return int(reg[0]) ^ _feed_zeros(0xFFFFFFFF, n) ^ 0xFFFFFFFF


def masked_crc32c(data):
    crc = crc32c(data)
    return (((crc >> 15) | (crc << 17)) + 0xA282EAD8) & 0xFFFFFFFF


def frame_record(data):
    """One TFRecord entry: length, masked CRC of the length, data, masked CRC of the data."""
    length = struct.pack("<Q", len(data))
    return b"".join(
        (
            length,
            struct.pack("<I", masked_crc32c(length)),
            data,
            struct.pack("<I", masked_crc32c(data)),
        )
    )


# --------------------------------------------------------------------------------------------
# tf.train.Example encoding (protobuf wire format), without TensorFlow.
# --------------------------------------------------------------------------------------------


def _varint(value):
    if value < 0:
        value += 1 << 64  # int64 two's complement, as protobuf encodes negative int64
    out = bytearray()
    while True:
        byte = value & 0x7F
        value >>= 7
        if value:
            out.append(byte | 0x80)
        else:
            out.append(byte)
            return bytes(out)


def _field(number, payload):
    """A length-delimited field (wire type 2)."""
    return _varint((number << 3) | 2) + _varint(len(payload)) + payload


def _feature(value):
    values = value if isinstance(value, (list, tuple)) else [value]
    if all(isinstance(v, (bytes, str)) for v in values):
        items = [v.encode("utf-8") if isinstance(v, str) else bytes(v) for v in values]
        return _field(1, b"".join(_field(1, v) for v in items))  # Feature.bytes_list
    if all(isinstance(v, (int, np.integer)) and not isinstance(v, bool) for v in values):
        packed = b"".join(_varint(int(v)) for v in values)
        return _field(3, _field(1, packed) if values else b"")  # Feature.int64_list
    raise TypeError(f"feature values must be bytes, str or int. Received: {value!r}")


def encode_example(features):
    """Serialises ``{key: bytes | str | int | list of one kind}`` as a ``tf.train.Example``."""
    entries = b"".join(
        _field(1, _field(1, key.encode("utf-8")) + _field(2, _feature(features[key])))
        for key in sorted(features)
    )
    return _field(1, entries)


def encode_label_png(label):
    """A single-channel (mode L) PNG of the class indices in a uint8 ``(H, W)`` array."""
    label = np.asarray(label)
    if label.dtype != np.uint8 or label.ndim != 2:
        raise ValueError(f"label must be a 2-D uint8 array. Received: {label.dtype} {label.shape}")
    buf = io.BytesIO()
    Image.fromarray(label).save(buf, format="PNG")  # 2-D uint8: mode L
    return buf.getvalue()


def segmentation_example(image_bytes, image_format, label_png, filename, height, width):
    """The serialised example, with research/deeplab's keys (see ``deeplab_family.data.schema``)."""
    return encode_example(
        {
            schema.IMAGE_ENCODED: image_bytes,
            schema.IMAGE_FILENAME: filename,
            schema.IMAGE_FORMAT: image_format,
            schema.IMAGE_HEIGHT: int(height),
            schema.IMAGE_WIDTH: int(width),
            schema.IMAGE_CHANNELS: 3,
            schema.LABEL_ENCODED: label_png,
            schema.LABEL_FORMAT: schema.LABEL_FORMAT_PNG,
        }
    )


class TFRecordFile:
    """Writes framed records to ``path`` and keeps the count and the sha256 of the file."""

    def __init__(self, path):
        self.path = path
        self.count = 0
        self._sha = hashlib.sha256()
        self._file = open(path, "wb")  # noqa: SIM115 (closed by close() or abort())

    def write(self, record):
        framed = frame_record(record)
        self._file.write(framed)
        self._sha.update(framed)
        self.count += 1

    def close(self):
        """Flushes to disk (so a rename after it never exposes a partial file)."""
        if not self._file.closed:
            self._file.flush()
            os.fsync(self._file.fileno())
            self._file.close()

    def abort(self):
        if not self._file.closed:
            self._file.close()
        _remove_quietly(self.path)

    @property
    def sha256(self):
        return self._sha.hexdigest()


# --------------------------------------------------------------------------------------------
# Loading and validating one example.
# --------------------------------------------------------------------------------------------


@dataclasses.dataclass(frozen=True)
class ExampleSource:
    """Where one example's files are, and how to read its label.

    Args:
        id: str. The example id, stored as ``image/filename``.
        image_path: str. The image file, stored byte for byte.
        label_path: str. The label file.
        label_reader: callable ``(path, display) -> (H, W) integer array``. A module-level
            function, so that worker processes can unpickle it.
        image_display: str. How messages name the image (a path relative to the dataset root).
        label_display: str. How messages name the label.
        label_origin: str. A short name of the label source, counted in the manifest.
    """

    id: str
    image_path: str
    label_path: str
    label_reader: object
    image_display: str = ""
    label_display: str = ""
    label_origin: str = ""


def read_file_bytes(path, display):
    try:
        with open(path, "rb") as f:
            return f.read()
    except FileNotFoundError:
        raise InvalidExampleError(f"missing file: {display or path}") from None
    except OSError as e:
        raise InvalidExampleError(f"cannot read {display or path}: {e.strerror or e}") from None


def inspect_image(data, display):
    """Decodes the image fully (reduced-size for JPEG) to catch truncated or corrupt files.

    Returns ``(format, height, width)`` with format ``"jpeg"`` or ``"png"``.
    """
    try:
        image = Image.open(io.BytesIO(data))
        fmt = (image.format or "").lower()
        width, height = image.size
        if fmt == "jpeg":
            # A DCT-scaled decode still reads every byte of entropy-coded data, so truncation is
            # caught, at a fraction of the cost of a full decode.
            image.draft("RGB", (max(1, width // 8), max(1, height // 8)))
        image.load()
    except Exception as e:  # noqa: BLE001 (PIL raises OSError, SyntaxError, ValueError...)
        raise InvalidExampleError(
            f"corrupt or truncated image {display}: {e} ({type(e).__name__})"
        ) from None
    if fmt not in schema.IMAGE_FORMATS:
        raise InvalidExampleError(
            f"image {display} is {fmt.upper() or 'not an image'}; expected JPEG or PNG"
        )
    allowed_modes = ("RGB", "L") if fmt == "jpeg" else ("RGB", "RGBA", "L", "LA", "P")
    if image.mode not in allowed_modes:
        raise InvalidExampleError(
            f"image {display} has colour mode {image.mode}; expected RGB or grayscale"
        )
    return fmt, height, width


def read_index_png(path, display):
    """Reads a PNG of class indices: a VOC palette PNG (mode P) or a grayscale one (mode L).

    PIL keeps the palette indices; OpenCV and ``tf.io.decode_png`` would expand them to colours.
    """
    data = read_file_bytes(path, display)
    try:
        image = Image.open(io.BytesIO(data))
        image.load()
    except Exception as e:  # noqa: BLE001 (PIL raises OSError, SyntaxError, ValueError...)
        raise InvalidExampleError(f"corrupt or truncated label {display}: {e}") from None
    if image.mode not in ("P", "L"):
        raise InvalidExampleError(
            f"label {display} has mode {image.mode}; expected a palette (mode P) or grayscale "
            "(mode L) PNG of class indices. Colour-coded labels must be converted to indices first"
        )
    return np.asarray(image)


def check_label_values(label, num_classes, display, ignore_label=schema.IGNORE_LABEL):
    """Returns the label as uint8 after checking every value is a class index or ``ignore``."""
    label = np.asarray(label)
    if label.ndim != 2:
        raise InvalidExampleError(f"label {display} has shape {label.shape}; expected (H, W)")
    integral = np.issubdtype(label.dtype, np.integer) or (
        np.issubdtype(label.dtype, np.floating) and np.all(label == np.round(label))
    )
    if not integral:
        raise InvalidExampleError(f"label {display} holds {label.dtype} values, not integers")
    if label.size and (label.min() < 0 or label.max() > 255):
        bad = int(label.min()) if label.min() < 0 else int(label.max())
        raise InvalidExampleError(
            f"label value {bad} in {display} is outside 0..{num_classes - 1} and is not "
            f"{ignore_label}"
        )
    label = label.astype(np.uint8, copy=False)
    counts = np.bincount(label.ravel(), minlength=256)
    valid = np.zeros(256, dtype=bool)
    valid[:num_classes] = True
    valid[ignore_label] = True
    bad = np.flatnonzero((counts > 0) & ~valid)
    if bad.size:
        more = f" (other bad values: {', '.join(map(str, bad[1:6]))})" if bad.size > 1 else ""
        raise InvalidExampleError(
            f"label value {bad[0]} in {display} is outside 0..{num_classes - 1} and is not "
            f"{ignore_label}{more}"
        )
    return label, counts


def load_example(source, num_classes):
    """Reads and validates one example. Returns ``(record bytes, class pixel counts)``."""
    image_bytes = read_file_bytes(source.image_path, source.image_display)
    fmt, height, width = inspect_image(image_bytes, source.image_display)
    label = source.label_reader(source.label_path, source.label_display)
    label, counts = check_label_values(label, num_classes, source.label_display)
    if label.shape != (height, width):
        raise InvalidExampleError(
            f"image {source.image_display} is {height}x{width} (HxW) but its label "
            f"{source.label_display} is {label.shape[0]}x{label.shape[1]}"
        )
    record = segmentation_example(
        image_bytes, fmt, encode_label_png(label), source.id, height, width
    )
    return record, counts


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
    skipped: list
    origins: dict


_PROGRESS_QUEUE = None


def _init_worker(queue):
    global _PROGRESS_QUEUE
    _PROGRESS_QUEUE = queue


def temp_name(final_name, pid=None):
    return f".{final_name}.tmp-{os.getpid() if pid is None else pid}"


def _write_shard(task, progress=None):
    """Writes one shard to its temporary name. Top-level, so the spawn pool can run it."""
    final = schema.shard_name(task.split, task.index, task.num_shards)
    out = TFRecordFile(os.path.join(task.output_dir, temp_name(final)))
    histogram = np.zeros(256, dtype=np.int64)
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
        task.index, out.path, out.count, out.sha256, histogram.tolist(), skipped, dict(origins)
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
        if isinstance(num_workers, bool) or not isinstance(num_workers, int) or num_workers < 1:
            raise ValueError(
                f"num_workers must be an int >= 1. Received: num_workers={num_workers!r}"
            )
        self.num_workers = num_workers
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


class _NoBar:
    def update(self, n=1):
        pass

    def close(self):
        pass


def _progress_bar(total, split, enabled):
    if not enabled:
        return _NoBar()
    from tqdm import tqdm

    return tqdm(total=total, desc=split, unit="img", file=sys.stderr, dynamic_ncols=True)


def ids_sha256(ids):
    """sha256 of the ids one per line, each ending in a newline (``sort ids | sha256sum``)."""
    return hashlib.sha256("".join(f"{i}\n" for i in ids).encode("utf-8")).hexdigest()


def write_split(
    split,
    sources,
    output_dir,
    *,
    num_classes,
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
        num_classes: int. Valid labels are ``0..num_classes-1`` and 255.
        num_shards: int or None. None: one shard per 500 examples. Never more than the number of
            examples.
        num_workers: int. Processes; 1 writes in this process.
        skip_invalid: bool. Record invalid examples in the manifest and go on, instead of failing.
        skipped: iterable of ``{"id", "reason"}`` found before loading (bad ids, missing files),
            recorded in the manifest.
        dataset: str. A name recorded in the manifest.
        extra: dict. More manifest fields (for example the input roots).
        progress: bool. Show a progress bar on stderr.
        pool: WorkerPool or None. A pool shared with other splits; None starts one for this
            split when it needs more than one process.

    Returns:
        The manifest, as a dict.

    Raises:
        BuildError: nothing was written for this split; the message names the file and problem.
    """
    if not isinstance(split, str) or not _SPLIT_NAME.match(split):
        raise ValueError(f"split must match [A-Za-z0-9_]+. Received: split={split!r}")
    if num_shards is not None and (
        isinstance(num_shards, bool) or not isinstance(num_shards, int) or num_shards < 1
    ):
        raise ValueError(f"num_shards must be an int >= 1. Received: num_shards={num_shards!r}")
    if isinstance(num_workers, bool) or not isinstance(num_workers, int) or num_workers < 1:
        raise ValueError(f"num_workers must be an int >= 1. Received: num_workers={num_workers!r}")
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
    bar = _progress_bar(len(sources), split, progress)
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
    temp = os.path.join(output_dir, temp_name(schema.manifest_name(split)))
    with open(temp, "w", encoding="utf-8") as f:
        json.dump(manifest, f, indent=2)
        f.write("\n")
        f.flush()
        os.fsync(f.fileno())
    os.replace(temp, manifest_path)
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
