"""What monitoring costs a request, in-process: recording a scored batch into a model
version's drift window and remembering the request's items for feedback (the only work on
the request path), and a report (the tests, off the path).

    .venv/bin/python -m bench.monitor_cost [--number 20000]

On make bench's default model (20 latent dimensions; an image model keeps no features) and a
table's shape (4 dimensions, 30 features, as breast-cancer): one item and a batch of 64, best
of five rounds, a write of what was kept every 1,024 items included; then one report over
a full window of 500 against a 2,000-row reference. A hot loop flatters per-request work: what
a whole request pays is `bench.asgi_cost` with VAE_MONITORING on and off (bench/MONITORING.md).
The whole server, monitoring on against off, is `python -m bench.server_cpu --route
anomaly-score VAE_MONITORING=true vs VAE_MONITORING=false`.
"""

from __future__ import annotations

import argparse
import functools
import timeit
from collections.abc import Callable, Sequence

import numpy as np

from bundle.reference import build_reference
from service.monitoring.assess import RatePromise
from service.monitoring.monitor import ModelMonitor, MonitorSettings

# A threshold at the 99th percentile of many calibration scores: a promise of 1%.
PROMISE = RatePromise(6.6, 99.0, 100_000)
# Items between writes of what the request path kept: the app's timer writes every 0.25 s, a
# worker at full rate serves ~1,000 single-item requests in that time.
WRITE_EVERY = 1024


def _per_call(
    keep: Callable[[], None], write: Callable[[], None], calls: int, number: int
) -> float:
    """Microseconds a call of `keep`, with a `write` after every `calls` calls: best of five
    rounds of about `number` calls."""

    def cycle() -> None:
        for _ in range(calls):
            keep()
        write()

    cycles = max(1, number // calls)
    seconds = min(timeit.repeat(cycle, number=cycles, repeat=5))
    return seconds / (cycles * calls) * 1e6


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench.monitor_cost", description=__doc__)
    parser.add_argument("--number", type=int, default=20_000)
    options = parser.parse_args(argv)
    rng = np.random.default_rng(0)
    settings = MonitorSettings(window=500, alpha=0.05, min_items=50, report_interval_s=0.0)
    for label, latent, features in (("image, 20 dims", 20, None), ("table, 4 dims + 30", 4, 30)):
        reference = build_reference(
            {"recon_mse": rng.gamma(2.0, 1.0, 2000)},
            rng.normal(size=(2000, latent)),
            None if features is None else rng.normal(size=(2000, features)),
        )
        monitor = ModelMonitor(
            "m", "1", "recon_mse", PROMISE, reference, latent, features or 64, settings
        )
        for batch in (1, 64):
            scores = rng.gamma(2.0, 1.0, batch)
            arguments = (
                scores,
                rng.normal(size=(batch, latent)).astype(np.float32),
                rng.normal(size=(batch, features or 64)).astype(np.float32),
            )
            calls = max(1, WRITE_EVERY // batch)  # a write of what was kept every 1,024 items
            window_us = _per_call(
                functools.partial(monitor.record, *arguments),
                monitor.home.window.flush,
                calls,
                options.number,
            )
            ring_us = _per_call(
                functools.partial(monitor.remember, "4bf92f3577b34da6", scores),
                monitor.home.feedback.flush,
                calls,
                options.number,
            )
            print(
                f"{label}: a batch of {batch:>2}: drift window {window_us:5.2f} us, feedback "
                f"ring {ring_us:5.2f} us ({(window_us + ring_us) / batch:5.2f} us an item, "
                "writes included)"
            )
        seconds = min(timeit.repeat(monitor.report, number=20, repeat=3)) / 20
        print(f"{label}: one report over a full window: {seconds * 1e3:.1f} ms")
        monitor.close()
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
