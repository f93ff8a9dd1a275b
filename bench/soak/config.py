"""The soak's fixed settings: where it writes, the lowered body limit, the load beside it and
the targets' limits."""

from __future__ import annotations

from bench.shared import BENCH

OUT = BENCH / "out" / "soak"
# Above every valid body of the mix (the largest is ~50 kB of npy for the 784-input model) and
# far below the 64 MiB default, so the over-limit kind costs 128 kB per request, not 64 MiB.
MAX_BODY_BYTES = 64 * 1024
WORKER_MAX_MB = 300.0  # issue 7, as in bench/report.py
SLOPE_MAX_MB_PER_MIN = 5.0
SETTLE_S = 10.0  # the slope is judged after this: arenas and caches fill at first
# Beside the load (bench/hostile_mix.py): connections trickling a request head, and silent
# ones, each replaced when the server cuts it off after VAE_HEADER_TIMEOUT_S (default 10 s).
TRICKLING, SILENT, HEAD_TIMEOUT_S = 40, 8, 10.0
HEALTH_MAX_MS = 100.0
NPY_ROWS = 16  # items in the npy bodies
MODEL_KEYS = ("default", "784")
