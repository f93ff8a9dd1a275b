"""Request bodies built once from real data and written to files that wrk's Lua script reads."""

from __future__ import annotations

import io
import json
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import numpy.typing as npt

JSON = "application/json"
NPY = "application/x-npy"
OCTET = "application/octet-stream"


@dataclass(frozen=True)
class Body:
    path: Path
    content_type: str
    accept: str
    items: int
    extra_headers: dict[str, str] = field(default_factory=dict)

    @property
    def headers(self) -> dict[str, str]:
        return {"Content-Type": self.content_type, "Accept": self.accept, **self.extra_headers}

    def read(self) -> bytes:
        return self.path.read_bytes()


def json_number(value: np.float32) -> str:
    # The shortest text that reads back as the same float32 (what a client's own float32
    # data would print as): 5 for 5.0, 5.142857 rather than 5.142857074737549.
    return np.format_float_positional(value, unique=True, trim="-")


def json_inputs(rows: npt.NDArray[np.float32]) -> bytes:
    items = ("[" + ",".join(json_number(v) for v in row) + "]" for row in rows)
    return ('{"inputs":[' + ",".join(items) + "]}").encode()


def npy_bytes(rows: npt.NDArray[np.float32]) -> bytes:
    buffer = io.BytesIO()
    np.save(buffer, np.ascontiguousarray(rows, dtype=np.float32), allow_pickle=False)
    return buffer.getvalue()


def v2_binary_infer(rows: npt.NDArray[np.float32]) -> tuple[bytes, int]:
    """An Open Inference Protocol request with its input as binary tensor data, asking for the
    reconstruction back as binary: (body, length of its JSON header)."""
    data = np.ascontiguousarray(rows, dtype="<f4")
    header = {
        "inputs": [
            {
                "name": "x",
                "shape": list(data.shape),
                "datatype": "FP32",
                "parameters": {"binary_data_size": data.nbytes},
            }
        ],
        "outputs": [{"name": "reconstruction", "parameters": {"binary_data": True}}],
    }
    head = json.dumps(header, separators=(",", ":")).encode()
    return head + data.tobytes(), len(head)


def write_bodies(rows: npt.NDArray[np.float32], folder: Path, batch: int) -> dict[str, Body]:
    """{"json1": one item, "json64": `batch` items, "npy64": the same items as npy,
    "v2bin64": the same items as a v2 binary tensor infer request}."""
    folder.mkdir(parents=True, exist_ok=True)
    single, many = rows[:1], rows[:batch]
    v2_body, v2_header_length = v2_binary_infer(many)
    made = {
        "json1": (json_inputs(single), JSON, JSON, 1, {}),
        "json64": (json_inputs(many), JSON, JSON, len(many), {}),
        "npy64": (npy_bytes(many), NPY, NPY, len(many), {}),
        "v2bin64": (
            v2_body,
            OCTET,
            "*/*",
            len(many),
            {"Inference-Header-Content-Length": str(v2_header_length)},
        ),
    }
    bodies: dict[str, Body] = {}
    for key, (content, content_type, accept, items, extra) in made.items():
        suffix = {NPY: "npy", JSON: "json"}.get(content_type, "bin")
        path = folder / f"body-{key}.{suffix}"
        path.write_bytes(content)
        bodies[key] = Body(path, content_type, accept, items, extra)
    return bodies
