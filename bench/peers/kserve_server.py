# mypy: ignore-errors
"""The KServe peer: a `kserve.Model` whose predict runs `VaeOnnx.reconstruct`, served by
`kserve.ModelServer` the way KServe's custom-model docs show (load in the constructor's
process, then `ModelServer().start([model])`), with KServe's own command-line flags:

    {python} -m bench.peers.kserve_server --bundle BUNDLE --model_name NAME \
        --http_port PORT --workers 2 --enable_grpc false --enable_latency_logging false

One server answers both protocols the peers time: v1 (`/v1/models/NAME:predict`,
{"instances": [...]}) and v2, the Open Inference Protocol (`/v2/models/NAME/infer`).

Runs only in the KServe peer venv (bench/peers/requirements/kserve.txt).
"""

from __future__ import annotations

import argparse
import atexit
import json
import os
import sys
import tempfile
import uuid
from pathlib import Path
from typing import Any


def _quiet_logging_argv(argv: list[str]) -> None:
    """Add `--log_config_file` (KServe's only switch for uvicorn's access log) unless given.

    KServe parses `sys.argv` when `kserve` is imported, and `--workers N` starts its uvicorn
    workers with `spawn`: each child re-reads the parsed `--log_config_file`, so the flag must
    be in `sys.argv` before the import below, not set on the ModelServer. The default config
    logs every request at INFO (uvicorn.access) plus a latency line (kserve.trace); these are
    the same loggers, raised to WARNING. Spawned children inherit the amended argv, so this is
    a no-op in them.
    """
    if any(arg.split("=", 1)[0] == "--log_config_file" for arg in argv):
        return
    level = os.environ.get("KSERVE_LOGLEVEL", "WARNING").upper()
    handler = {"class": "logging.StreamHandler", "stream": "ext://sys.stderr"}
    config = {
        "version": 1,
        "disable_existing_loggers": False,
        "handlers": {"stderr": handler},
        "loggers": {
            name: {"handlers": ["stderr"], "level": level, "propagate": False}
            for name in ("kserve", "kserve.trace", "uvicorn", "uvicorn.error", "uvicorn.access")
        },
    }
    descriptor, path = tempfile.mkstemp(prefix="kserve-peer-logging-", suffix=".json")
    with os.fdopen(descriptor, "w") as file:
        json.dump(config, file)
    atexit.register(lambda: Path(path).unlink(missing_ok=True))
    argv.extend(["--log_config_file", path])


if __name__ == "__main__":
    _quiet_logging_argv(sys.argv)

import kserve  # noqa: E402  (after the argv above: kserve parses sys.argv on import)
import numpy as np  # noqa: E402
from kserve import InferOutput, InferRequest, InferResponse, model_server  # noqa: E402

from bench.peers.vae_onnx import VaeOnnx  # noqa: E402


class VaeModel(kserve.Model):
    """The bundle's reconstruction behind both KServe protocols.

    `--workers N` pickles the registered model into N spawned uvicorn workers; onnxruntime
    sessions do not pickle, so each worker rebuilds its own from the bundle path (as ours and
    the other peers do: one set of sessions per worker process).
    """

    def __init__(self, name: str, bundle: str) -> None:
        super().__init__(name)
        self.bundle = bundle
        self.vae: VaeOnnx | None = None

    def load(self) -> bool:
        self.vae = VaeOnnx(self.bundle)
        self.ready = True
        return bool(self.ready)

    def __getstate__(self) -> dict[str, Any]:
        state = dict(self.__dict__)
        state["vae"] = None
        return state

    def __setstate__(self, state: dict[str, Any]) -> None:
        self.__dict__.update(state)
        if self.ready:
            self.load()

    def predict(
        self,
        payload: dict[str, Any] | InferRequest,
        headers: dict[str, str] | None = None,
    ) -> dict[str, Any] | InferResponse:
        """v1 bodies arrive as the decoded JSON dict, v2 ones as an InferRequest."""
        if self.vae is None:
            self.load()
        assert self.vae is not None
        if isinstance(payload, InferRequest):
            outputs = self.vae.reconstruct(payload.inputs[0].as_numpy())
            output = InferOutput(
                name="reconstruction", shape=list(outputs.shape), datatype="FP32", data=outputs
            )
            return InferResponse(
                response_id=payload.id or str(uuid.uuid4()),
                model_name=self.name,
                infer_outputs=[output],
            )
        outputs = self.vae.reconstruct(np.asarray(payload["instances"], dtype=np.float32))
        return {"predictions": outputs.tolist()}


def main() -> None:
    parser = argparse.ArgumentParser(
        prog="python -m bench.peers.kserve_server",
        parents=[model_server.parser],
        description=__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument("--bundle", required=True, help="bundle folder (model.json, *.onnx)")
    args, _ = parser.parse_known_args()
    model = VaeModel(args.model_name, args.bundle)
    model.load()
    kserve.ModelServer().start([model])


if __name__ == "__main__":
    main()
