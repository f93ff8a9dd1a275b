# mypy: ignore-errors
# (bentoml lives only in the peer's venv, bench/out/venvs/bentoml: the project's mypy cannot
# resolve it, and its decorators are untyped, so every definition here would need an ignore.)
"""BentoML serving `VaeOnnx.reconstruct` the way BentoML's docs build a service: a
`@bentoml.service` class whose `__init__` loads the model, one batchable `@bentoml.api` over
numpy arrays (adaptive batching), `workers` processes, started by `bentoml serve`.

    bentoml serve bench.peers.bentoml_service:VaeService --port 3000 \\
        --arg bundle=DIR --arg workers=2 --arg max_batch_size=64 --arg max_latency_ms=1000

Run by the bentoml peer venv with the repository root as cwd (bench/peers/bentoml.py says how):
`bentoml` here is the package, never bench/peers/bentoml.py, because only the root is on
sys.path. The settings come as Bento arguments (`--arg`, `bentoml.use_arguments`), the
documented way to parameterise a service at serve time; `workers` must be known when the class
is decorated, so the arguments are read at import.
"""

from __future__ import annotations

from pathlib import Path

import bentoml
import numpy as np
from pydantic import BaseModel

from bench.peers.vae_onnx import VaeOnnx


class Arguments(BaseModel):
    bundle: Path
    workers: int = 2
    max_batch_size: int = 64
    max_latency_ms: int = 1000


ARGUMENTS = bentoml.use_arguments(Arguments)


@bentoml.service(
    workers=ARGUMENTS.workers,
    # ours and the FastAPI baseline log at warning, so no per-request access log either
    logging={"access": {"enabled": False}},
)
class VaeService:
    def __init__(self) -> None:
        # one model per worker process; /readyz answers 200 once every worker got here
        self.model = VaeOnnx(ARGUMENTS.bundle)

    @bentoml.api(
        batchable=True,
        batch_dim=0,
        max_batch_size=ARGUMENTS.max_batch_size,
        max_latency_ms=ARGUMENTS.max_latency_ms,
    )
    def reconstruct(self, inputs: np.ndarray) -> np.ndarray:
        """Requests' (n, features) arrays arrive concatenated along dim 0 by the dispatcher,
        and the answer is split back along dim 0."""
        return self.model.reconstruct(inputs)
