"""What monitoring costs a request, in-process: recording a scored batch into a model
version's drift window and remembering the request's items for feedback (the only work on
the request path), and a report (the tests, off the path).

    .venv/bin/python -m bench.monitor_cost [--number 20000]

On make bench's default model (20 latent dimensions; an image model keeps no features) and a
table's shape (4 dimensions, 30 features, as breast-cancer): one item and a batch of 64, best
of five rounds, amortised over the writes the rings make every 64 items; then one report over
a full window of 500 against a 2,000-row reference. A hot loop flatters per-request work: what
a whole request pays is `bench.asgi_cost` with VAE_MONITORING on and off (bench/MONITORING.md).
The whole server, monitoring on against off, is `python -m bench.server_cpu --route
anomaly-score VAE_MONITORING=true vs VAE_MONITORING=false`.
"""

from __future__ import annotations

import argparse
import functools
import timeit
from collections.abc import Sequence

import numpy as np

from bundle.reference import build_reference
from service.monitoring.assess import RatePromise
from service.monitoring.monitor import ModelMonitor, MonitorSettings

# A threshold at the 99th percentile of many calibration scores: a promise of 1%.
PROMISE = RatePromise(6.6, 99.0, 100_000)


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
            record = functools.partial(monitor.record, *arguments)
            seconds = min(timeit.repeat(record, number=options.number, repeat=5))
            per_call = seconds / options.number * 1e6
            remember = functools.partial(monitor.remember, "4bf92f3577b34da6", scores)
            kept = min(timeit.repeat(remember, number=options.number, repeat=5))
            kept_us = kept / options.number * 1e6
            print(
                f"{label}: a batch of {batch:>2}: drift window {per_call:5.2f} us, feedback "
                f"ring {kept_us:5.2f} us ({(per_call + kept_us) / batch:5.2f} us an item)"
            )
        seconds = min(timeit.repeat(monitor.report, number=20, repeat=3)) / 20
        print(f"{label}: one report over a full window: {seconds * 1e3:.1f} ms")
        monitor.close()
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
