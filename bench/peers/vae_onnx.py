"""The VAE every peer serves: a bundle's two ONNX graphs and its preprocessing, in numpy and
onnxruntime only, so it imports in any peer's venv. `reconstruct` computes what our
`/reconstruct` answers (user units in, user units out, the encoder's mean decoded), so a peer's
answer can be checked against ours before it is timed.

    model = VaeOnnx(Path("bench/models/repo-default/digits-vae/1"))
    outputs = model.reconstruct(np.zeros((1, 64), np.float32))

Sessions get `PEER_INTRA_OP_THREADS` intra-op threads (default 1: one per worker process, as
ours runs; bench/CHOICES.md measured two threads per session on two workers slower).
"""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any

import numpy as np
import numpy.typing as npt
import onnxruntime as ort

Rows = npt.NDArray[np.float32]


class VaeOnnx:
    def __init__(self, bundle: Path | str, intra_op_threads: int | None = None) -> None:
        folder = Path(bundle)
        manifest: dict[str, Any] = json.loads((folder / "model.json").read_text())
        threads = intra_op_threads or int(os.environ.get("PEER_INTRA_OP_THREADS", "1"))
        options = ort.SessionOptions()
        options.intra_op_num_threads = threads
        options.inter_op_num_threads = 1
        graphs = manifest["onnx"]
        self.encoder = ort.InferenceSession(
            str(folder / graphs["encoder"]["file"]), options, providers=["CPUExecutionProvider"]
        )
        self.decoder = ort.InferenceSession(
            str(folder / graphs["decoder"]["file"]), options, providers=["CPUExecutionProvider"]
        )
        self.encoder_input = self.encoder.get_inputs()[0].name
        self.decoder_input = self.decoder.get_inputs()[0].name
        self.name: str = manifest["name"]
        self.input_shape: list[int] = manifest["input"]["shape"]
        self.features = int(np.prod(self.input_shape))
        preprocessing = manifest["preprocessing"]
        self.offset = np.asarray(preprocessing["offset"], dtype=np.float32)
        self.scale = np.asarray(preprocessing["scale"], dtype=np.float32)
        self.clip = preprocessing.get("clip")

    def reconstruct(self, x: npt.ArrayLike) -> Rows:
        """(B, features) in the user's units -> the reconstruction, (B, features)."""
        batch = np.asarray(x, dtype=np.float32).reshape(-1, self.features)
        model_x = (batch - self.offset) / self.scale
        if self.clip is not None:
            model_x = np.clip(model_x, self.clip[0], self.clip[1])
        model_x = np.ascontiguousarray(model_x, dtype=np.float32).reshape(
            len(batch), *self.input_shape
        )
        mu = self.encoder.run(None, {self.encoder_input: model_x})[0]
        decoded = self.decoder.run(None, {self.decoder_input: mu})[0]
        outputs: Rows = decoded.reshape(len(batch), -1) * self.scale + self.offset
        return outputs.astype(np.float32, copy=False)
