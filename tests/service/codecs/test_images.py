"""Images on the wire (issue 8): PNG/JPEG/multipart bodies in, PNG grids and heat maps out.

Real bundles only: the committed digits-vae (trained on the built-in digits arrays, values
0..16), tiny-conv and cancer-vae from the session repository, and two bundles this module trains
from folders of PNG files with the real trainer, so served images can be checked against what
the trainer's own loader made of the same files. Every test runs on both transports (the ASGI
fast path and the FastAPI routes).
"""

from __future__ import annotations

import io
import shutil
import struct
import zlib
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import matplotlib
import numpy as np
import numpy.typing as npt
import pytest
from fastapi.testclient import TestClient
from PIL import Image
from sklearn.datasets import load_digits

from bundle.arrays import FloatArray
from service.api.app import create_app
from service.codecs import images
from service.settings import ServiceSettings
from tests.bundles import TINY
from training.config import TrainingConfig
from training.data.image_folders import read_image_folder
from training.pipeline import run_training

U8 = npt.NDArray[np.uint8]
DIGITS = load_digits().images.astype(np.float32)  # (N, 8, 8), values 0..16
# digits-vae's value range (model.json: minmax offset 0, scale 16): pixel 255 stands for 16.
DIGITS_HIGH = 16.0


def _pixels(digit: FloatArray) -> U8:
    """A digit as 8-bit greyscale, 16 -> 255 (what a client drawing it would send)."""
    pixels: U8 = np.rint(digit * (255 / DIGITS_HIGH)).astype(np.uint8)
    return pixels


def _encode(pixels: npt.NDArray[Any], fmt: str = "PNG", **options: Any) -> bytes:
    buffer = io.BytesIO()
    Image.fromarray(pixels).save(buffer, format=fmt, **options)
    return buffer.getvalue()


def _digits_units(pixels: npt.NDArray[Any]) -> FloatArray:
    """The documented map for array-trained bundles: low + p * (high - low) / 255, in float32."""
    return np.asarray(pixels, dtype=np.float32) * np.float32(DIGITS_HIGH / 255) + np.float32(0)


def _decode(content: bytes) -> U8:
    return np.asarray(Image.open(io.BytesIO(content)))


def _png_header_only(width: int, height: int) -> bytes:
    """A PNG whose header claims width x height pixels, with no pixel data behind it."""

    def chunk(kind: bytes, data: bytes) -> bytes:
        crc = zlib.crc32(kind + data)
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", crc)

    header = struct.pack(">IIBBBBB", width, height, 8, 0, 0, 0, 0)
    return b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", header) + chunk(b"IEND", b"")


# --------------------------------------------------------------------------- fixtures


def _write_folder(root: Path, tiles: list[U8]) -> Path:
    root.mkdir(parents=True)
    for index, tile in enumerate(tiles):
        (root / f"{index:03d}.png").write_bytes(_encode(tile))
    return root


def _rgb(digit: FloatArray) -> U8:
    """A digit coloured in: three different channels, so a channel mix-up would show."""
    grey = _pixels(digit).astype(np.int32)
    return np.stack([grey, 255 - grey, grey // 2], axis=-1).astype(np.uint8)


@pytest.fixture(scope="module")
def image_repository(model_repository: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """digits-vae, tiny-conv and cancer-vae from the session repository, plus folder-grey/1
    (12x10 greyscale PNGs trained at 8x8: the resize rule) and folder-rgb/1 (RGB PNGs)."""
    root = tmp_path_factory.mktemp("image-repository")
    for name in ("digits-vae", "tiny-conv", "cancer-vae"):
        shutil.copytree(model_repository / name / "1", root / name / "1")
    data = tmp_path_factory.mktemp("image-folders")
    grey = [
        np.asarray(Image.fromarray(_pixels(d)).resize((10, 12), Image.Resampling.NEAREST))
        for d in DIGITS[:40]
    ]
    folders = {
        "folder-grey": (_write_folder(data / "grey", grey), "8x8"),
        "folder-rgb": (_write_folder(data / "rgb", [_rgb(d) for d in DIGITS[:40]]), None),
    }
    for name, (folder, size) in folders.items():
        config = TrainingConfig(
            **{**TINY, "plots": False, "dataset": str(folder), "image_size": size}  # type: ignore[arg-type]
        )
        run_training(config, root / name / "1", show_progress=False)
    return root


@pytest.fixture(scope="module", params=["fast", "routed"])
def client(image_repository: Path, request: pytest.FixtureRequest) -> Iterator[TestClient]:
    settings = ServiceSettings(
        model_repository=image_repository,
        default_model="digits-vae",
        max_batch_size=16,
        intra_op_threads=1,
        fast_path=request.param == "fast",
    )
    with TestClient(create_app(settings), raise_server_exceptions=False) as test_client:
        yield test_client


def _post(
    client: TestClient,
    path: str,
    body: bytes,
    content_type: str,
    accept: str | None = None,
) -> Any:
    headers = {"content-type": content_type}
    if accept is not None:
        headers["accept"] = accept
    return client.post(path, content=body, headers=headers)


def _json_twin(client: TestClient, path: str, inputs: npt.NDArray[Any], **fields: Any) -> Any:
    return client.post(path, json={"inputs": np.asarray(inputs).tolist(), **fields})


# --------------------------------------------------------------------------- images in


def test_png_scores_equal_the_numbers_its_pixels_stand_for(client: TestClient) -> None:
    pixels = _pixels(DIGITS[0])
    sent = _post(client, "/anomaly-score?per_feature=true", _encode(pixels), "image/png")
    twin = _json_twin(client, "/anomaly-score", _digits_units(pixels)[None, None], per_feature=True)
    assert sent.status_code == 200, sent.text
    assert sent.content == twin.content  # lossless, no resize: exactly the same answer
    # ... and those numbers are the digit itself, to within the 8-bit quantisation
    assert np.abs(_digits_units(pixels) - DIGITS[0]).max() <= DIGITS_HIGH / 255 / 2 + 1e-6


def test_jpeg_scores_equal_its_decoded_pixels(client: TestClient) -> None:
    jpeg = _encode(_pixels(DIGITS[1]), "JPEG", quality=90)
    decoded = np.asarray(Image.open(io.BytesIO(jpeg)).convert("L"))
    sent = _post(client, "/anomaly-score", jpeg, "image/jpeg")
    assert sent.status_code == 200, sent.text
    assert (
        sent.content == _json_twin(client, "/anomaly-score", _digits_units(decoded)[None]).content
    )


def test_query_parameters_carry_the_scalars(client: TestClient) -> None:
    pixels = _pixels(DIGITS[2])
    sent = _post(client, "/anomaly-score?score_type=neg_elbo", _encode(pixels), "image/png")
    twin = _json_twin(
        client, "/anomaly-score", _digits_units(pixels)[None, None], score_type="neg_elbo"
    )
    assert sent.json()["score_type"] == "neg_elbo"
    assert sent.content == twin.content
    reconstructed = _post(client, "/reconstruct?samples=3&seed=5", _encode(pixels), "image/png")
    twin = _json_twin(client, "/reconstruct", _digits_units(pixels)[None, None], samples=3, seed=5)
    assert reconstructed.content == twin.content
    assert np.asarray(reconstructed.json()["outputs"]).shape == (1, 1, 8, 8)


def test_a_bigger_image_is_resized_like_pillow_bilinear_on_float_planes(
    client: TestClient,
) -> None:
    big = np.asarray(Image.fromarray(_pixels(DIGITS[3])).resize((29, 31), Image.Resampling.LANCZOS))
    plane = Image.fromarray(_digits_units(big)).resize((8, 8), Image.Resampling.BILINEAR)
    expected = np.asarray(plane, dtype=np.float32)[None, None]
    sent = _post(client, "/anomaly-score", _encode(big), "image/png")
    assert sent.status_code == 200, sent.text
    assert sent.content == _json_twin(client, "/anomaly-score", expected).content


def test_sixteen_bit_greyscale_spans_the_same_range(client: TestClient) -> None:
    wide = np.rint(DIGITS[4] * (65535 / DIGITS_HIGH)).astype(np.uint16)
    expected = wide.astype(np.float32) * np.float32(DIGITS_HIGH / 65535) + np.float32(0)
    sent = _post(client, "/anomaly-score", _encode(wide), "image/png")
    assert Image.open(io.BytesIO(_encode(wide))).mode.startswith("I")
    assert sent.content == _json_twin(client, "/anomaly-score", expected[None]).content


def test_colour_images_are_greyscaled_for_a_greyscale_model(client: TestClient) -> None:
    colour = _rgb(DIGITS[5])
    grey = np.asarray(Image.fromarray(colour).convert("L"))
    sent = _post(client, "/models/tiny-conv/anomaly-score", _encode(colour), "image/png")
    twin = _json_twin(client, "/models/tiny-conv/anomaly-score", _digits_units(grey)[None])
    assert sent.status_code == 200, sent.text
    assert sent.content == twin.content


@pytest.mark.parametrize(
    ("model", "tile", "file_size"),
    [
        ("folder-grey", _pixels(DIGITS[50]), (10, 12)),  # resized 12x10 -> 8x8 as trained
        ("folder-grey", _pixels(DIGITS[51]), (23, 17)),  # any other size is resized too
        ("folder-rgb", _rgb(DIGITS[52]), (8, 8)),
        ("folder-rgb", _rgb(DIGITS[53]), (16, 13)),
    ],
)
def test_image_folder_bundles_see_what_the_trainer_made_of_the_file(
    client: TestClient,
    tmp_path: Path,
    model: str,
    tile: U8,
    file_size: tuple[int, int],
) -> None:
    """The trainer's own loader on a folder holding just this file is the reference."""
    png = _encode(np.asarray(Image.fromarray(tile).resize(file_size, Image.Resampling.NEAREST)))
    (tmp_path / "one.png").write_bytes(png)
    trained_as = read_image_folder(tmp_path, (8, 8)).x  # raw pixel values, 0..255
    path = f"/models/{model}/anomaly-score?per_feature=true"
    sent = _post(client, path, png, "image/png")
    assert sent.status_code == 200, sent.text
    assert (
        sent.content == _json_twin(client, path.split("?")[0], trained_as, per_feature=True).content
    )


def test_multipart_uploads_are_the_batch_in_upload_order(client: TestClient) -> None:
    tiles = [_pixels(d) for d in DIGITS[6:10]]
    files = [
        ("images", ("a.png", _encode(tiles[0]), "image/png")),
        ("images", ("b.jpg", _encode(tiles[1], "JPEG", quality=95), "image/jpeg")),
        ("other", ("c.png", _encode(tiles[2]), "application/octet-stream")),  # sniffed
        ("images", ("d.png", _encode(tiles[3]), "image/png")),
    ]
    tiles[1] = np.asarray(Image.open(io.BytesIO(files[1][1][1])))
    sent = client.post("/anomaly-score?per_feature=true", files=files)
    assert sent.status_code == 200, sent.text
    twin = _json_twin(
        client, "/anomaly-score", _digits_units(np.stack(tiles))[:, None], per_feature=True
    )
    assert sent.content == twin.content
    assert len(sent.json()["scores"]) == 4


# --------------------------------------------------------------------------- refusals


def _error(response: Any, status: int) -> str:
    assert response.status_code == status, response.text
    assert response.headers["content-type"] == "application/json"
    message: str = response.json()["error"]["message"]
    return message


@pytest.mark.parametrize(
    ("body", "content_type", "status", "says"),
    [
        (b"\x00garbage bytes, not an image", "image/png", 400, "not a PNG image"),
        (_encode(_pixels(DIGITS[0]))[:60], "image/png", 400, "truncated"),
        (_encode(_pixels(DIGITS[0]), "JPEG")[:200], "image/jpeg", 400, "truncated"),
        (_encode(_pixels(DIGITS[0]), "JPEG"), "image/png", 400, "not a PNG image"),
        (b"", "image/png", 400, "empty"),
        (_png_header_only(100_000, 100_000), "image/png", 413, "decompression bomb"),
        (_png_header_only(3000, 3000), "image/png", 413, "VAE_MAX_IMAGE_PIXELS"),
        (_encode(_pixels(DIGITS[0]), "GIF"), "image/gif", 415, "image/png"),
    ],
)
def test_bad_images_are_client_errors(
    client: TestClient, body: bytes, content_type: str, status: int, says: str
) -> None:
    assert says in _error(_post(client, "/anomaly-score", body, content_type), status)


def _multipart(parts: list[bytes], boundary: str = "b0undary") -> tuple[bytes, str]:
    body = b"".join(f"--{boundary}\r\n".encode() + part + b"\r\n" for part in parts)
    return body + f"--{boundary}--\r\n".encode(), f"multipart/form-data; boundary={boundary}"


def _file_part(data: bytes, filename: str = "x.png", media: str = "image/png") -> bytes:
    head = f'Content-Disposition: form-data; name="f"; filename="{filename}"\r\n'
    return (head + f"Content-Type: {media}\r\n\r\n").encode() + data


PNG = _encode(_pixels(DIGITS[0]))


@pytest.mark.parametrize(
    ("body", "content_type", "status", "says"),
    [
        (_multipart([_file_part(PNG)])[0], "multipart/form-data", 400, "boundary"),
        (_multipart([_file_part(PNG)])[0][:-20], _multipart([])[1], 400, "truncated"),
        (b"no multipart here", _multipart([])[1], 400, "malformed multipart"),
        (*_multipart([]), 422, "no image files"),
        (
            *_multipart([b'Content-Disposition: form-data; name="score_type"\r\n\r\nneg_elbo']),
            422,
            "query string",
        ),
        (*_multipart([_file_part(b"a,b\n1,2", "x.csv", "text/csv")]), 415, "image/png"),
        (*_multipart([_file_part(PNG), _file_part(b"\x89PNG broken")]), 400, "part 1"),
        (*_multipart([_file_part(PNG)] * 17), 413, "VAE_MAX_BATCH_SIZE"),
        (
            *_multipart([_file_part(_png_header_only(1500, 1500))] * 2),
            413,
            "VAE_MAX_IMAGE_PIXELS",
        ),
    ],
)
def test_bad_multipart_uploads_are_client_errors(
    client: TestClient, body: bytes, content_type: str, status: int, says: str
) -> None:
    assert says in _error(_post(client, "/reconstruct", body, content_type), status)


def test_tabular_models_refuse_images_and_say_why(client: TestClient) -> None:
    path = "/models/cancer-vae/anomaly-score"
    assert "tabular" in _error(_post(client, path, PNG, "image/png"), 415)
    files = {"f": ("x.png", PNG, "image/png")}
    assert "tabular" in _error(client.post(path, files=files), 415)
    refused = client.post(path, json={"inputs": [[0.0] * 30]}, headers={"accept": "image/png"})
    assert "tabular" in _error(refused, 406)
    # A client that also takes JSON gets JSON: PNG is a preference, not a demand.
    fallback = client.post(
        path, json={"inputs": [[0.0] * 30]}, headers={"accept": "image/png, */*;q=0.5"}
    )
    assert fallback.status_code == 200
    assert fallback.headers["content-type"] == "application/json"


def test_array_routes_refuse_images_and_say_which_routes_take_them(client: TestClient) -> None:
    assert "/reconstruct" in _error(_post(client, "/encode", PNG, "image/png"), 415)
    refused = client.post("/decode", json={"latents": [[0.0] * 8]}, headers={"accept": "image/png"})
    assert "/sample" in _error(refused, 406)


# --------------------------------------------------------------------------- images out


def _cells(grid: U8, rows: int, columns: int, size: int, gap: int) -> list[U8]:
    return [
        grid[r * (size + gap) : r * (size + gap) + size, c * (size + gap) : c * (size + gap) + size]
        for r in range(rows)
        for c in range(columns)
    ]


def _expected_pixels(outputs: npt.NDArray[Any]) -> U8:
    return np.rint(np.clip(np.asarray(outputs) * (255 / DIGITS_HIGH), 0, 255)).astype(np.uint8)


def test_reconstruct_png_is_a_grid_of_the_outputs(client: TestClient) -> None:
    batch = _digits_units(np.stack([_pixels(d) for d in DIGITS[10:13]]))
    answer = client.post(
        "/reconstruct", json={"inputs": batch.tolist()}, headers={"accept": "image/png"}
    )
    assert answer.status_code == 200, answer.text
    assert answer.headers["content-type"] == "image/png"
    assert (answer.headers["x-grid-rows"], answer.headers["x-grid-columns"]) == ("2", "2")
    grid = _decode(answer.content)
    assert grid.shape == (8 + 1 + 8, 8 + 1 + 8)  # 2x2 cells of 8x8, one-pixel gaps, greyscale
    outputs = np.asarray(_json_twin(client, "/reconstruct", batch).json()["outputs"])
    cells = _cells(grid, 2, 2, 8, 1)
    for cell, output in zip(cells, outputs, strict=False):
        np.testing.assert_array_equal(cell, _expected_pixels(output.reshape(8, 8)))
    assert (cells[3] == images.GAP_GREY).all()  # the fourth cell is empty
    assert (grid[8, :] == images.GAP_GREY).all()
    assert (grid[:, 8] == images.GAP_GREY).all()


def test_one_item_is_one_image_without_gaps(client: TestClient) -> None:
    answer = _post(client, "/reconstruct", PNG, "image/png", accept="image/*")
    assert answer.headers["content-type"] == "image/png"
    assert _decode(answer.content).shape == (8, 8)


def test_sample_png_shows_the_samples_with_their_seed(client: TestClient) -> None:
    body = {"n": 5, "seed": 11, "temperature": 0.7}
    answer = client.post("/sample", json=body, headers={"accept": "image/png"})
    assert answer.status_code == 200, answer.text
    assert answer.headers["x-seed"] == "11"
    grid = _decode(answer.content)
    assert grid.shape == (2 * 8 + 1, 3 * 8 + 2)  # 5 items: 2 rows of 3 columns
    outputs = np.asarray(client.post("/sample", json=body).json()["outputs"])
    for cell, output in zip(_cells(grid, 2, 3, 8, 1), outputs, strict=False):
        np.testing.assert_array_equal(cell, _expected_pixels(output[0]))


def test_sample_png_of_an_rgb_model_is_rgb(client: TestClient) -> None:
    answer = client.post(
        "/models/folder-rgb/sample", json={"n": 2, "seed": 0}, headers={"accept": "image/png"}
    )
    assert answer.status_code == 200, answer.text
    outputs = np.asarray(
        client.post("/models/folder-rgb/sample", json={"n": 2, "seed": 0}).json()["outputs"]
    )
    grid = _decode(answer.content)
    assert grid.shape == (8, 8 + 1 + 8, 3)
    # Trained on raw pixel values: the outputs are pixel values already.
    expected = np.rint(np.clip(outputs[1], 0, 255)).astype(np.uint8).transpose(1, 2, 0)
    np.testing.assert_array_equal(grid[:, 9:], expected)


def test_anomaly_heat_map_colours_each_pixels_error(client: TestClient) -> None:
    tiles = [_pixels(DIGITS[20]), np.tile(np.array([0, 255], np.uint8), (8, 4))]  # digit, stripes
    files = [("f", (f"{i}.png", _encode(t), "image/png")) for i, t in enumerate(tiles)]
    answer = client.post("/anomaly-score", files=files, headers={"accept": "image/png"})
    assert answer.status_code == 200, answer.text
    numbers = _json_twin(
        client, "/anomaly-score", _digits_units(np.stack(tiles))[:, None], per_feature=True
    ).json()
    headers = answer.headers
    assert [float(s) for s in headers["x-scores"].split(",")] == numbers["scores"]
    assert headers["x-is-anomaly"] == ",".join(str(v).lower() for v in numbers["is_anomaly"])
    assert float(headers["x-threshold"]) == numbers["threshold"]
    assert headers["x-score-type"] == "recon_complexity"  # an image model's default
    grid = _decode(answer.content)
    assert grid.shape == (8, 8 + 1 + 8, 3)
    # Squared errors in model units (scale 16) -> RMS error as a share of the 0..16 range.
    level = np.sqrt(np.asarray(numbers["feature_errors"])[:, 0])
    reference = matplotlib.colormaps["viridis"](level)[..., :3] * 255
    for index, cell in enumerate(_cells(grid, 1, 2, 8, 1)):
        assert np.abs(cell - reference[index]).max() <= 6
    assert level[1].mean() > level[0].mean()  # the stripes are the anomaly


def test_heat_map_of_a_colour_model_has_one_colour_per_pixel(client: TestClient) -> None:
    answer = _post(
        client,
        "/models/folder-rgb/anomaly-score",
        _encode(_rgb(DIGITS[30])),
        "image/png",
        accept="image/png",
    )
    assert answer.status_code == 200, answer.text
    assert _decode(answer.content).shape == (8, 8, 3)


def test_viridis_anchors_follow_matplotlib() -> None:
    level = np.linspace(0.0, 1.0, 1001)
    reference = matplotlib.colormaps["viridis"](level)[:, :3] * 255
    assert np.abs(images.viridis(level).astype(np.float64) - reference).max() <= 6
