"""What the batch-scoring tests share: the service's answers for rows and image files, the
breast-cancer table, digit pictures, and `vae-score` run as a process."""

from __future__ import annotations

import io
import json
import subprocess
import sys
from pathlib import Path
from typing import Any

import httpx
import numpy as np
import pyarrow as pa
import pyarrow.csv as pacsv
import pyarrow.parquet as pq
from sklearn.datasets import load_breast_cancer, load_digits

from tests.e2e.processes import REPO_ROOT

TABLE_MODEL, IMAGE_MODEL = "cancer", "digits-vae"


def vae_score(*args: object, timeout: float = 300) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "batch_scoring.cli", *map(str, args), "--quiet"],
        cwd=REPO_ROOT,
        capture_output=True,
        text=True,
        timeout=timeout,
    )


def summary(done: subprocess.CompletedProcess[str]) -> dict[str, Any]:
    assert done.returncode == 0, done.stderr
    result: dict[str, Any] = json.loads(done.stdout)
    return result


def read_results(path: Path) -> pa.Table:
    if path.suffix == ".parquet":
        return pq.read_table(path)
    # A CSV's numbers as the columns' own types: float32 text read as float64 is another number.
    header = path.open().readline().strip().replace('"', "").split(",")
    types = {"row": pa.int64(), "score": pa.float64(), "is_anomaly": pa.bool_()}
    kinds = {name: types.get(name, pa.float32()) for name in header}
    return pacsv.read_csv(path, convert_options=pacsv.ConvertOptions(column_types=kinds))


def service_scores(base: str, model: str, rows: np.ndarray, **fields: object) -> dict[str, Any]:
    """The service's answers for `rows`, 64 a request, as npy bodies (float32 exactly)."""
    answers: dict[str, list[Any]] = {}
    with httpx.Client(base_url=base, timeout=30.0) as client:
        for start in range(0, len(rows), 64):
            body = io.BytesIO()
            np.save(body, rows[start : start + 64].astype(np.float32))
            params = {key: str(value).lower() for key, value in fields.items()}
            answer = client.post(
                f"/models/{model}/anomaly-score",
                content=body.getvalue(),
                params=params,
                headers={"content-type": "application/x-npy", "accept": "application/json"},
            )
            assert answer.status_code == 200, answer.text
            for key, value in answer.json().items():
                if isinstance(value, list):
                    answers.setdefault(key, []).extend(value)
    return answers


def cancer_frame() -> tuple[np.ndarray, list[str]]:
    data = load_breast_cancer()
    return data.data.astype(np.float32), [str(name) for name in data.feature_names]


def digit_pictures(folder: Path, count: int) -> list[str]:
    """`count` of sklearn's digits as greyscale PNGs of 29x31 (larger than the model's 8x8), in
    three nested folders; their paths relative to `folder`."""
    from PIL import Image

    digits = load_digits().images
    names = []
    for i in range(count):
        sub = folder / f"writer-{i % 3}"
        sub.mkdir(parents=True, exist_ok=True)
        pixels = np.round(digits[i] * 255 / 16).astype(np.uint8)
        picture = Image.fromarray(pixels, mode="L").resize((29, 31), Image.Resampling.BICUBIC)
        picture.save(sub / f"{i:03d}.png")
        names.append(f"writer-{i % 3}/{i:03d}.png")
    return names


def service_image_score(base: str, file: Path) -> float:
    """The service's score for an image file sent as an image/png body."""
    with httpx.Client(base_url=base, timeout=30.0) as client:
        answer = client.post(
            f"/models/{IMAGE_MODEL}/anomaly-score",
            content=file.read_bytes(),
            headers={"content-type": "image/png", "accept": "application/json"},
        )
    assert answer.status_code == 200, answer.text
    score: float = answer.json()["scores"][0]
    return score


def cancer_table(rows: np.ndarray, names: list[str]) -> pa.Table:
    """An id column, then the features in reverse order: scoring picks them by name."""
    return pa.table(
        {"id": np.arange(len(rows)), **{n: rows[:, j] for j, n in reversed(list(enumerate(names)))}}
    )


def assert_scored_as_the_service(
    results: pa.Table, expected: dict[str, Any], names: list[str]
) -> None:
    """Every result column equal to the service's answer to the last bit, per-feature errors
    included (the rows in the service's order)."""
    assert results.column("score").to_pylist() == expected["scores"]  # float64, every bit
    assert results.column("is_anomaly").to_pylist() == expected["is_anomaly"]
    np.testing.assert_array_equal(
        results.column("tail_probability").to_numpy(),
        np.array(expected["tail_probability"], dtype=np.float32),
    )
    errors = np.stack([results.column(f"error_{n}").to_numpy() for n in names], axis=1)
    np.testing.assert_array_equal(errors, np.array(expected["feature_errors"], np.float32))


def csv_with_two_bad_rows(path: Path, with_id: bool) -> tuple[np.ndarray, list[str]]:
    """The breast-cancer rows as a CSV (an id column first when `with_id`), row 250's fifth
    feature "oops" and row 300 two fields short; the rows and the feature names."""
    rows, names = cancer_frame()
    lead = ["id"] if with_id else []
    lines = [",".join([*lead, *names])]
    for i, row in enumerate(rows):
        lines.append(",".join([*([str(i)] if with_id else []), *(f"{v:.9g}" for v in row)]))
    fields = lines[1 + 250].split(",")
    fields[len(lead) + 4] = "oops"
    lines[1 + 250] = ",".join(fields)
    lines[1 + 300] = ",".join(lines[1 + 300].split(",")[:-2])  # two fields short
    path.write_text("\n".join(lines) + "\n")
    return rows, names
