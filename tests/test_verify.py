"""`python -m deeplab_family.export.verify`: the export scores what `evaluate` scores."""

import dataclasses
import json
import os

import keras
import pytest
import tensorflow as tf

from deeplab_family import config as config_lib
from deeplab_family import export as export_lib
from deeplab_family.export import verify
from deeplab_family.export.export_dir import INFO_FILENAME
from tests import export_fixtures as ef


@pytest.fixture(scope="module")
def trained(tmp_path_factory):
    keras.utils.set_random_seed(0)
    base = str(tmp_path_factory.mktemp("verify"))
    records = ef.colour_coded_records(os.path.join(base, "data"), num_train=8, num_val=4)
    model_dir = os.path.join(base, "model")
    config = ef.make_model_dir(model_dir, records)
    return {"records": records, "model_dir": model_dir, "config": config, "base": base}


def _export(trained, name, **export_values):
    config = dataclasses.replace(
        trained["config"],
        export=dataclasses.replace(trained["config"].export, probabilities=False,
                                   **export_values))
    return export_lib.export(config, trained["model_dir"], os.path.join(trained["base"], name),
                             log=lambda m: None)


def test_multi_scale_flip_export_has_evaluates_confusion_matrix(trained, capsys):
    info = _export(trained, "ms_flip", scales=(0.75, 1.0, 1.25), flip=True)
    report = verify.verify_export(info["path"])
    assert report["num_images"] == 4
    assert report["num_pixels"] > 4 * 40 * 48  # every val pixel (none is void here)
    assert report["equal"], report
    assert report["differing_pixels"] == 0
    assert report["evaluate_miou"] == report["export_miou"]
    # The model predicts more than background, so equal matrices are not a trivial agreement.
    assert report["evaluate_miou"] > 0.2, report

    assert verify.main(["--export", os.path.dirname(info["path"])]) == 0
    assert "the same confusion matrix on 4 images" in capsys.readouterr().err


def test_an_export_that_computes_something_else_is_found(trained, capsys):
    """An export whose recorded settings are not what its graph does (here: no flip baked in,
    `export_info.json` claims flip) gives two different matrices and exit status 1."""
    info = _export(trained, "claims_flip", flip=False)
    path = os.path.join(info["path"], INFO_FILENAME)
    with open(path) as f:
        values = json.load(f)
    values["flip"] = True
    with open(path, "w") as f:
        json.dump(values, f)
    report = verify.verify_export(info["path"])
    assert not report["equal"]
    assert report["differing_pixels"] > 0
    assert verify.main(["--export", info["path"]]) == 1
    assert "DIFFERENT confusion matrices" in capsys.readouterr().err


def test_the_exported_checkpoint_is_verified_not_the_newest(trained, tmp_path):
    """Training that went on after the export (a newer checkpoint with other weights) does not
    change what the export is checked against."""
    import shutil

    from deeplab_family.inference import load_inference_model

    model_dir = str(tmp_path / "model")
    shutil.copytree(trained["model_dir"], model_dir)
    own = {**trained, "model_dir": model_dir, "base": str(tmp_path)}
    info = _export(own, "export", scales=(1.0,), flip=True)
    model, _ = load_inference_model(trained["config"].model, model_dir)
    for v in model.trainable_variables:
        v.assign(v + 0.05)
    manager = tf.train.CheckpointManager(
        tf.train.Checkpoint(model=model), os.path.join(model_dir, "checkpoints"), 5)
    manager.save(checkpoint_number=2)
    assert manager.latest_checkpoint != info["checkpoint"]
    report = verify.verify_export(info["path"])
    assert report["checkpoint"] == info["checkpoint"]
    assert report["equal"], report


def test_errors_name_the_problem(trained, tmp_path, capsys):
    empty = tmp_path / "1"
    empty.mkdir()
    (empty / "saved_model.pb").write_bytes(b"")
    assert verify.main(["--export", str(empty)]) == 1
    assert f"has no {INFO_FILENAME}" in capsys.readouterr().err

    info = _export(trained, "for_bad_pattern")
    assert verify.main(["--export", info["path"],
                        "--set", f"eval_data.file_pattern={tmp_path}/none-*"]) == 1
    assert "no TFRecord files match" in capsys.readouterr().err


def test_evaluation_config_takes_the_exports_settings(trained):
    info = {"config": trained["config"].to_dict(), "output_stride": 16, "scales": [0.5, 1.0],
            "flip": True, "window": {"size": [33, 33], "stride": [22, 22]}}
    config = verify.export_evaluation_config(info)
    assert config.evaluation.output_stride == 16
    assert config.evaluation.scales == (0.5, 1.0)
    assert config.evaluation.flip is True
    assert config.inference.window == config_lib.WindowConfig(size=(33, 33), stride=(22, 22))
    assert config.eval_data.eval_crop_size is None


def test_max_images_takes_the_images_evaluate_takes(trained, tmp_path, capsys):
    """With several val shards, `--max-images N` scores the same first N images on both sides
    (evaluate interleaves the shards record by record; reading them one after another would
    score other images and report a difference)."""
    records = list(tf.data.TFRecordDataset(sorted(tf.io.gfile.glob(trained["records"]["val"]))))
    writers = [tf.io.TFRecordWriter(str(tmp_path / f"val2-{i:05d}-of-00002.tfrecord"))
               for i in range(2)]
    for i, record in enumerate(records):  # dealt round-robin, as the builders deal them
        writers[i % 2].write(record.numpy())
    for writer in writers:
        writer.close()
    info = _export(trained, "two_shards", flip=True)
    pattern = f"eval_data.file_pattern={tmp_path}/val2-*.tfrecord"
    # 4 images, shard 0 = images 0 and 2, shard 1 = images 1 and 3: the first two read
    # shard by shard would be {0, 2}, evaluate's are {0, 1}.
    report = verify.verify_export(info["path"], [pattern], max_images=2)
    assert report["num_images"] == 2
    assert report["equal"], report
    with pytest.raises(SystemExit) as exit_info:
        verify.main(["--export", info["path"], "--set", pattern, "--max-images", "0"])
    assert exit_info.value.code == 2
    assert "must be an int >= 1" in capsys.readouterr().err


def test_bfloat16_export_has_evaluates_confusion_matrix(trained):
    """A bfloat16 SavedModel against `evaluate --precision bfloat16`: the same network, cast
    the same way, in a traced graph on both sides."""
    info = _export(trained, "bf16", precision="bfloat16", flip=True)
    assert info["precision"] == "bfloat16"
    report = verify.verify_export(info["path"])
    assert report["precision"] == "bfloat16"
    assert report["equal"], report
