"""What the command-line tools share (deeplab_family/cli.py): the `--config` fallback to
`<model_dir>/config.yaml`, the exit statuses and the `error: ` line. The tools' heavy work is
replaced by a stub where only the command line is under test."""

import pytest

from deeplab_family import cli, evaluate, predict, train
from deeplab_family import config as config_lib
from deeplab_family.export import cli as export_cli
from tests.training.helpers import TEST_OVERRIDES, TINY_CONFIG

# Each tool that reads a model dir: (its main, the module attribute doing the work, a stub
# result that main can summarise, the extra arguments it needs).
TOOLS = {
    "evaluate": (evaluate.main, evaluate, "evaluate", {
        "miou": 0.5, "pixel_accuracy": 0.5, "per_class_iou": {}, "num_images": 1,
        "output_stride": 8, "scales": [1.0], "flip": False, "window": None, "precision": "float32",
        "step": 1, "results_file": "r.json",
    }, []),
    "export": (export_cli.main, export_cli, "export", {"path": "e/1", "tflite": {}},
               ["--export-dir", "unused"]),
}


def _sets(*overrides):
    return [a for s in overrides for a in ("--set", s)]


@pytest.mark.parametrize("tool", sorted(TOOLS))
def test_tools_fall_back_to_the_model_dir_config(tool, tmp_path, monkeypatch):
    main, module, attribute, result, extra = TOOLS[tool]
    model_dir = str(tmp_path / "model")
    # A config that differs from the tiny YAML's, so that only the model dir's can pass.
    saved = config_lib.load_config(TINY_CONFIG, [*TEST_OVERRIDES, "model.num_classes=7"])
    config_lib.save_config(saved, model_dir)
    received = []

    def stub(config, *args, **kwargs):
        received.append(config)
        return result

    monkeypatch.setattr(module, attribute, stub)
    assert main(["--model-dir", model_dir, *extra, *_sets("training.steps=3")]) == cli.EXIT_OK
    (config,) = received
    want = config_lib.load_config(f"{model_dir}/config.yaml", ["training.steps=3"])
    assert config.to_dict() == want.to_dict() and config.model.num_classes == 7
    # An explicit --config still wins.
    assert main(["--config", TINY_CONFIG, "--model-dir", model_dir, *extra]) == cli.EXIT_OK
    assert received[-1].model.num_classes == 21


@pytest.mark.parametrize("tool", sorted(TOOLS))
def test_no_config_is_a_usage_error(tool, tmp_path, capsys):
    main, _, _, _, extra = TOOLS[tool]
    assert main(["--model-dir", str(tmp_path), *extra]) == cli.EXIT_USAGE == 2
    assert capsys.readouterr().err == (
        f"error: no --config given and no config.yaml in {tmp_path}: pass the experiment's "
        "YAML with --config\n")


@pytest.mark.parametrize("tool", ["train", "evaluate", "export", "predict"])
def test_every_tool_reports_an_error_line_and_its_status(tool, tmp_path, capsys):
    """One `error: ` line on stderr, and the shared statuses: what the command line names
    does not work (1), or it names nothing to run (2)."""
    sets = _sets(*TEST_OVERRIDES)
    model_dir = ["--model-dir", str(tmp_path)]
    argv, status, message = {
        "train": (["--config", "nope.yaml", *model_dir], cli.EXIT_FAILURE,
                  "config file not found: nope.yaml"),
        "evaluate": (["--config", TINY_CONFIG, *model_dir, *sets], cli.EXIT_FAILURE,
                     f"no checkpoint in {tmp_path}"),
        "export": (["--config", TINY_CONFIG, *model_dir, "--export-dir", str(tmp_path / "e"),
                    *sets], cli.EXIT_FAILURE, f"no checkpoint in {tmp_path}"),
        "predict": (["--model", str(tmp_path), "x.jpg", "--output-dir", str(tmp_path)],
                    cli.EXIT_USAGE, f"cannot load --model {tmp_path}"),
    }[tool]
    main = {"train": train.main, "evaluate": evaluate.main, "export": export_cli.main,
            "predict": predict.main}[tool]
    assert main(argv) == status
    err = capsys.readouterr().err
    lines = [line for line in err.splitlines() if line.startswith(cli.ERROR_PREFIX)]
    assert len(lines) == 1 and lines[0].startswith(f"error: {message}"), err


def test_train_reports_an_error_found_while_building_as_one_line(tmp_path, capsys):
    """A head option is checked when the model is built, inside the loop: still one line."""
    argv = ["--config", TINY_CONFIG, "--model-dir", str(tmp_path),
            *_sets(*TEST_OVERRIDES, "model.head.aspp_filters=0",
                   f"train_data.file_pattern={tmp_path}/none-*.tfrecord")]
    assert train.main(argv) == cli.EXIT_FAILURE
    err = capsys.readouterr().err
    assert "Traceback" not in err
    lines = [line for line in err.splitlines() if line.startswith(cli.ERROR_PREFIX)]
    assert len(lines) == 1, err
