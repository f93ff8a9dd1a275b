"""Images on the wire for models trained on images: PNG/JPEG bodies in, PNG grids and heat maps out.

An image sent here becomes (bundle/image_decoding.py, the rules vae-score's image folders apply
too) the very array the trainer's image-folder loader
(`training/data/image_folders.py`: `_to_array`, then `bundle.image_resize.resize_chw`) makes of
the same file, so a model sees served images as it saw its training images:

1. Colour. A bundle whose `image_shape` has one channel takes greyscale: 16-bit greyscale PNGs
   (Pillow modes `I;16*`, `I`) keep their values, every other mode goes through Pillow's
   `convert("L")` (ITU-R 601-2 luma; alpha dropped). Three channels: `convert("RGB")` (alpha
   dropped, not composited). No EXIF rotation: the trainer applies none.
2. Values (`ImageSpec.low`/`high`). A bundle trained on an image folder (`model.json`:
   `training.dataset.format == "image-folder"`) was trained on raw pixel values, so pixels are
   taken as they are: 0..255 (0..65535 for 16-bit greyscale). A bundle trained on arrays (the
   built-in digits, .npy/.npz, IDX) was trained on numbers with no pixel encoding; there the
   pixel range 0..255 (0..65535) spans the bundle's own value range: its min-max fit
   `[offset, offset + scale]` (digits-vae: 0..16), or its clip range for data already in [0, 1].
   Standardised array data have no such range, and such a bundle refuses images.
3. Size. Anything but the bundle's (H, W) is resized per channel on float32 planes (Pillow mode
   F) with bilinear resampling, straight to (H, W): no crop, no padding, the aspect ratio is
   not kept, exactly as training with `--image-size` did. Values are mapped before resizing;
   the map is linear, so the order only matters to float rounding, and for image-folder bundles
   (no map) it is the trainer's order.

Out, user units map back through the same range: `round(clip((x - low) / (high - low)) * 255)`,
one fixed range per bundle rather than each image's own min/max, so images are comparable across
items and calls. Several items make a grid (row-major in batch order) with a thin grey gap.
The heat map colours each pixel's root-mean-square error over channels, in user units, as a
share of the same range (0: nothing wrong, 1: black where white was expected).

Limits: the pixel count (width x height, summed over a multipart upload) is checked on the
headers before any pixel is decoded, and only the PNG and JPEG decoders are ever used, so a
decompression bomb or a stray format costs a header read.
"""

from __future__ import annotations

import io
import math
from collections.abc import Mapping
from typing import TYPE_CHECKING, Any

import numpy as np
import numpy.typing as npt
from PIL import Image, PngImagePlugin, UnidentifiedImageError
from python_multipart.exceptions import FormParserError
from python_multipart.multipart import MultipartParser, MultipartState, parse_options_header

from bundle.arrays import FloatArray
from bundle.image_decoding import (
    EIGHT_BIT_MAX,
    ImageSpec,
    ImagesUnavailable,
    UnreadableMode,
    image_item,
)
from bundle.image_decoding import image_spec as bundle_image_spec
from service.errors import (
    InvalidInput,
    MalformedBody,
    PayloadTooLarge,
    UnsupportedMediaType,
    excerpt,
)
from service.models.served_model import ServedModel

if TYPE_CHECKING:
    from python_multipart.multipart import MultipartCallbacks

U8 = npt.NDArray[np.uint8]

PNG_MEDIA_TYPE = "image/png"
JPEG_MEDIA_TYPE = "image/jpeg"
MULTIPART_MEDIA_TYPE = "multipart/form-data"
# Routes that read image bodies, and routes that can answer with a PNG.
IMAGE_INPUT_ROUTES = ("reconstruct", "anomaly-score")
PNG_OUTPUT_ROUTES = ("sample", "reconstruct", "anomaly-score")

# The decoder each media type may use: a PNG body is never handed to any other Pillow plugin.
_DECODERS: dict[str, tuple[str, ...]] = {PNG_MEDIA_TYPE: ("PNG",), JPEG_MEDIA_TYPE: ("JPEG",)}
# Multipart parts without a type (or the generic one) are sniffed, but only as PNG or JPEG.
_UNTYPED_PARTS = frozenset({"", "application/octet-stream"})
GAP_GREY = 128  # between grid cells: visible on both black and white backgrounds
# The per-item lists a heat map's answer carries in headers, together at most this many bytes;
# beyond, they are left out (X-Per-Item-Omitted) and the body formats carry them.
MAX_ITEM_HEADER_BYTES = 2048

# Viridis (matplotlib's perceptually uniform map) sampled at 17 evenly spaced points; linear
# interpolation between them stays within 6/255 of the full map
# (tests/service/codecs/test_images.py).
_VIRIDIS = np.array(
    [
        [68, 1, 84], [72, 24, 106], [71, 45, 123], [66, 64, 134], [59, 82, 139], [51, 99, 141],
        [44, 114, 142], [38, 130, 142], [33, 145, 140], [31, 160, 136], [40, 174, 128],
        [63, 188, 115], [94, 201, 98], [132, 212, 75], [173, 220, 48], [216, 226, 25],
        [253, 231, 37],
    ],
    dtype=np.float64,
)  # fmt: skip


# Text chunks (tEXt, zTXt, iTXt) are metadata no model reads: a PNG may carry a little of it,
# not the 64 MB Pillow would otherwise decompress and keep.
PngImagePlugin.MAX_TEXT_CHUNK = 64 * 1024
PngImagePlugin.MAX_TEXT_MEMORY = 256 * 1024


def image_spec(model: ServedModel) -> ImageSpec:
    """The model's image description, or ImagesUnavailable saying why it has none."""
    return bundle_image_spec(model.manifest, model.bundle.preprocessing)


# --------------------------------------------------------------------------- images in


class _PixelBudget:
    """Pixels a request may still decode; charged from headers, before decoding."""

    def __init__(self, limit: int):
        self.limit = limit
        self.used = 0

    def charge(self, width: int, height: int, where: str) -> None:
        self.used += width * height
        if self.used > self.limit:
            raise PayloadTooLarge(
                f"{where}: {width}x{height} pixels take the request to {self.used} pixels, above "
                f"the limit of {self.limit} (VAE_MAX_IMAGE_PIXELS); send smaller images",
                {"limit": self.limit, "width": width, "height": height},
            )


def decode_image_request(
    content_type: str,
    body: bytes,
    model: ServedModel,
    route: str,
    *,
    max_pixels: int,
    max_items: int,
) -> FloatArray:
    """A PNG/JPEG body (one item) or a multipart upload (items in upload order) as the model's
    (B, C, H, W) input in user units. 415 when this route or model takes no images."""
    media = content_type.partition(";")[0].strip().lower()
    if route not in IMAGE_INPUT_ROUTES:
        raise UnsupportedMediaType(
            f"/{route} takes no image bodies; images go to /reconstruct and /anomaly-score "
            "(send application/json or application/x-npy here)",
            {"content_type": content_type, "image_routes": list(IMAGE_INPUT_ROUTES)},
        )
    if media not in (*_DECODERS, MULTIPART_MEDIA_TYPE):
        raise UnsupportedMediaType(
            f"unsupported Content-Type {excerpt(media)}; images go as {PNG_MEDIA_TYPE}, "
            f"{JPEG_MEDIA_TYPE} or {MULTIPART_MEDIA_TYPE}",
            {"content_type": content_type},
        )
    try:
        spec = image_spec(model)
    except ImagesUnavailable as why:
        raise UnsupportedMediaType(
            f"{why}: send application/json or application/x-npy",
            {"content_type": content_type, "model": model.name},
        ) from None
    if media == MULTIPART_MEDIA_TYPE:
        files = _image_parts(content_type, body, max_items)
    else:
        files = [(body, _DECODERS[media], "request body")]
    if not files:
        raise InvalidInput(
            "the multipart body holds no image files; send at least one",
            {"field": "inputs"},
        )
    # Every header is read and charged before any pixel is decoded, so an upload above the
    # limit costs header reads only, wherever in it the big image sits.
    budget = _PixelBudget(max_pixels)
    opened = [(_open(data, formats, where), where) for data, formats, where in files]
    try:
        for image, where in opened:
            budget.charge(image.width, image.height, where)
        return np.stack([_decode(image, spec, where) for image, where in opened])
    finally:
        for image, _ in opened:
            image.close()


def _open(data: bytes, formats: tuple[str, ...], where: str) -> Image.Image:
    """An image's header, read with only the decoders its media type allows."""
    kinds = " or ".join(formats)
    if not data:
        raise MalformedBody(f"{where} is empty; expected a {kinds} image", {"where": where})
    try:
        image = Image.open(io.BytesIO(data), formats=list(formats))  # reads the header only
    except Image.DecompressionBombError as exc:
        raise PayloadTooLarge(f"{where}: {exc}", {"where": where}) from None
    except UnidentifiedImageError:
        raise MalformedBody(f"{where} is not a {kinds} image", {"where": where}) from None
    except Exception as exc:
        # Deliberately broad: Pillow's header parsers on hostile bytes raise SyntaxError,
        # OSError, ValueError, struct.error, ... and each means "not a readable image".
        raise MalformedBody(
            f"{where}: corrupt or truncated {kinds} header ({exc})", {"where": where}
        ) from exc
    return image


def _decode(image: Image.Image, spec: ImageSpec, where: str) -> FloatArray:
    """One opened image -> (C, H, W) float32 in user units (the module docstring's rules)."""
    try:
        image.load()
    except Exception as exc:
        # The same breadth for the pixel data: truncated files raise OSError, corrupt streams
        # zlib or decoder errors, all of them the client's bytes.
        raise MalformedBody(
            f"{where}: corrupt or truncated {image.format} data ({exc})", {"where": where}
        ) from exc
    try:
        return image_item(image, spec)
    except UnreadableMode as exc:
        raise UnsupportedMediaType(str(exc), {"mode": image.mode}) from None


def _image_parts(
    content_type: str, body: bytes, max_items: int
) -> list[tuple[bytes, tuple[str, ...], str]]:
    """The image files of a multipart/form-data body in upload order: (bytes, decoders, name
    for messages). Parameters travel in the query string, as with npy bodies, so a plain form
    field is refused rather than silently ignored."""
    parts = _multipart_parts(content_type, body, max_items)
    files: list[tuple[bytes, tuple[str, ...], str]] = []
    for index, (headers, data) in enumerate(parts):
        _, disposition = parse_options_header(headers.get("content-disposition", ""))
        name = disposition.get(b"name", b"").decode("latin-1")
        filename = disposition.get(b"filename")
        media = headers.get("content-type", "").partition(";")[0].strip().lower()
        where = (
            f"part {index} ({excerpt(filename.decode('latin-1'))})" if filename else f"part {index}"
        )
        if media in _DECODERS:
            files.append((data, _DECODERS[media], where))
        elif filename is not None and media in _UNTYPED_PARTS:
            files.append((data, (*_DECODERS[PNG_MEDIA_TYPE], *_DECODERS[JPEG_MEDIA_TYPE]), where))
        elif filename is None and (media in _UNTYPED_PARTS or media.startswith("text/")):
            raise InvalidInput(
                f"multipart field {excerpt(name)} is not an image file; send parameters in the "
                "query string (e.g. ?score_type=neg_elbo), as with npy bodies",
                {"field": excerpt(name)},
            )
        else:
            raise UnsupportedMediaType(
                f"{where} is {media or 'untyped'}; image parts must be {PNG_MEDIA_TYPE} or "
                f"{JPEG_MEDIA_TYPE}",
                {"part": index, "content_type": media},
            )
    return files


def _multipart_parts(
    content_type: str, body: bytes, max_parts: int
) -> list[tuple[dict[str, str], bytes]]:
    """Split a multipart/form-data body into (lower-cased headers, data) with python-multipart's
    streaming parser, refusing truncated bodies and more parts than a batch may hold."""
    _, options = parse_options_header(content_type)
    boundary = options.get(b"boundary")
    if not boundary:
        raise MalformedBody(
            "multipart/form-data needs a boundary parameter in Content-Type",
            {"content_type": content_type},
        )
    parts: list[tuple[dict[str, str], bytearray]] = []
    header_name, header_value = bytearray(), bytearray()

    def begin_part() -> None:
        if len(parts) == max_parts:
            raise PayloadTooLarge(
                f"the multipart body holds more than {max_parts} parts, above the batch limit "
                "(VAE_MAX_BATCH_SIZE); split the request",
                {"limit": max_parts},
            )
        parts.append(({}, bytearray()))

    def header_field(data: bytes, start: int, end: int) -> None:
        header_name.extend(data[start:end])

    def header_data(data: bytes, start: int, end: int) -> None:
        header_value.extend(data[start:end])

    def header_end() -> None:
        parts[-1][0][header_name.decode("latin-1").strip().lower()] = header_value.decode(
            "latin-1"
        ).strip()
        header_name.clear()
        header_value.clear()

    def part_data(data: bytes, start: int, end: int) -> None:
        parts[-1][1].extend(data[start:end])

    callbacks: MultipartCallbacks = {
        "on_part_begin": begin_part,
        "on_header_field": header_field,
        "on_header_value": header_data,
        "on_header_end": header_end,
        "on_part_data": part_data,
    }
    try:
        parser = MultipartParser(boundary, callbacks)
        parser.write(body)
    except FormParserError as exc:  # MultipartParseError and the boundary-length check
        raise MalformedBody(f"malformed multipart body: {exc}", {}) from None
    if parser.state != MultipartState.END:
        raise MalformedBody(
            "malformed multipart body: truncated (no closing boundary)", {"parts": len(parts)}
        )
    return [(headers, bytes(data)) for headers, data in parts]


# --------------------------------------------------------------------------- images out


def png_response(
    arrays: Mapping[str, npt.NDArray[Any]], route: str, spec: ImageSpec
) -> tuple[bytes, dict[str, str]]:
    """The PNG body of a route's result and the headers it adds: the grid layout, and for
    /anomaly-score the per-item arrays a heat map cannot show (comma-separated, batch order),
    when they fit in MAX_ITEM_HEADER_BYTES."""
    headers: dict[str, str] = {}
    if route == "anomaly-score":
        tiles = heat_map(arrays["feature_errors"], spec)
        lists = {
            f"X-{name.replace('_', '-').title()}": _header_list(arrays[name])
            for name in ("scores", "is_anomaly", "tail_probability")
            if name in arrays
        }
        if sum(len(value) for value in lists.values()) <= MAX_ITEM_HEADER_BYTES:
            headers.update(lists)
        else:
            # Proxies refuse answers whose headers pass a few kB (nginx: 4-8 kB, then 502).
            headers["X-Per-Item-Omitted"] = (
                f"{len(tiles)} items: per-item scores come with application/json, "
                "application/x-npy or application/x-npz"
            )
    else:
        tiles = to_pixels(arrays["outputs"], spec)
    canvas, rows, columns = grid(tiles)
    headers.update({"X-Grid-Rows": str(rows), "X-Grid-Columns": str(columns)})
    return png_bytes(canvas), headers


def _header_list(values: npt.NDArray[Any]) -> str:
    if values.dtype == np.bool_:
        return ",".join("true" if v else "false" for v in values.ravel())
    return ",".join(str(v) for v in values.ravel())  # numpy's shortest round-trip repr


def to_pixels(items: npt.NDArray[Any], spec: ImageSpec) -> U8:
    """(B, ...) user-unit items -> (B, H, W, C) 8-bit pixels through the bundle's range."""
    x = np.asarray(items, dtype=np.float64).reshape(
        len(items), spec.channels, spec.height, spec.width
    )
    level = (x - spec.low) * (EIGHT_BIT_MAX / (spec.high - spec.low))
    pixels = np.rint(np.clip(level, 0.0, EIGHT_BIT_MAX)).astype(np.uint8)
    return np.ascontiguousarray(pixels.transpose(0, 2, 3, 1))


def heat_map(feature_errors: npt.NDArray[Any], spec: ImageSpec) -> U8:
    """(B, ...) squared errors in model units (`score(per_feature=True)`) -> (B, H, W, 3)
    viridis pixels of each pixel's RMS error over channels, as a share of the value range."""
    count = len(feature_errors)
    flat = np.asarray(feature_errors, dtype=np.float64).reshape(count, -1)
    scale = spec.feature_scale.astype(np.float64)
    # Back to user units: preprocessing divided by `scale`, so squared errors shrank by scale^2.
    squared = (flat * scale * scale).reshape(count, spec.channels, spec.height, spec.width)
    level = np.sqrt(squared.mean(axis=1)) / (spec.high - spec.low)
    return viridis(np.clip(level, 0.0, 1.0))


def viridis(level: npt.NDArray[np.float64]) -> U8:
    """Levels in [0, 1] of any shape -> that shape plus an RGB axis, 8-bit."""
    anchors = np.linspace(0.0, 1.0, len(_VIRIDIS))
    channels = [np.interp(level, anchors, _VIRIDIS[:, k]) for k in range(3)]
    return np.rint(np.stack(channels, axis=-1)).astype(np.uint8)


def grid(tiles: U8) -> tuple[U8, int, int]:
    """(B, H, W, C) tiles -> one (rows, columns) grid image, row-major in batch order, with a
    gap of about an eighth of a tile (at least one pixel) between cells; one tile is itself."""
    count, height, width, depth = tiles.shape
    columns = math.ceil(math.sqrt(count))
    rows = math.ceil(count / columns)
    gap = 0 if count == 1 else max(1, round(min(height, width) / 8))
    canvas = np.full(
        (rows * height + (rows - 1) * gap, columns * width + (columns - 1) * gap, depth),
        GAP_GREY,
        dtype=np.uint8,
    )
    for index, tile in enumerate(tiles):
        row, column = divmod(index, columns)
        top, left = row * (height + gap), column * (width + gap)
        canvas[top : top + height, left : left + width] = tile
    return canvas, rows, columns


def png_bytes(canvas: U8) -> bytes:
    """(H, W, 1) greyscale or (H, W, 3) RGB pixels as a PNG file."""
    image = Image.fromarray(canvas[:, :, 0] if canvas.shape[2] == 1 else canvas)
    buffer = io.BytesIO()
    image.save(buffer, format="PNG")
    return buffer.getvalue()
