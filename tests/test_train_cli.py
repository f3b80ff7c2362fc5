"""`python -m deeplab_family.train`: flags and the errors a user sees (the full runs are in
tests/training/test_fault_tolerance.py, which drives this command in child processes)."""

import os
import re
import subprocess
import sys

import pytest
import yaml

from deeplab_family import train
from tests.training.helpers import REPO, TEST_OVERRIDES, TINY_CONFIG, subprocess_env


def test_flags():
    args = train.parse_args(["--config", "c.yaml", "--model-dir", "m", "--set", "a.b=1",
                             "--set", "c.d=[1, 2]", "--cpu-replicas", "2"])
    assert args.overrides == ["a.b=1", "c.d=[1, 2]"] and args.cpu_replicas == 2
    with pytest.raises(SystemExit):
        train.parse_args(["--config", "c.yaml"])  # --model-dir is required


@pytest.mark.parametrize(
    "argv, message",
    [
        (["--config", "nope.yaml"], "config file not found: nope.yaml"),
        (["--config", TINY_CONFIG, "--set", "training.stepz=3"], r"unknown key\(s\) \['stepz'\]"),
        (["--config", TINY_CONFIG, "--cpu-replicas", "-1"], "cpu_replicas must be an int >= 0"),
    ],
)
def test_bad_config_exits_1_with_a_message(argv, message, tmp_path, capsys):
    assert train.main([*argv, "--model-dir", str(tmp_path)]) == 1
    err = capsys.readouterr().err
    assert err.startswith("error: ")
    assert re.search(message, err)


def test_cpu_replicas_splits_the_cpu_of_a_fresh_process(tmp_path):
    """`--cpu-replicas 3` in a process of its own (the test session's CPU is split in two by
    conftest.py, so only a fresh process shows the flag at work): MirroredStrategy on three
    logical CPUs. The run stops right after, at the dataset (its pattern matches no file)."""
    model_dir = str(tmp_path / "model")
    sets = [*TEST_OVERRIDES, "train_data.batch_size=6",
            f"train_data.file_pattern={tmp_path}/none-*.tfrecord"]
    args = [sys.executable, "-m", "deeplab_family.train", "--config", TINY_CONFIG,
            "--model-dir", model_dir, "--cpu-replicas", "3",
            *[a for s in sets for a in ("--set", s)]]
    proc = subprocess.run(args, env=subprocess_env(), cwd=REPO, capture_output=True, text=True,
                          timeout=240)
    out = proc.stdout + proc.stderr
    devices = ", ".join(f"device:CPU:{i}" for i in range(3))
    assert f"strategy: MirroredStrategy with 3 replica(s) ({devices} on this worker)" in out, out
    assert "no TFRecord files match" in out and proc.returncode != 0
    with open(os.path.join(model_dir, "config.yaml")) as f:
        saved = yaml.safe_load(f)
    assert saved["runtime"]["cpu_replicas"] == 3 and saved["training"]["sync_bn"] is True
