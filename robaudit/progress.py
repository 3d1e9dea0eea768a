"""Progress bars for the CLI (tqdm on stderr); silent with --quiet or when stderr is not a TTY."""

from __future__ import annotations

from typing import IO, Any


class TerminalProgress:
    """One bar per stage run, counting work units."""

    def __init__(self, stream: IO[str], enabled: bool) -> None:
        self._stream = stream
        self._enabled = enabled
        self._bar: Any = None

    def stage(self, label: str, total_units: int) -> None:
        self.close()
        if self._enabled:
            from tqdm import tqdm

            self._bar = tqdm(total=total_units, desc=label, unit="unit", file=self._stream, leave=False,
                             dynamic_ncols=True)

    def advance(self, n: int = 1) -> None:
        if self._bar is not None:
            self._bar.update(n)

    def close(self) -> None:
        if self._bar is not None:
            self._bar.close()
            self._bar = None
