"""The builders' progress line, on ``deeplab_family.progress`` (the project's one progress
display, shared with ``train`` and ``evaluate``):

    train_aug 1200/10582 [==>                     ] 85.3 img/s ETA 1:50

On a terminal it is redrawn in place; in a log, a pipe or CI one line is printed for each tenth of
the total and one at the end (a redrawn bar such as tqdm's becomes one huge line there).
"""

import math
import sys
import time

from deeplab_family.progress import StatusLine, bar, format_duration


class ImageProgress:
    """Counts images done out of ``total`` and shows the progress line on ``stream``.

    Args:
        total: int. The number of images.
        name: str. What is counted (the split), at the start of the line.
        stream: where to write (stderr).
        lines: int. Lines printed when ``stream`` is not a terminal (plus the final one).
        width: int. Characters of the bar.

    Example:

    >>> import io
    >>> log = io.StringIO()
    >>> progress = ImageProgress(20, "val", stream=log, lines=2)
    >>> progress.update(8)
    >>> progress.update(8)
    >>> progress.update(4)
    >>> progress.close()
    >>> print(log.getvalue(), end="")  # doctest: +ELLIPSIS
    val 16/20 [==================>     ] ... img/s ETA ...
    val 20/20 [========================] ... img/s in ...
    """

    def __init__(self, total, name, stream=None, lines=10, width=24):
        self.total = total
        self.name = name
        self.width = width
        self.count = 0
        self._status = StatusLine(stream or sys.stderr, every=math.ceil(total / max(1, lines)))
        self._start = time.monotonic()
        self._closed = False

    def line(self, final=False):
        elapsed = time.monotonic() - self._start
        rate = self.count / elapsed if elapsed > 0 else 0.0
        if final:
            when = f"in {format_duration(elapsed)}"
        else:
            when = f"ETA {format_duration((self.total - self.count) / rate if rate else None)}"
        return (
            f"{self.name} {self.count}/{self.total} "
            f"[{bar(self.count, self.total, self.width):<{self.width}}] {rate:.1f} img/s {when}"
        )

    def update(self, n=1):
        """Adds ``n`` images done."""
        self.count += n
        if self.count < self.total:  # the final line is close()'s
            self._status.show(self.count, self.line)

    def close(self):
        """Prints the final line (once)."""
        if not self._closed:
            self._closed = True
            self._status.show(self.count, lambda: self.line(final=True), final=True)


class NoProgress:
    """What ``ImageProgress`` does, showing nothing (``--no-progress``)."""

    def update(self, n=1):
        pass

    def close(self):
        pass


def image_progress(total, name, enabled=True):
    """An ``ImageProgress`` on stderr, or a ``NoProgress`` when not ``enabled``."""
    return ImageProgress(total, name) if enabled else NoProgress()
