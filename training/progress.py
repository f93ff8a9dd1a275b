"""What a training run tells the person watching it, and how long each part took.

Most of a run is not the training loop: on the README's 303-row CSV (2 cores, defaults) the
kept model's loop took 20 s of an 82 s run, the calibration's five fold models 40 s. So each phase
is named on stderr as it starts and timed when it ends, beside the loop's own progress bar
(training.train, tqdm). Like that bar, the lines show only on a terminal, never in CI logs or
with `--quiet`; the timings always reach the summary and model.json.
"""

from __future__ import annotations

import sys
import time

from tqdm.auto import tqdm


class RunProgress:
    """Phase lines on a terminal and each phase's wall-clock seconds. Phases follow one
    another: `begin` ends the one running, `end` the last.

    `show`: None shows the lines when stderr is a terminal (tqdm's own rule for its bars),
    True or False forces it.
    """

    def __init__(self, show: bool | None = None) -> None:
        self.show = sys.stderr.isatty() if show is None else show
        self.started = time.perf_counter()
        self.seconds: dict[str, float] = {}
        self._current: tuple[str, float] | None = None

    def begin(self, name: str, detail: str = "") -> None:
        """End the running phase and start `name`; `detail` is said, not kept."""
        self.end()
        if self.show:
            # tqdm.write keeps the line clear of a bar drawn at the same time.
            tqdm.write(f"vae-train: {name}{f' ({detail})' if detail else ''} ...", file=sys.stderr)
        self._current = (name, time.perf_counter())

    def end(self) -> None:
        if self._current is None:
            return
        name, began = self._current
        self._current = None
        spent = time.perf_counter() - began
        self.seconds[name] = self.seconds.get(name, 0.0) + spent
        if self.show:
            tqdm.write(f"vae-train: {name}: {spent:.1f} s", file=sys.stderr)

    def total_seconds(self) -> float:
        return time.perf_counter() - self.started

    def rounded(self) -> dict[str, float]:
        return {name: round(seconds, 2) for name, seconds in self.seconds.items()}
