"""The obvious baseline: a FastAPI + onnxruntime VAE service written the usual way.

It stands for someone else's service, so it reads the bundle itself (json + numpy) and imports
nothing from this project. Pydantic request models, `.tolist()` responses returned as dicts
(FastAPI's default JSON response), plain `def` handlers, one InferenceSession per graph with
default options, created at start-up.

    BASELINE_MODEL_REPOSITORY=models uvicorn bench.baseline_app:app --port 8001
"""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any

import numpy as np
import onnxruntime as ort
from fastapi import FastAPI
from pydantic import BaseModel


def find_bundle() -> Path:
    explicit = os.environ.get("BASELINE_MODEL_DIR")
    if explicit:
        return Path(explicit)
    repository = Path(os.environ.get("BASELINE_MODEL_REPOSITORY", "models"))
    manifests = sorted(repository.glob("*/*/model.json"))
    if not manifests:
        raise RuntimeError(f"no <name>/<version>/model.json under {repository}")
    return manifests[-1].parent


MODEL_DIR = find_bundle()
with open(MODEL_DIR / "model.json") as f:
    META = json.load(f)

encoder = ort.InferenceSession(str(MODEL_DIR / META["onnx"]["encoder"]["file"]))
decoder = ort.InferenceSession(str(MODEL_DIR / META["onnx"]["decoder"]["file"]))
ENCODER_INPUT = encoder.get_inputs()[0].name
DECODER_INPUT = decoder.get_inputs()[0].name

INPUT_SHAPE = META["input"]["shape"]
OFFSET = np.array(META["preprocessing"]["offset"], dtype=np.float32)
SCALE = np.array(META["preprocessing"]["scale"], dtype=np.float32)
CLIP = META["preprocessing"]["clip"]
THRESHOLD = META["anomaly"]["scores"]["recon_mse"]["threshold"]

app = FastAPI(title="baseline VAE service")


class InputBatch(BaseModel):
    inputs: list[list[float]]


def preprocess(x: np.ndarray[Any, Any]) -> np.ndarray[Any, Any]:
    x = (x - OFFSET) / SCALE
    if CLIP is not None:
        x = np.clip(x, CLIP[0], CLIP[1])
    return x.astype(np.float32)


def run_model(inputs: list[list[float]]) -> tuple[np.ndarray[Any, Any], np.ndarray[Any, Any]]:
    """(model-space inputs, model-space reconstructions), both flat (B, D)."""
    x = np.array(inputs, dtype=np.float32)
    x_model = preprocess(x)
    mu, _logvar = encoder.run(None, {ENCODER_INPUT: x_model.reshape(len(x), *INPUT_SHAPE)})
    x_hat = decoder.run(None, {DECODER_INPUT: mu})[0]
    return x_model, x_hat.reshape(len(x), -1)


@app.post("/reconstruct")
def reconstruct(batch: InputBatch) -> dict[str, Any]:
    _x_model, x_hat = run_model(batch.inputs)
    outputs = x_hat * SCALE + OFFSET
    return {"outputs": outputs.tolist()}


@app.post("/anomaly-score")
def anomaly_score(batch: InputBatch) -> dict[str, Any]:
    x_model, x_hat = run_model(batch.inputs)
    scores = np.mean((x_model - x_hat) ** 2, axis=1)
    return {
        "scores": scores.tolist(),
        "threshold": THRESHOLD,
        "is_anomaly": (scores > THRESHOLD).tolist(),
    }
