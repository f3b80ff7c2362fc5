"""Progress lines of the builders, `train` and `evaluate`: a bar, the rate and the ETA,
redrawn in place on a terminal and printed one line at a time in logs."""

import math
import sys
import time


def format_duration(seconds):
    """`1:02:03` / `2:03` for a number of seconds (`?` when unknown)."""
    if seconds is None or not math.isfinite(seconds):
        return "?"
    seconds = round(seconds)
    hours, rest = divmod(seconds, 3600)
    minutes, secs = divmod(rest, 60)
    return f"{hours}:{minutes:02d}:{secs:02d}" if hours else f"{minutes}:{secs:02d}"


def bar(done, total, width=24):
    """`===>    ` for `done` of `total`, `width` characters (full when the total is unknown)."""
    filled = min(width, int(width * done / total)) if total else width
    return "=" * max(0, filled - 1) + (">" if filled < width else "=") if filled else ""


class StatusLine:
    """One status line: redrawn in place on a terminal (at most every `min_interval` seconds),
    printed each time the count passes a multiple of `every`, and at the end, otherwise (logs,
    pipes, CI). Counts may jump (a batch of images at a time): a multiple passed over counts.

    `show(count, text, final)` takes `text` as a function, called only when a line is drawn.
    """

    def __init__(self, stream=None, every=10, min_interval=0.1):
        self.stream = stream or sys.stdout
        self.every = max(1, every)
        self.min_interval = min_interval
        self.interactive = bool(getattr(self.stream, "isatty", lambda: False)())
        self._last_draw = float("-inf")  # the first line is always drawn
        self._previous = None  # the count of the last `show`

    def show(self, count, text, final=False):
        # Counting one at a time, a multiple is passed exactly when `count % every == 0`.
        previous = count - 1 if self._previous is None else self._previous
        self._previous = count
        now = time.monotonic()
        if self.interactive:
            if final or now - self._last_draw >= self.min_interval:
                self.stream.write(f"\r{text()}\033[K{chr(10) if final else ''}")
                self.stream.flush()
                self._last_draw = now
        elif final or count // self.every != previous // self.every:
            self.stream.write(text() + "\n")
            self.stream.flush()

    def message(self, text):
        """A line of its own (a checkpoint, a warning) that does not garble the bar."""
        prefix = "\r\033[K" if self.interactive else ""
        self.stream.write(f"{prefix}{text}\n")
        self.stream.flush()


class ProgressBar:
    """Prints `step 120/30000 [==>   ] loss 0.5321 lr 6.98e-03 12.3 img/s ETA 1:23:45`.

    On a terminal the line is redrawn in place (at most 10 times a second); otherwise (logs,
    pipes, CI) one line is printed every `every` steps and at the end.

    Args:
        total: int. The last step.
        every: int. Steps between printed lines when the stream is not a terminal.
        stream: where to write (stdout).
        width: int. Characters of the bar.
    """

    def __init__(self, total, every=10, stream=None, width=24):
        self.total = total
        self.width = width
        self.status = StatusLine(stream, every)
        self.stream = self.status.stream
        self.interactive = self.status.interactive

    def line(self, step, loss, learning_rate, images_per_sec=None, eta=None):
        rate = f"{images_per_sec:.1f} img/s" if images_per_sec else "- img/s"
        return (
            f"step {step}/{self.total} [{bar(step, self.total, self.width):<{self.width}}] "
            f"loss {loss:.4f} lr {learning_rate:.2e} {rate} ETA {format_duration(eta)}"
        )

    def update(self, step, loss, learning_rate, images_per_sec=None, eta=None, final=False):
        self.status.show(
            step, lambda: self.line(step, loss, learning_rate, images_per_sec, eta), final
        )

    def message(self, text):
        """A line of its own (a checkpoint, a warning) that does not garble the bar."""
        self.status.message(text)
