"""The one image resize both sides use: the trainer on image folders, the service on image
bodies, so a picture reaches the model as the same numbers either way."""

from __future__ import annotations

import numpy as np
from PIL import Image

from bundle.arrays import FloatArray


def resize_chw(image: FloatArray, size: tuple[int, int]) -> FloatArray:
    """Bilinear resize of one (C, H, W) image to size (H, W), per channel on float32 planes
    (Pillow mode F), so no precision is lost to 8-bit rounding. No crop, no padding."""
    height, width = size
    if image.shape[1:] == (height, width):
        return image
    planes = [
        np.asarray(
            Image.fromarray(np.ascontiguousarray(plane, dtype=np.float32)).resize(
                (width, height), Image.Resampling.BILINEAR
            ),
            dtype=np.float32,
        )
        for plane in image
    ]
    return np.stack(planes)
