"""vae-score runs where the data is: on a bundle, numpy, onnxruntime and Arrow, without the
trainer's torch or the service's web stack (a Spark executor or a slim image has neither), and
without Spark unless it runs on Spark."""

from __future__ import annotations

import subprocess
import sys

from tests.e2e.processes import REPO_ROOT


def test_vae_score_imports_neither_torch_nor_the_service() -> None:
    probe = (
        "import sys, batch_scoring.cli, batch_scoring.job, batch_scoring.sources, "
        "batch_scoring.record_batches; "
        "print(sorted({m.split('.')[0] for m in sys.modules}))"
    )
    done = subprocess.run(
        [sys.executable, "-c", probe], cwd=REPO_ROOT, capture_output=True, text=True, check=True
    )
    loaded = set(eval(done.stdout))  # a list of names printed by the probe above
    assert not loaded & {"torch", "training", "service", "fastapi", "uvicorn", "starlette"}
    assert "pyspark" not in loaded  # only --engine spark imports it
    assert {"bundle", "onnxruntime", "pyarrow"} <= loaded
