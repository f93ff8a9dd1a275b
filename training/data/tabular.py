"""Readers for array files (.npy, .npz) and numeric CSV."""

from __future__ import annotations

import csv
import math
import zipfile
from pathlib import Path
from typing import Any, Literal

import numpy as np
import numpy.typing as npt

from training.data._arrays import (
    RawData,
    anomaly_flags,
    encode_labels,
    feature_layout,
    features_from_array,
)
from training.data.errors import DataError

_NPZ_FEATURE_KEYS = ("x", "X")
_NPZ_LABEL_KEYS = ("y", "labels")
_NPZ_ANOMALY_KEY = "is_anomaly"


def _load_array(path: Path, opened: Any, key: str | None = None) -> npt.NDArray[Any]:
    where = str(path) if key is None else f"{path} [{key!r}]"
    try:
        return np.asarray(opened if key is None else opened[key])
    except ValueError as exc:
        # numpy refuses object arrays without pickle; that is the common cause here.
        raise DataError(
            f"{where}: cannot be read without pickle (object array?); save a plain numeric "
            f"array ({exc})"
        ) from exc


def _load_npy(path: Path, mmap_mode: Literal["r"] | None) -> npt.NDArray[Any]:
    try:
        array = np.load(path, mmap_mode=mmap_mode, allow_pickle=False)
    except ValueError as exc:
        raise DataError(
            f"{path}: cannot be read without pickle (object array?); save a plain numeric "
            f"array ({exc})"
        ) from exc
    except (OSError, EOFError) as exc:
        raise DataError(f"{path}: not a readable .npy file ({exc})") from exc
    if not isinstance(array, np.ndarray):
        raise DataError(f"{path}: does not contain a single array")
    return array


def read_npy(path: Path) -> RawData:
    x, is_image = features_from_array(_load_npy(path, None), str(path))
    return RawData(x=x, is_image=is_image, kind="npy")


def read_npy_mapped(path: Path) -> RawData:
    """The .npy memory-mapped, not read: `x` is a read-only view in the file's own dtype, whose
    rows come from disk only when indexed (data sets larger than memory)."""
    x, is_image = feature_layout(_load_npy(path, "r"), str(path))
    return RawData(x=x, is_image=is_image, kind="npy", details={"memory_mapped": True})


def read_npz(path: Path) -> RawData:
    try:
        archive = np.load(path, allow_pickle=False)
    except (OSError, ValueError, EOFError, zipfile.BadZipFile) as exc:
        raise DataError(f"{path}: not a readable .npz file ({exc})") from exc
    with archive:
        keys = list(archive.files)
        feature_key = next((k for k in _NPZ_FEATURE_KEYS if k in keys), None)
        if feature_key is None:
            if len(keys) != 1:
                listed = ", ".join(repr(k) for k in keys) or "none"
                raise DataError(
                    f"{path}: cannot tell which array holds the features; name it 'x' "
                    f"(arrays found: {listed})"
                )
            feature_key = keys[0]
        x, is_image = features_from_array(
            _load_array(path, archive, feature_key), f"{path} [{feature_key!r}]"
        )
        labels = label_names = is_anomaly = None
        label_key = next((k for k in _NPZ_LABEL_KEYS if k in keys and k != feature_key), None)
        if label_key is not None:
            labels, label_names = encode_labels(
                _load_array(path, archive, label_key), f"{path} [{label_key!r}]"
            )
            _check_length(path, label_key, len(labels), len(x))
        if _NPZ_ANOMALY_KEY in keys:
            is_anomaly = anomaly_flags(
                _load_array(path, archive, _NPZ_ANOMALY_KEY), f"{path} [{_NPZ_ANOMALY_KEY!r}]"
            )
            _check_length(path, _NPZ_ANOMALY_KEY, len(is_anomaly), len(x))
    return RawData(
        x=x,
        is_image=is_image,
        kind="npz",
        labels=labels,
        label_names=label_names,
        is_anomaly=is_anomaly,
        details={"features_key": feature_key, "labels_key": label_key},
    )


def _check_length(path: Path, key: str, found: int, expected: int) -> None:
    if found != expected:
        raise DataError(f"{path}: array {key!r} has {found} rows but the features have {expected}")


def _is_number(text: str) -> bool:
    try:
        float(text)
    except ValueError:
        return False
    return True


def _read_rows(path: Path) -> list[tuple[int, list[str]]]:
    """Non-blank rows with their physical line numbers (1-based, as an editor shows them)."""
    rows: list[tuple[int, list[str]]] = []
    try:
        # utf-8-sig drops the byte-order mark spreadsheet exports like to prepend.
        with path.open(newline="", encoding="utf-8-sig") as handle:
            reader = csv.reader(handle)
            line = 1
            for row in reader:
                if any(cell.strip() for cell in row):
                    rows.append((line, [cell.strip() for cell in row]))
                line = reader.line_num + 1
    except UnicodeDecodeError as exc:
        raise DataError(f"{path}: is not UTF-8 text ({exc})") from exc
    except csv.Error as exc:
        raise DataError(f"{path}: malformed CSV ({exc})") from exc
    return rows


def _column_name(header: list[str] | None, column: int) -> str:
    if header is not None and header[column]:
        return f"column {header[column]!r} (index {column})"
    return f"column {column}"


def _find_label_column(path: Path, header: list[str] | None, wanted: str) -> int:
    if header is not None and wanted in header:
        return header.index(wanted)
    width = len(header) if header is not None else None
    try:
        index = int(wanted)
    except ValueError:
        index = -1
    if index >= 0 and (width is None or index < width):
        return index
    available = ", ".join(repr(h) for h in header) if header is not None else "none (no header)"
    raise DataError(
        f"{path}: label column {wanted!r} not found; give a header name or a 0-based column "
        f"index (columns: {available})"
    )


def _parse_value(path: Path, text: str, line: int, column: str) -> float:
    if not text:
        raise DataError(f"{path}: missing value at line {line}, {column}")
    try:
        value = float(text)
    except ValueError:
        hint = ""
        if any(sep in text for sep in (";", "\t")):
            hint = " (the file must be comma-separated)"
        raise DataError(
            f"{path}: non-numeric value {text!r} at line {line}, {column}{hint}"
        ) from None
    if not math.isfinite(value):
        raise DataError(f"{path}: non-finite value {text!r} at line {line}, {column}")
    return value


def read_csv(path: Path, label_column: str | None = None) -> RawData:
    rows = _read_rows(path)
    if not rows:
        raise DataError(f"{path}: file is empty")
    first_line, first = rows[0]
    has_header = any(cell and not _is_number(cell) for cell in first)
    header = first if has_header else None
    data = rows[1:] if has_header else rows
    if not data:
        raise DataError(f"{path}: has a header (line {first_line}) but no data rows; file is empty")
    width = len(first)
    for line, row in data:
        if len(row) != width:
            source = "the header" if has_header else f"line {first_line}"
            raise DataError(
                f"{path}: line {line} has {len(row)} fields, expected {width} (as on {source})"
            )

    label_index = None if label_column is None else _find_label_column(path, header, label_column)
    if label_index is not None and label_index >= width:
        raise DataError(f"{path}: label column {label_column!r} is past the last column")
    feature_columns = [c for c in range(width) if c != label_index]
    if not feature_columns:
        raise DataError(f"{path}: no feature columns left after taking out the label column")
    names = [_column_name(header, c) for c in range(width)]

    x = np.empty((len(data), len(feature_columns)), dtype=np.float32)
    for i, (line, row) in enumerate(data):
        try:
            x[i] = [float(row[c]) for c in feature_columns]
            if not np.isfinite(x[i]).all():
                raise ValueError
        except (ValueError, OverflowError):
            # Slow path only on failure, to name the exact cell.
            for c in feature_columns:
                _parse_value(path, row[c], line, names[c])
            raise DataError(f"{path}: value too large for float32 at line {line}") from None

    labels = label_names = None
    details: dict[str, object] = {"header": header is not None}
    if header is not None:
        details["columns"] = [header[c] for c in feature_columns]
    if label_index is not None:
        texts = []
        for line, row in data:
            if not row[label_index]:
                raise DataError(f"{path}: missing label at line {line}, {names[label_index]}")
            texts.append(row[label_index])
        labels, label_names = _encode_label_texts(path, texts)
        details["label_column"] = header[label_index] if header is not None else label_index
    return RawData(
        x=x,
        is_image=False,
        kind="csv",
        labels=labels,
        label_names=label_names,
        details=details,
    )


def _encode_label_texts(path: Path, texts: list[str]) -> tuple[Any, list[str] | None]:
    numbers: list[int] = []
    for text in texts:
        try:
            value = float(text)
        except ValueError:
            break
        if not value.is_integer():
            break
        numbers.append(int(value))
    else:
        return np.asarray(numbers, dtype=np.int64), None
    # Any non-integer label means the column names classes; map every value by its text.
    return encode_labels(np.asarray(texts, dtype=np.str_), str(path), "label column")
