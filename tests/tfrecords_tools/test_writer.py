"""The TensorFlow-free TFRecord writer against TensorFlow's own reader and writer."""

import fnmatch
import os
import subprocess
import sys

import numpy as np
import pytest
import tensorflow as tf

from deeplab_family import _files
from deeplab_family.data import schema
from tfrecords_tools import example, framing, writer


def _crc_reference(data):
    """The bytewise CRC32C of RFC 3720 (B.4), as a reference for the package's."""
    table = []
    for i in range(256):
        c = i
        for _ in range(8):
            c = (c >> 1) ^ 0x82F63B78 if c & 1 else c >> 1
        table.append(c)
    crc = 0xFFFFFFFF
    for byte in data:
        crc = table[(crc ^ byte) & 0xFF] ^ (crc >> 8)
    return crc ^ 0xFFFFFFFF


def test_crc32c_known_value():
    assert framing.crc32c(b"123456789") == 0xE3069283
    assert framing.crc32c(b"") == 0
    assert framing.crc32c(bytearray(b"123456789")) == 0xE3069283
    assert framing.crc32c(memoryview(b"123456789")) == 0xE3069283


@pytest.mark.parametrize("size", [1, 8, 1023, 1024, 1025, 4096 + 3, 70_001])
def test_crc32c_matches_the_bytewise_reference(size):
    data = np.random.default_rng(size).integers(0, 256, size, dtype=np.uint8).tobytes()
    assert framing.crc32c(data) == _crc_reference(data)


def test_records_are_byte_identical_to_tensorflow_writer(tmp_path):
    rng = np.random.default_rng(0)
    records = [
        example.encode_example({"a": b"x" * 70_000, "n": [-5, 0, 2**40], "s": ["hi", "ü"]}),
        example.encode_example({"empty": [], "one": 1}),
        b"",
        b"\x00",
        rng.integers(0, 256, 3 * 2**20 + 5, dtype=np.uint8).tobytes(),  # larger than any image
        example.segmentation_example(
            rng.integers(0, 256, 200_000, dtype=np.uint8).tobytes(),  # a JPEG-sized payload
            "jpeg",
            example.encode_label_png(rng.integers(0, 21, (375, 500), dtype=np.uint8)),
            "2007_000032",
            375,
            500,
        ),
        b"",
    ]
    ours = framing.TFRecordFile(str(tmp_path / "ours.tfrecord"))
    for r in records:
        ours.write(r)
    ours.close()
    with tf.io.TFRecordWriter(str(tmp_path / "tf.tfrecord")) as w:
        for r in records:
            w.write(r)
    assert (tmp_path / "ours.tfrecord").read_bytes() == (tmp_path / "tf.tfrecord").read_bytes()
    assert ours.count == len(records)
    assert [r.numpy() for r in tf.data.TFRecordDataset(str(tmp_path / "ours.tfrecord"))] == records


def test_writer_still_exports_the_names_other_modules_use():
    assert writer.TFRecordFile is framing.TFRecordFile
    assert writer.segmentation_example is example.segmentation_example
    assert writer.encode_label_png is example.encode_label_png


def test_encoded_example_is_byte_identical_to_tensorflow():
    features = {"b": [b"\x00\xff", b""], "i": [-1, 7, 2**62], "s": "id/é", "e": [], "z": 5,
                "n": example.Int64List()}
    feature = {
        "b": tf.train.Feature(bytes_list=tf.train.BytesList(value=[b"\x00\xff", b""])),
        "i": tf.train.Feature(int64_list=tf.train.Int64List(value=[-1, 7, 2**62])),
        "s": tf.train.Feature(bytes_list=tf.train.BytesList(value=["id/é".encode()])),
        "e": tf.train.Feature(bytes_list=tf.train.BytesList()),
        "z": tf.train.Feature(int64_list=tf.train.Int64List(value=[5])),
        "n": tf.train.Feature(int64_list=tf.train.Int64List()),
    }
    reference = tf.train.Example(features=tf.train.Features(feature=feature))
    assert example.encode_example(features) == reference.SerializeToString(deterministic=True)


def test_encoded_example_parses_with_tensorflow():
    example_proto = tf.train.Example.FromString(
        example.encode_example({"b": [b"\x00\xff", b""], "i": [-1, 7, 2**62], "s": "id/é"})
    )
    feature = example_proto.features.feature
    assert list(feature["b"].bytes_list.value) == [b"\x00\xff", b""]
    assert list(feature["i"].int64_list.value) == [-1, 7, 2**62]
    assert feature["s"].bytes_list.value[0].decode() == "id/é"


def test_segmentation_example_has_research_deeplab_keys():
    record = example.segmentation_example(b"jpg", "jpeg", b"png", "2007_000032", 281, 500)
    feature = tf.train.Example.FromString(record).features.feature
    assert set(feature.keys()) == {
        "image/encoded",
        "image/filename",
        "image/format",
        "image/height",
        "image/width",
        "image/channels",
        "image/segmentation/class/encoded",
        "image/segmentation/class/format",
    }
    assert feature["image/height"].int64_list.value[0] == 281
    assert feature["image/channels"].int64_list.value[0] == 3


def test_label_png_is_single_channel_indices():
    label = np.array([[0, 1, 255], [20, 15, 0]], np.uint8)
    decoded = tf.io.decode_png(example.encode_label_png(label), channels=1)[..., 0].numpy()
    np.testing.assert_array_equal(decoded, label)
    with pytest.raises(ValueError, match="2-D uint8"):
        example.encode_label_png(label.astype(np.int32))


def test_temporary_names_never_match_a_shard_glob():
    final = schema.shard_name("train", 0, 4)
    assert final == "train-00000-of-00004.tfrecord"
    temp = _files.temporary_name(final, pid=123)
    assert temp == ".train-00000-of-00004.tfrecord.tmp-123"
    patterns = ("train-*", "train*", schema.shard_glob("train"), "*.tfrecord", "*-of-*.tfrecord")
    assert not any(fnmatch.fnmatch(temp, pattern) for pattern in patterns)


def test_temporary_files_are_invisible_to_tf_glob(tmp_path):
    (tmp_path / _files.temporary_name(schema.shard_name("train", 0, 1), pid=1)).write_bytes(b"")
    assert tf.io.gfile.glob(str(tmp_path / "train*")) == []


def test_write_split_argument_checks(tmp_path):
    with pytest.raises(ValueError, match=r"split must match"):
        writer.write_split("a/b", [], str(tmp_path), num_classes=21)
    with pytest.raises(ValueError, match=r"num_shards must be an int >= 1. Received: num_shards=0"):
        writer.write_split("a", [], str(tmp_path), num_classes=21, num_shards=0)
    with pytest.raises(writer.BuildError, match="split 'a' is empty"):
        writer.write_split("a", [], str(tmp_path), num_classes=21)


def test_default_num_shards():
    assert writer.default_num_shards(1) == 1
    assert writer.default_num_shards(500) == 1
    assert writer.default_num_shards(10_582) == 22


def test_builders_import_no_tensorflow():
    """The builders and their spawned workers stay free of TensorFlow (and of tqdm): a worker
    starts in a fraction of a second."""
    modules = ("voc", "cityscapes", "synthetic", "writer", "framing", "example", "sources", "cli")
    script = (
        "import sys\n"
        + "".join(f"import tfrecords_tools.{m}\n" for m in modules)
        + "print(sorted({m.split('.')[0] for m in sys.modules} & {'tensorflow', 'keras', 'tqdm'}))"
    )
    root = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
    result = subprocess.run(
        [sys.executable, "-c", script],
        cwd=root,
        capture_output=True,
        text=True,
        timeout=60,
        check=True,
    )
    assert result.stdout.strip() == "[]", result.stdout + result.stderr
