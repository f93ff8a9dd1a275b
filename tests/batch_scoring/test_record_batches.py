"""What an engine's worker runs on one Arrow batch: the same rows back, in order, scored as the
local path scores them, null where a row is bad and the reason beside it."""

from __future__ import annotations

import io

import numpy as np
import pyarrow as pa
from PIL import Image
from sklearn.datasets import load_digits

from batch_scoring.record_batches import ImageLimits, RecordBatchScorer
from batch_scoring.scorer import ScoreOptions
from bundle.image_decoding import image_item, image_spec
from bundle.runtime import OnnxBundle
from tests.bundles import COMMITTED_BUNDLE

OPTIONS = ScoreOptions(score_type=None, per_feature=False, only_flagged=False)


def test_a_table_batch_comes_back_whole_with_bad_rows_null_and_named() -> None:
    bundle = OnnxBundle(COMMITTED_BUNDLE)
    x = load_digits().data[:6].astype(np.float32)
    columns: dict[str, pa.Array] = {"id": pa.array([10, 11, 12, 13, 14, 15])}
    for j in range(64):
        columns[f"p{j}"] = pa.array(x[:, j].astype(str).tolist())  # text, as a CSV gives
    text = columns["p7"].to_pylist()
    text[1], text[4] = "oops", None
    columns["p7"] = pa.array(text)
    batch = pa.RecordBatch.from_pydict(columns)
    names = [f"p{j}" for j in range(64)]
    scorer = RecordBatchScorer(bundle, OPTIONS, 64 << 20, ["id"], names)
    out = scorer.score(batch)
    assert out.schema.names == ["id", "score", "is_anomaly", "tail_probability", "bad_reason"]
    assert out.column("id").to_pylist() == [10, 11, 12, 13, 14, 15]
    good = [0, 2, 3, 5]
    expected = bundle.path_scores(bundle.run_mean_path(x[good]), "recon_complexity")
    scores = out.column("score").to_pylist()
    assert [scores[i] for i in good] == expected.tolist()  # every bit
    assert scores[1] is None
    assert scores[4] is None
    assert out.column("bad_reason").to_pylist() == [
        None,
        "column 'p7': not a number 'oops'",
        None,
        None,
        "column 'p7': empty",
        None,
    ]


def test_an_image_batch_names_files_that_were_too_large_or_do_not_decode() -> None:
    bundle = OnnxBundle(COMMITTED_BUNDLE)
    spec = image_spec(bundle.manifest, bundle.preprocessing)
    png = io.BytesIO()
    pixels = np.round(load_digits().images[0] * 255 / 16).astype(np.uint8)
    Image.fromarray(pixels, mode="L").save(png, format="PNG")
    batch = pa.RecordBatch.from_pydict(
        {
            "path": ["a.png", "big.png", "broken.png"],
            "length": [len(png.getvalue()), 5_000_000, 9],
            "content": pa.array([png.getvalue(), None, b"not a png"], pa.binary()),
        }
    )
    limits = ImageLimits(spec, max_pixels=1 << 20, max_file_bytes=1 << 20)
    scorer = RecordBatchScorer(bundle, OPTIONS, 64 << 20, ["path"], None, limits)
    out = scorer.score(batch)
    scores = out.column("score").to_pylist()
    with Image.open(io.BytesIO(png.getvalue())) as image:
        item = image_item(image, spec)  # the service's image codec decodes with this
    shape = (1, *bundle.manifest.input.shape)
    expected = bundle.path_scores(bundle.run_mean_path(item.reshape(shape)), "recon_complexity")
    assert scores[0] == expected[0]
    reasons = out.column("bad_reason").to_pylist()
    assert reasons[0] is None
    assert (
        reasons[1]
        == "big.png: 5000000 bytes, above the 1048576 a file may have (--memory-mb raises it)"
    )
    assert reasons[2].startswith("broken.png: ")
    assert scores[1] is None
    assert scores[2] is None
