"""What the rings keep aside between writes, and why.

The request path hands a ring each scored batch; the ring keeps its values aside as plain
Python values in lists (a float and a bool an item, the codes' and features' bytes a batch), and
writes them into its numpy ring as one block: once FLUSH_ITEMS wait, on the app's timer
(service.dataplane.monitor_flush, every 0.25 s), or when this worker reads its own ring. Other
workers see the items once written.

Measured in-process, a single-item /anomaly-score with the monitors attached against detached,
rounds alternated in one process (`python -m bench.asgi_cost --monitoring-pairs --rounds 40
--requests 1000`, median of 40 pairs; bench/MONITORING.md):

- each request's arrays kept as an entry, joined 64 at a time (the previous design): +11.9 and
  +12.6 us a request, of ~140;
- the same, joined 1,024 at a time: +7.8 to +8.8 (the join's code runs 16 times less often);
- as here, Python values joined 1,024 at a time: +8.6 to +9.9, and no request's arrays held
  until the join (a hot loop: 2.0 us an item, 0.2 in batches of 64, `bench.monitor_cost`);
- staged in preallocated numpy rows instead: +15.9 (each element assignment is a numpy call).
1,024 items is at most ~150 kB kept aside per model version and worker; the timer writes
sooner under light traffic.
"""

from __future__ import annotations

import numpy as np
import numpy.typing as npt

from bundle.arrays import AnyFloatArray

FLUSH_ITEMS = 1024


def extend_items(
    scores_kept: list[float],
    flags_kept: list[bool],
    scores: AnyFloatArray,
    flags: npt.NDArray[np.bool_],
) -> int:
    """Append a batch's scores and flags (flat, equal lengths) to the kept lists, as Python
    values; how many. A single item costs two `item` calls, not an array's worth of work."""
    count = len(scores)
    if count != len(flags) or scores.ndim != 1 or flags.ndim != 1:
        raise ValueError(f"{count} scores and {len(flags)} flags: not one flat batch")
    if count == 1:
        scores_kept.append(scores.item(0))
        flags_kept.append(flags.item(0))
    else:
        scores_kept.extend(scores.tolist())
        flags_kept.extend(flags.tolist())
    return count
