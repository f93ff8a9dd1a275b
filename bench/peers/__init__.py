"""The serving frameworks users would pick instead of ours, each run the way its own docs
recommend, in its own pinned venv (bench/peers/requirements/<venv>.txt, built by
`bench.peers.venvs`, never by `make test`), on the same ONNX graphs (`vae_onnx.py`).

Each peer module (`bench/peers/<name>.py`) declares `PEERS: list[Peer]`; `all_peers()` gathers
them in the order of `MODULES`. A peer is checked for a correct answer (`check.py`) before
`make bench` times it.
"""

from __future__ import annotations

import importlib
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field

import numpy as np
import numpy.typing as npt

Rows = npt.NDArray[np.float32]

# Peer modules, in the order RESULTS.md lists them.
MODULES = ("baseline", "kserve", "mlserver", "pytriton", "bentoml", "rayserve")


@dataclass(frozen=True)
class Peer:
    """One peer server and how to call it with single-item JSON reconstruct requests.

    `command` and `env` values may hold `{python}` (the peer venv's python), `{port}`,
    `{bundle}` (the bundle folder: model.json, encoder.onnx, decoder.onnx), `{model}` (the
    bundle's model name) and `{workers}` (two cores' worth: the worker count ours runs with).
    """

    key: str  # "kserve-v1": a column of RESULTS.md
    title: str  # "KServe ModelServer 0.15, v1 protocol, 2 workers"
    venv: str  # bench/peers/requirements/<venv>.txt; "" runs in the project's own venv
    command: tuple[str, ...]
    path: str  # the POST path; may hold {model}
    body: Callable[[Rows], bytes]  # one request carrying these rows
    outputs: Callable[[bytes], Rows]  # the reconstruction the answer carries, (B, features)
    headers: Mapping[str, str] = field(default_factory=lambda: {"Content-Type": "application/json"})
    env: Mapping[str, str] = field(default_factory=dict)
    ready_path: str = "/"  # a GET that answers 200 once the model is loaded
    settings: Mapping[str, str] = field(default_factory=dict)  # how it runs, for RESULTS.md
    start_timeout_s: float = 180.0


# orjson is imported where it is used: the peers' own servers import this package inside their
# venvs, some of which have no orjson (make bench then saw PyTriton, BentoML and Ray Serve
# fail to start).


def inputs_body(rows: Rows) -> bytes:
    """`{"inputs": [[...], ...]}`: the body our API and the peers modelled on it take."""
    import orjson

    return orjson.dumps({"inputs": rows.tolist()})


def outputs_field(answer: bytes) -> Rows:
    """The `outputs` array of `{"outputs": [[...], ...]}`, (B, features)."""
    import orjson

    return np.asarray(orjson.loads(answer)["outputs"], dtype=np.float32)


def all_peers() -> list[Peer]:
    peers: list[Peer] = []
    for name in MODULES:
        try:
            module = importlib.import_module(f"bench.peers.{name}")
        except ModuleNotFoundError as error:
            if error.name != f"bench.peers.{name}":
                raise
            continue
        peers.extend(module.PEERS)
    return peers


def peer(key: str) -> Peer:
    for candidate in all_peers():
        if candidate.key == key:
            return candidate
    raise KeyError(f"no peer {key!r}; known: {[p.key for p in all_peers()]}")
