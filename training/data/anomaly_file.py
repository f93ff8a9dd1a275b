"""Per-row anomaly flags supplied in a side file (.npy, .csv or .txt)."""

from __future__ import annotations

from pathlib import Path

import numpy as np

from training.data._arrays import BoolArray, anomaly_flags, parse_flag_token
from training.data.errors import DataError

ANOMALY_SUFFIXES = (".npy", ".csv", ".txt")


def _read_text_flags(path: Path) -> BoolArray:
    try:
        text = path.read_text(encoding="utf-8-sig")
    except UnicodeDecodeError as exc:
        raise DataError(f"{path}: is not UTF-8 text ({exc})") from exc
    entries = [(n, line.strip()) for n, line in enumerate(text.splitlines(), 1) if line.strip()]
    # A single leading word that is not a flag (e.g. 'is_anomaly') is taken as a header.
    if entries and parse_flag_token(entries[0][1]) is None and "," not in entries[0][1]:
        candidate_header = entries[0][1]
        if not any(ch.isdigit() for ch in candidate_header):
            entries = entries[1:]
    flags = np.empty(len(entries), dtype=np.bool_)
    for i, (line, token) in enumerate(entries):
        if "," in token:
            raise DataError(
                f"{path}: line {line} has several fields; expected one 0/1 or true/false per row"
            )
        flag = parse_flag_token(token)
        if flag is None:
            raise DataError(
                f"{path}: line {line} has {token!r}; expected one 0/1 or true/false per row"
            )
        flags[i] = flag
    return flags


def read_anomaly_labels(path: Path) -> BoolArray:
    if not path.is_file():
        raise DataError(f"{path}: anomaly labels file not found")
    suffix = path.suffix.lower()
    if suffix == ".npy":
        try:
            array = np.load(path, allow_pickle=False)
        except (ValueError, OSError, EOFError) as exc:
            raise DataError(f"{path}: not a readable numeric .npy file ({exc})") from exc
        flags = anomaly_flags(np.asarray(array), str(path))
    elif suffix in (".csv", ".txt"):
        flags = _read_text_flags(path)
    else:
        raise DataError(
            f"{path}: unsupported anomaly labels format {suffix or '(no extension)'!r}; "
            f"use one of {', '.join(ANOMALY_SUFFIXES)}"
        )
    if len(flags) == 0:
        raise DataError(f"{path}: anomaly labels file is empty")
    return flags
