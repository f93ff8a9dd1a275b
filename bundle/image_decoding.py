"""What a picture file becomes for a bundle trained on images: the one set of rules the service
(service/codecs/images.py, which also bounds what a request may decode) and vae-score's image
folders (batch_scoring/sources.py) both apply, so a file scores the same either way.

1. Colour. One channel: 16-bit greyscale (Pillow modes `I;16*`, `I`, `F`) keeps its values,
   every other mode goes through `convert("L")`; three channels: `convert("RGB")` (alpha
   dropped). As the trainer's image-folder loader reads files.
2. Values. A bundle trained on an image folder takes pixel values as they are (0..255, or
   0..65535); one trained on arrays maps the pixel range onto its own value range (its min-max
   fit, or its clip range), and a standardised one takes no images (`ImagesUnavailable`).
3. Size. Resized per channel on float32 planes, bilinear, straight to (H, W)
   (bundle.image_resize).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from PIL import Image

from bundle.arrays import FloatArray
from bundle.image_resize import resize_chw
from bundle.manifest import ModelManifest
from bundle.preprocessing import Preprocessing

# Greyscale modes whose values numpy takes directly, as the trainer does; a PNG decodes 16-bit
# greyscale to one of the I modes.
WIDE_GREY_MODES = frozenset({"I", "I;16", "I;16L", "I;16B", "I;16N", "F"})
SIXTEEN_BIT_MAX = 65535.0
EIGHT_BIT_MAX = 255.0


class ImagesUnavailable(Exception):
    """Why a model cannot take or give images, worded for a person."""


class UnreadableMode(ValueError):
    """A picture in a mode Pillow cannot convert to what the model takes."""


@dataclass(frozen=True, eq=False)
class ImageSpec:
    """What a bundle says about its images: the item's (C, H, W) and the user-unit values that
    pixel 0 and the brightest pixel stand for."""

    model: str
    channels: int
    height: int
    width: int
    low: float
    high: float
    pixel_units: bool  # trained on image files: pixel values are the units themselves
    # the preprocessing scale, (1,) or (C*H*W,): model units -> user units
    feature_scale: FloatArray


def image_spec(manifest: ModelManifest, preprocessing: Preprocessing) -> ImageSpec:
    """The bundle's image description, or ImagesUnavailable saying why it has none."""
    name = manifest.name
    if manifest.input.image_shape is None:
        raise ImagesUnavailable(
            f"model {name} takes tabular inputs of shape {tuple(manifest.input.shape)}, not images"
        )
    channels, height, width = manifest.input.image_shape
    if channels not in (1, 3):
        raise ImagesUnavailable(
            f"model {name} takes {channels}-channel images; PNG and JPEG carry 1 or 3"
        )
    dataset = manifest.training.get("dataset")
    pixel_units = isinstance(dataset, dict) and dataset.get("format") == "image-folder"
    if pixel_units:
        low, high = 0.0, EIGHT_BIT_MAX
    elif preprocessing.kind == "minmax":
        low = float(preprocessing.offset.min())
        high = float((preprocessing.offset + preprocessing.scale).max())
    elif preprocessing.kind == "none" and preprocessing.clip is not None:
        low, high = preprocessing.clip
    else:
        raise ImagesUnavailable(
            f"model {name} was trained on arrays with {preprocessing.kind} preprocessing, "
            "which records no value range to map pixels 0..255 onto; send numbers instead"
        )
    return ImageSpec(
        model=name,
        channels=channels,
        height=height,
        width=width,
        low=low,
        high=high,
        pixel_units=pixel_units,
        feature_scale=preprocessing.scale,
    )


def pixel_planes(image: Image.Image, channels: int) -> tuple[FloatArray, float]:
    """(C, h, w) float32 pixel values of a loaded image as the trainer reads them, and the
    value of the brightest pixel at that bit depth."""
    try:
        if channels == 1 and image.mode in WIDE_GREY_MODES:
            return np.asarray(image, dtype=np.float32)[None], SIXTEEN_BIT_MAX
        if channels == 1:
            return np.asarray(image.convert("L"), dtype=np.float32)[None], EIGHT_BIT_MAX
        rgb = np.asarray(image.convert("RGB"), dtype=np.float32)
    except ValueError as exc:  # a mode Pillow cannot convert
        wanted = "greyscale" if channels == 1 else "RGB"
        raise UnreadableMode(f"cannot read a {image.mode} image as {wanted}: {exc}") from None
    return np.ascontiguousarray(rgb.transpose(2, 0, 1)), EIGHT_BIT_MAX


def image_item(image: Image.Image, spec: ImageSpec) -> FloatArray:
    """A loaded image -> the model's (C, H, W) item in user units (the rules above)."""
    planes, depth = pixel_planes(image, spec.channels)
    if not spec.pixel_units:
        planes = planes * np.float32((spec.high - spec.low) / depth) + np.float32(spec.low)
    return resize_chw(planes, (spec.height, spec.width))
