"""The progress lines of `train` and `evaluate`: in place on a terminal, one line per N in logs."""

import io

from deeplab_family.evaluate import EvalProgress
from deeplab_family.progress import ProgressBar, StatusLine, bar, format_duration


class Terminal(io.StringIO):
    def isatty(self):
        return True


def test_format_duration_and_bar():
    assert [format_duration(s) for s in (None, float("inf"), 5, 125, 3723)] == [
        "?", "?", "0:05", "2:05", "1:02:03"]
    assert bar(0, 10, 10) == ""
    assert bar(5, 10, 10) == "====>"
    assert bar(10, 10, 10) == "=" * 10
    assert bar(3, None, 4) == "===="  # unknown total: full


def test_logs_get_one_line_every_n_and_the_final_one():
    out = io.StringIO()
    progress = ProgressBar(25, every=10, stream=out)
    for step in range(1, 26):
        progress.update(step, 0.5, 1e-3, images_per_sec=2.0, eta=60 - step)
    progress.update(25, 0.5, 1e-3, images_per_sec=2.0, eta=0, final=True)
    lines = out.getvalue().splitlines()
    assert [line.split(" [")[0] for line in lines] == ["step 10/25", "step 20/25", "step 25/25"]
    assert "loss 0.5000 lr 1.00e-03 2.0 img/s ETA 0:50" in lines[0]
    assert "\r" not in out.getvalue()


def test_a_terminal_gets_the_line_redrawn_in_place():
    out = Terminal()
    status = StatusLine(out, every=1000, min_interval=0.0)
    drawn = []
    for i in range(3):
        status.show(i, lambda i=i: drawn.append(i) or f"line {i}")
    status.message("checkpoint saved")
    status.show(3, lambda: "done", final=True)
    text = out.getvalue()
    assert drawn == [0, 1, 2]  # every call draws with min_interval 0, whatever `every` says
    assert text.count("\r") == 5 and text.endswith("\rdone\033[K\n")
    assert "\r\033[Kcheckpoint saved\n" in text

    lazy = StatusLine(Terminal(), min_interval=3600)
    calls = []
    lazy.show(1, lambda: calls.append(1) or "a")
    lazy.show(2, lambda: calls.append(2) or "b")  # within min_interval: not even formatted
    assert calls == [1]


def test_evaluation_line_without_a_known_total():
    out = io.StringIO()
    progress = EvalProgress(None, out, every=2)
    for count in range(1, 4):
        progress.update(count, 0.25)
    progress.update(3, 0.25, final=True)
    lines = out.getvalue().splitlines()
    assert [line.split(" mIoU")[0] for line in lines] == ["evaluate 2", "evaluate 3"]
    assert all("mIoU 0.2500" in line and "ETA" not in line for line in lines)


def test_logs_get_a_line_for_every_multiple_passed_when_counts_jump():
    """Counting a batch at a time (evaluation at batch 4, a builder's shard): a multiple of
    `every` that the count jumps over still prints its line."""
    log = io.StringIO()
    status = StatusLine(log, every=10)
    for count in range(4, 25, 4):  # 4, 8, 12, 16, 20, 24
        status.show(count, lambda count=count: f"at {count}")
    status.show(26, lambda: "done", final=True)
    assert log.getvalue().splitlines() == ["at 12", "at 20", "done"]
