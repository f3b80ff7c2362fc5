"""`python -m deeplab_family.train`: flags and the errors a user sees (the full runs are in
tests/training/test_fault_tolerance.py, which drives this command in child processes)."""

import re

import pytest

from deeplab_family import train
from tests.training.helpers import TINY_CONFIG


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
