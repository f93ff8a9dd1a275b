"""The compute ceiling: reconstruct (preprocess, encoder, decoder on mu, invert) called on
onnxruntime in this process, no HTTP, with the service's own session options."""

from __future__ import annotations

import time
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import numpy as np
import numpy.typing as npt

from bundle.runtime import OnnxBundle
from service.models.repository import session_options
from service.settings import ServiceSettings


@dataclass
class InProcessResult:
    batch: int
    intra_op_threads: int
    calls: int
    seconds: float
    items_per_s: float
    mean_call_ms: float

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


def reconstruct(bundle: OnnxBundle, x: npt.NDArray[np.float32]) -> npt.NDArray[np.float32]:
    encoding = bundle.encode_model(bundle.to_model_input(x))
    return bundle.preprocessing.invert(bundle.decode_model(encoding.mu))


def time_batch(
    bundle: OnnxBundle, x: npt.NDArray[np.float32], min_seconds: float
) -> tuple[int, float]:
    for _ in range(20):  # warm-up: first runs allocate
        reconstruct(bundle, x)
    calls = 0
    began = time.perf_counter()
    elapsed = 0.0
    while elapsed < min_seconds:
        for _ in range(10):
            reconstruct(bundle, x)
        calls += 10
        elapsed = time.perf_counter() - began
    return calls, elapsed


def measure(
    bundle_dir: Path,
    rows: npt.NDArray[np.float32],
    *,
    batches: tuple[int, ...] = (1, 64),
    threads: tuple[int, ...] = (1, 2),
    min_seconds: float = 2.0,
) -> list[InProcessResult]:
    results: list[InProcessResult] = []
    for n_threads in threads:
        settings = ServiceSettings(intra_op_threads=n_threads)
        bundle = OnnxBundle(
            bundle_dir,
            providers=settings.provider_chain(),
            session_options=session_options(settings),
        )
        for batch in batches:
            x = np.ascontiguousarray(rows[:batch], dtype=np.float32)
            calls, seconds = time_batch(bundle, x, min_seconds)
            results.append(
                InProcessResult(
                    batch=batch,
                    intra_op_threads=n_threads,
                    calls=calls,
                    seconds=seconds,
                    items_per_s=calls * batch / seconds,
                    mean_call_ms=seconds / calls * 1e3,
                )
            )
        del bundle
    return results


def best(results: list[InProcessResult], batch: int) -> InProcessResult | None:
    chosen = [r for r in results if r.batch == batch]
    return max(chosen, key=lambda r: r.items_per_s) if chosen else None
