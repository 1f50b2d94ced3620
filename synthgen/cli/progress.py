"""The progress bar every long command shows (tqdm on stderr: rate per second and ETA once the total is known).

It opens at the first update or at ``start(total)``, not when it is made, so an error raised before any work prints
alone. Work that learns its total late (a validation plan, this process's part of a sharded job) calls
``start(total)`` or ``set_total(total)``.
"""

from __future__ import annotations

import sys


class ProgressBar:
    """A progress callback ``bar(k)`` (k more units done, counted in ``done``) with ``start``, ``set_total`` and
    ``close``; tqdm draws it only on a terminal."""

    def __init__(self, desc: str, total: int | None = None, unit: str = "tile"):
        self.desc, self.total, self.unit, self.bar = desc, total, unit, None
        self.done = 0

    def start(self, total: int | None) -> None:
        """Open the bar with a known total."""
        from tqdm import tqdm

        self.total = total
        self.bar = tqdm(total=total, desc=self.desc, unit=self.unit, dynamic_ncols=True, disable=None, file=sys.stderr)

    def set_total(self, total: int | None) -> None:
        """Change the total (before or after the bar opened)."""
        self.total = total
        if self.bar is not None:
            self.bar.total = total
            self.bar.refresh()

    def __call__(self, k: int = 1) -> None:
        if self.bar is None:
            self.start(self.total)
        self.done += k
        self.bar.update(k)

    def close(self) -> None:
        """Close the bar if it was opened."""
        if self.bar is not None:
            self.bar.close()

    def __enter__(self) -> ProgressBar:
        return self

    def __exit__(self, *exc) -> None:
        self.close()
