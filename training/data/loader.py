"""`load_dataset`: resolve a spec to a reader, apply options, and validate the result."""

from __future__ import annotations

import math
import zipfile
from pathlib import Path
from typing import NoReturn

import numpy as np
import numpy.typing as npt

from training.data._arrays import BoolArray, RawData
from training.data.anomaly_file import read_anomaly_labels
from training.data.builtin import BUILTINS, builtin_names, load_builtin
from training.data.dataset import LoadedData
from training.data.errors import DataError
from training.data.idx import is_idx_path, read_idx
from training.data.image_folders import read_image_folder, resize_images
from training.data.spec import DatasetSpec, parse_spec
from training.data.tabular import read_csv, read_npy, read_npy_mapped, read_npz
from training.streaming.budget import MEGABYTE, float32_bytes, rows_per_chunk

# Fewer normal rows than this cannot give train, validation and test sets worth the name.
MIN_NORMAL_ROWS = 10

SUPPORTED_FORMATS = (
    ".npy, .npz, .csv, MNIST IDX (*-idx3-ubyte or *-idx3-ubyte.gz), "
    "or a directory of .png/.jpg/.jpeg images"
)
_MAX_LISTED_CLASSES = 20


def _read_source(
    spec: DatasetSpec, image_size: tuple[int, int] | None, memory_budget: int | None
) -> tuple[RawData, str]:
    label_column = spec.options.get("label")
    if spec.name in BUILTINS:
        where = f"built-in dataset {spec.name!r}"
        if label_column is not None:
            raise DataError(f"{where}: option 'label' applies to CSV files only")
        return load_builtin(spec.name), where
    path = Path(spec.name).expanduser()
    where = str(path)
    if not path.exists():
        hint = ""
        if ":" in spec.name and "=" in spec.name.rpartition(":")[2]:
            hint = (
                "; if the part after ':' was meant as options, write them as key=value[,key=value]"
            )
        raise DataError(
            f"{spec.name}: neither a built-in dataset ({', '.join(builtin_names())}) nor an "
            f"existing file or directory{hint}"
        )
    suffix = path.suffix.lower()
    if label_column is not None and (path.is_dir() or suffix != ".csv"):
        raise DataError(f"{where}: option 'label' applies to CSV files only")
    if path.is_dir():
        return read_image_folder(path, image_size), where
    if suffix == ".npy":
        if memory_budget is not None:
            mapped = read_npy_mapped(path)
            if float32_bytes(mapped.x.shape) > memory_budget:
                return mapped, where
        return read_npy(path), where
    if memory_budget is not None:
        _check_fits_in_memory(path, memory_budget)
    if suffix == ".npz":
        return read_npz(path), where
    if suffix == ".csv":
        return read_csv(path, label_column), where
    if is_idx_path(path):
        return read_idx(path), where
    raise DataError(f"{where}: unsupported format; supported: {SUPPORTED_FORMATS}")


def _check_image_size(image_size: tuple[int, int] | None) -> tuple[int, int] | None:
    if image_size is None:
        return None
    if len(image_size) != 2 or any(int(s) != s or s < 1 for s in image_size):
        raise DataError(f"image_size must be two positive integers (H, W), got {image_size!r}")
    return int(image_size[0]), int(image_size[1])


def _check_fits_in_memory(path: Path, memory_budget: int) -> None:
    """Only .npy files stream from disk; any other file over the budget would be read whole."""
    size = path.stat().st_size
    if path.suffix.lower() == ".npz":
        try:
            with zipfile.ZipFile(path) as archive:
                size = sum(info.file_size for info in archive.infolist())
        except (OSError, zipfile.BadZipFile):
            return  # read_npz names the problem
    if size > memory_budget:
        raise DataError(
            f"{path}: {size / MEGABYTE:.1f} MB of data is over the memory budget "
            f"({memory_budget / MEGABYTE:.1f} MB) and only .npy files stream from disk: save the "
            "features with numpy.save(..., allow_pickle=False) and train on the .npy, or raise "
            "--memory-budget-mb"
        )


def _check_values(raw: RawData, where: str, memory_budget: int | None) -> None:
    if raw.x.shape[0] == 0:
        raise DataError(f"{where}: dataset is empty (no rows)")
    features = math.prod(raw.x.shape[1:])
    if features == 0:
        raise DataError(f"{where}: items have no features (shape {raw.x.shape})")
    # In chunks of rows, so a memory-mapped file is checked without being read into memory.
    step = len(raw.x) if memory_budget is None else rows_per_chunk(features, memory_budget)
    for start in range(0, len(raw.x), step):
        finite = np.isfinite(raw.x[start : start + step])
        if not finite.all():
            _report_non_finite(raw, where, start, finite)


def _report_non_finite(
    raw: RawData, where: str, start: int, finite: npt.NDArray[np.bool_]
) -> NoReturn:
    bad = np.argwhere(~finite)[0]
    bad[0] += start
    value = raw.x[tuple(bad)]
    if raw.is_image:
        raise DataError(f"{where}: NaN or Inf ({value}) in item {bad[0]} (0-based)")
    raise DataError(
        f"{where}: NaN or Inf ({value}) at row {bad[0]}, column {bad[1]} (both 0-based)"
    )


def _describe_classes(raw: RawData) -> str:
    if raw.label_names is not None:
        shown = [f"{i}={n}" for i, n in enumerate(raw.label_names)]
    else:
        assert raw.labels is not None
        shown = [str(v) for v in np.unique(raw.labels)]
    more = len(shown) - _MAX_LISTED_CLASSES
    return ", ".join(shown[:_MAX_LISTED_CLASSES]) + (f", ... ({more} more)" if more > 0 else "")


def _holdout_mask(raw: RawData, value: str, where: str) -> tuple[BoolArray, int]:
    if raw.labels is None:
        raise DataError(
            f"{where}: holdout={value} needs class labels, but this data has none "
            "(use label=COLUMN for CSV, a 'y' array in .npz, or class subfolders for images)"
        )
    if raw.label_names is not None and value in raw.label_names:
        # A name wins over an id: it is what the user sees in folders and files.
        class_id = raw.label_names.index(value)
    else:
        try:
            class_id = int(value)
        except ValueError:
            raise DataError(
                f"{where}: holdout={value} is not a class id or label name; "
                f"classes: {_describe_classes(raw)}"
            ) from None
    mask = raw.labels == class_id
    if not mask.any():
        raise DataError(
            f"{where}: holdout class {value} does not occur in the data; "
            f"classes: {_describe_classes(raw)}"
        )
    return mask, class_id


def load_dataset(
    spec: str,
    *,
    image_size: tuple[int, int] | None = None,
    anomaly_labels: str | Path | None = None,
    memory_budget: int | None = None,
) -> LoadedData:
    """Read and check a data set. With a `memory_budget` (bytes), a .npy whose float32 size is
    over it is memory-mapped instead of read (`LoadedData.streamed`), and checked in chunks."""
    parsed = parse_spec(spec)
    size = _check_image_size(image_size)
    raw, where = _read_source(parsed, size, memory_budget)
    _check_values(raw, where, memory_budget)
    streamed = bool(raw.details.get("memory_mapped"))

    x = raw.x
    if size is not None:
        if not raw.is_image:
            raise DataError(
                f"{where}: image_size applies to image data only; this data is tabular "
                f"({x.shape[1]} columns)"
            )
        if streamed:
            raise DataError(
                f"{where}: is streamed from disk (over the memory budget), where images cannot "
                "be resized; resize them in the file instead of with --image-size"
            )
        x = resize_images(x, size)

    n = x.shape[0]
    is_anomaly = raw.is_anomaly
    anomaly_source = "dataset" if is_anomaly is not None else None
    holdout_id: int | None = None
    if "holdout" in parsed.options:
        is_anomaly, holdout_id = _holdout_mask(raw, parsed.options["holdout"], where)
        anomaly_source = "holdout"
    if anomaly_labels is not None:
        flags_path = Path(anomaly_labels).expanduser()
        is_anomaly = read_anomaly_labels(flags_path)
        if len(is_anomaly) != n:
            raise DataError(
                f"{flags_path}: has {len(is_anomaly)} anomaly labels but {where} has {n} items; "
                "the lengths must match"
            )
        anomaly_source = str(flags_path)

    n_anomalies = 0 if is_anomaly is None else int(is_anomaly.sum())
    if n - n_anomalies < MIN_NORMAL_ROWS:
        raise DataError(
            f"{where}: only {n - n_anomalies} normal (non-anomaly) rows; at least "
            f"{MIN_NORMAL_ROWS} are needed to split into train / validation / test"
        )

    feature_shape = tuple(int(s) for s in x.shape[1:])
    description: dict[str, object] = {
        "name": parsed.name if parsed.name in BUILTINS else Path(parsed.name).name,
        "source": raw.details.get("loader", "builtin") if parsed.name in BUILTINS else parsed.name,
        "format": raw.kind,
        "n_items": int(n),
        "n_anomalies": n_anomalies,
        "anomaly_source": anomaly_source,
        "feature_shape": list(feature_shape),
        "is_image": raw.is_image,
        "n_classes": None if raw.labels is None else len(np.unique(raw.labels)),
        "label_names": raw.label_names,
        "holdout_class": holdout_id,
        "image_size": None if size is None else list(size),
        "options": dict(parsed.options),
        "details": raw.details,
    }
    return LoadedData(
        x=x if streamed else np.ascontiguousarray(x, dtype=np.float32),
        feature_shape=feature_shape,
        is_image=raw.is_image,
        labels=raw.labels,
        label_names=raw.label_names,
        is_anomaly=is_anomaly,
        description=description,
        streamed=streamed,
        feature_names=_feature_names(raw.details, raw.is_image, feature_shape),
    )


def _feature_names(
    details: dict[str, object], is_image: bool, feature_shape: tuple[int, ...]
) -> list[str] | None:
    """A table's column names, when its source named every column once."""
    names = details.get("feature_names", details.get("columns"))
    if is_image or not isinstance(names, list) or len(names) != int(np.prod(feature_shape)):
        return None
    if not all(isinstance(n, str) and n for n in names) or len(set(names)) != len(names):
        return None
    return list(names)
