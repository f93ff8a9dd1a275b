"""Folders of PNG/JPEG images; every image goes through bundle.image_resize.resize_chw."""

from __future__ import annotations

from pathlib import Path

import numpy as np
from PIL import Image, UnidentifiedImageError

from bundle.arrays import FloatArray
from bundle.image_resize import resize_chw
from training.data._arrays import RawData
from training.data.errors import DataError

IMAGE_SUFFIXES = frozenset({".png", ".jpg", ".jpeg"})
GREY_MODES = frozenset({"1", "L", "LA", "I", "I;16", "I;16L", "I;16B", "I;16N", "F"})
# Modes whose pixel values numpy can take directly without going through 8-bit 'L'.
_WIDE_GREY_MODES = frozenset({"I", "I;16", "I;16L", "I;16B", "I;16N", "F"})


def resize_images(x: FloatArray, size: tuple[int, int]) -> FloatArray:
    if x.shape[2:] == size:
        return x
    out = np.empty((x.shape[0], x.shape[1], *size), dtype=np.float32)
    for i, image in enumerate(x):
        out[i] = resize_chw(image, size)
    return out


def _find_images(root: Path) -> list[Path]:
    # Hidden entries are skipped: macOS leaves '._name.png' resource forks that are not images.
    found = [
        p
        for p in root.rglob("*")
        if p.suffix.lower() in IMAGE_SUFFIXES
        and p.is_file()
        and not any(part.startswith(".") for part in p.relative_to(root).parts)
    ]
    return sorted(found)


def _class_names(root: Path, files: list[Path]) -> list[str] | None:
    nested = [f for f in files if len(f.relative_to(root).parts) > 1]
    if not nested:
        return None
    if len(nested) != len(files):
        loose = next(f for f in files if len(f.relative_to(root).parts) == 1)
        raise DataError(
            f"{root}: images must either all sit in class subfolders or none; {loose} is "
            f"directly in the folder while {nested[0]} is in a subfolder"
        )
    return sorted({f.relative_to(root).parts[0] for f in files})


def _open(path: Path) -> Image.Image:
    try:
        image = Image.open(path)
        image.load()
    except (UnidentifiedImageError, OSError, ValueError, Image.DecompressionBombError) as exc:
        raise DataError(f"{path}: unreadable image ({exc})") from exc
    return image


def _to_array(image: Image.Image, grey: bool) -> FloatArray:
    if grey:
        if image.mode in _WIDE_GREY_MODES:
            return np.asarray(image, dtype=np.float32)[None]
        return np.asarray(image.convert("L"), dtype=np.float32)[None]
    return np.asarray(image.convert("RGB"), dtype=np.float32).transpose(2, 0, 1)


def read_image_folder(root: Path, image_size: tuple[int, int] | None) -> RawData:
    files = _find_images(root)
    if not files:
        suffixes = ", ".join(sorted(IMAGE_SUFFIXES))
        raise DataError(f"{root}: no images found ({suffixes}, searched subfolders too)")
    names = _class_names(root, files)

    # First pass reads headers only: the colour decision and the size check need every file.
    modes: list[str] = []
    first_size: tuple[tuple[int, int], Path] | None = None
    for path in files:
        try:
            with Image.open(path) as image:
                modes.append(image.mode)
                size = image.size
        except (UnidentifiedImageError, OSError, ValueError) as exc:
            raise DataError(f"{path}: unreadable image ({exc})") from exc
        if first_size is None:
            first_size = (size, path)
        elif image_size is None and size != first_size[0]:
            (w0, h0), p0 = first_size
            raise DataError(
                f"{root}: images differ in size: {p0} is {w0}x{h0} but {path} is "
                f"{size[0]}x{size[1]} (width x height); pass --image-size to resize them all "
                "to one size"
            )
    grey = all(mode in GREY_MODES for mode in modes)

    arrays: list[FloatArray] = []
    for path in files:
        with _open(path) as image:
            array = _to_array(image, grey)
        if image_size is not None:
            array = resize_chw(array, image_size)
        arrays.append(array)
    x = np.stack(arrays)

    labels = None
    if names is not None:
        index = {name: i for i, name in enumerate(names)}
        labels = np.asarray([index[f.relative_to(root).parts[0]] for f in files], dtype=np.int64)
    return RawData(
        x=x,
        is_image=True,
        kind="image-folder",
        labels=labels,
        label_names=names,
        details={"files": len(files), "colour": "grey" if grey else "rgb"},
    )
