"""Start a peer on a benchmark model, send it one request and check its answer against the
reconstruction in-process (`vae_onnx`): a peer is timed only once it answers right.

    .venv/bin/python -m bench.peers.check KEY [--model default|784] [--keep-running]
"""

from __future__ import annotations

import argparse
import os
import time
from collections.abc import Sequence

import httpx
import numpy as np

from bench import servers
from bench.models import BenchModel, load_model
from bench.peers import Peer, all_peers, peer
from bench.peers.vae_onnx import VaeOnnx
from bench.peers.venvs import ensure
from bench.shared import BENCH, ROOT

OUT = BENCH / "out" / "peers"
# float32 through different but equivalent numpy expressions, and JSON text round trips
TOLERANCE = 1e-4


def workers() -> int:
    """Two cores' worth: the worker count `vae-serve` picks on this machine (one per core)."""
    return os.cpu_count() or 1


def server_spec(candidate: Peer, model: BenchModel) -> servers.ServerSpec:
    python = str(ensure(candidate.venv))
    values = {
        "{python}": python,
        "{bundle}": str(model.bundle),
        "{model}": model.name,
        "{workers}": str(workers()),
    }

    def fill(text: str) -> str:
        for key, value in values.items():
            text = text.replace(key, value)
        return text  # {port} is filled by bench.servers when the port is known

    return servers.ServerSpec(
        candidate.key,
        [fill(part) for part in candidate.command],
        {key: fill(value) for key, value in candidate.env.items()},
        "GET",
        fill(candidate.ready_path),
        settings={key: fill(value) for key, value in candidate.settings.items()},
    )


def request_path(candidate: Peer, model: BenchModel) -> str:
    return candidate.path.replace("{model}", model.name)


def verify(candidate: Peer, base_url: str, model: BenchModel) -> str | None:
    """None when one single-item request is answered 200 with the right reconstruction;
    otherwise what was wrong."""
    rows = model.rows[:1]
    try:
        response = httpx.post(
            base_url + request_path(candidate, model),
            content=candidate.body(rows),
            headers=dict(candidate.headers),
            timeout=60,
        )
    except httpx.HTTPError as error:
        return f"{type(error).__name__}: {error}"
    if response.status_code != 200:
        return f"HTTP {response.status_code}: {response.text[:300]}"
    try:
        got = np.asarray(candidate.outputs(response.content), dtype=np.float32)
    except Exception as error:  # a peer's answer in an unexpected shape
        return f"cannot read the answer ({type(error).__name__}: {error}): {response.text[:300]}"
    expected = VaeOnnx(model.bundle).reconstruct(rows)
    if got.shape != expected.shape:
        return f"answer has shape {got.shape}, expected {expected.shape}"
    worst = float(np.max(np.abs(got - expected)))
    if worst > TOLERANCE * max(1.0, float(np.max(np.abs(expected)))):
        return f"answer differs from the in-process reconstruction by up to {worst:g}"
    return None


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench.peers.check", description=__doc__)
    parser.add_argument("key", help=f"one of {[p.key for p in all_peers()]}")
    parser.add_argument("--model", default="default", choices=("default", "784"))
    parser.add_argument("--keep-running", type=float, default=0.0, metavar="SECONDS")
    options = parser.parse_args(argv)
    candidate = peer(options.key)
    model = load_model(options.model)
    spec = server_spec(candidate, model)
    print(f"starting {candidate.key}: {' '.join(spec.command)}", flush=True)
    with servers.running(spec, OUT, ROOT, candidate.start_timeout_s) as server:
        print(f"ready in {server.started_s:.1f} s at {server.base_url}", flush=True)
        problem = verify(candidate, server.base_url, model)
        print("answer OK" if problem is None else f"WRONG: {problem}", flush=True)
        time.sleep(options.keep_running)
    return 0 if problem is None else 1


if __name__ == "__main__":
    raise SystemExit(main())
