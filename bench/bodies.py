"""Request bodies built once from real data and written to files that wrk's Lua script reads."""

from __future__ import annotations

import io
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import numpy.typing as npt

JSON = "application/json"
NPY = "application/x-npy"


@dataclass(frozen=True)
class Body:
    path: Path
    content_type: str
    accept: str
    items: int

    @property
    def headers(self) -> dict[str, str]:
        return {"Content-Type": self.content_type, "Accept": self.accept}

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


def write_bodies(rows: npt.NDArray[np.float32], folder: Path, batch: int) -> dict[str, Body]:
    """{"json1": one item, "json64": `batch` items, "npy64": the same items as npy}."""
    folder.mkdir(parents=True, exist_ok=True)
    single, many = rows[:1], rows[:batch]
    made = {
        "json1": (json_inputs(single), JSON, JSON, 1),
        "json64": (json_inputs(many), JSON, JSON, len(many)),
        "npy64": (npy_bytes(many), NPY, NPY, len(many)),
    }
    bodies: dict[str, Body] = {}
    for key, (content, content_type, accept, items) in made.items():
        path = folder / f"body-{key}.{'npy' if content_type == NPY else 'json'}"
        path.write_bytes(content)
        bodies[key] = Body(path, content_type, accept, items)
    return bodies
