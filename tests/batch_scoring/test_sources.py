"""The inputs vae-score reads, in chunks: every row numbered as in the file, bad rows named
with why, chunks of fixed spans (so a rerun finds the same ones) and none read twice."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from batch_scoring.chunks import Chunk, ScoreJobError
from batch_scoring.sources import ImageFolderSource, open_source
from bundle.manifest import InputSpec

TABLE = InputSpec(shape=[3], feature_count=3, feature_names=["a", "b", "c"])
UNNAMED = InputSpec(shape=[3], feature_count=3)
IMAGE = InputSpec(shape=[1, 2, 2], image_shape=[1, 2, 2], feature_count=4)


def rows_of(chunks: list[Chunk]) -> tuple[list[int], list[float], dict[int, str]]:
    ids = [int(i) for chunk in chunks for i in chunk.ids]
    first = [float(item.flat[0]) for chunk in chunks for item in chunk.x]
    bad = {row.row: row.reason for chunk in chunks for row in chunk.bad}
    return ids, first, bad


def test_csv_rows_keep_their_numbers_and_bad_ones_say_why(tmp_path: Path) -> None:
    lines = ["id,a,b,c"] + [f"r{i},{i},{2 * i},{3 * i}" for i in range(20)]
    lines[1 + 4] = "r4,4,8"  # a field short
    lines[1 + 7] = "r7,7,x,21"
    lines[1 + 9] = "r9,9,,27"
    lines[1 + 11] = "r11,11,nan,33"
    lines[1 + 13] = "r13,13,1e39,39"
    lines[1 + 16] = "r16,16,2,3,4"  # a field too many
    path = tmp_path / "rows.csv"
    path.write_text("\n".join(lines) + "\n")
    source = open_source(path, TABLE, None)
    assert source.total_rows == 20
    chunks = list(source.chunks(6, set()))
    assert [(c.index, c.first_row, c.rows_spanned) for c in chunks] == [
        (0, 0, 6), (1, 6, 6), (2, 12, 6), (3, 18, 2)
    ]  # fmt: skip
    ids, first, bad = rows_of(chunks)
    assert ids == [r for r in range(20) if r not in (4, 7, 9, 11, 13, 16)]
    assert first == [float(r) for r in ids]  # the id column is not a feature: picked by name
    assert bad == {
        4: "3 fields where the file has 4",
        7: "column 'b': not a number 'x'",
        9: "column 'b': empty",
        11: "column 'b': not a number 'nan'",
        13: "column 'b': beyond float32",
        16: "5 fields where the file has 4",
    }
    # A rerun that finished chunks 0 and 2 reads on and yields only the others.
    again = list(source.chunks(6, {0, 2}))
    assert [c.index for c in again] == [1, 3]
    assert rows_of(again)[0] == [6, 8, 10, 18, 19]


def test_csv_without_a_header_needs_the_models_width(tmp_path: Path) -> None:
    plain = tmp_path / "plain.csv"
    plain.write_text("1,2,3\n4,5,6\n")
    chunks = list(open_source(plain, UNNAMED, None).chunks(10, set()))
    assert chunks[0].x.tolist() == [[1, 2, 3], [4, 5, 6]]
    wide = tmp_path / "wide.csv"
    wide.write_text("1,2,3,4\n")
    with pytest.raises(ScoreJobError, match="4 columns; the model takes 3"):
        open_source(wide, UNNAMED, None)
    chosen = list(open_source(wide, UNNAMED, ["3", "1", "0"]).chunks(10, set()))
    assert chosen[0].x.tolist() == [[4, 2, 1]]  # --columns: indexes, in the model's order
    with pytest.raises(ScoreJobError, match="no column 'q'"):
        open_source(wide, UNNAMED, ["q", "1", "0"])
    empty = tmp_path / "empty.csv"
    empty.write_text("")
    with pytest.raises(ScoreJobError, match="is empty"):
        open_source(empty, UNNAMED, None)


def test_a_bad_line_at_a_block_boundary_is_numbered_right(tmp_path: Path) -> None:
    """Arrow parses 4 MiB blocks: rows far apart, on either side of block edges, keep their
    numbers, and the skipped lines are counted where they are."""
    rows = 300_000
    values = np.arange(rows * 3, dtype=np.int64).reshape(rows, 3)
    text = "\n".join(",".join(map(str, row)) for row in values.tolist()).split("\n")
    for broken in (1, 150_001, 299_998):
        text[broken] = "1,2"
    path = tmp_path / "long.csv"
    path.write_text("\n".join(text) + "\n")
    chunks = list(open_source(path, UNNAMED, None).chunks(70_000, set()))
    ids, first, bad = rows_of(chunks)
    assert sorted(bad) == [1, 150_001, 299_998]
    expected = np.setdiff1d(np.arange(rows), [1, 150_001, 299_998])
    np.testing.assert_array_equal(ids, expected)
    np.testing.assert_array_equal(first, values[expected, 0])
    assert sum(c.rows_spanned for c in chunks) == rows


def test_parquet_nulls_and_text_columns(tmp_path: Path) -> None:
    table = pa.table(
        {
            "c": pa.array([3.0, 6.0, None, 12.0]),
            "a": pa.array([1, 2, 3, 4]),
            "b": pa.array(["2", "4", "6", "oops"]),
            "label": pa.array(["x", "y", "z", "w"]),
        }
    )
    path = tmp_path / "rows.parquet"
    pq.write_table(table, path)
    chunks = list(open_source(path, TABLE, None).chunks(3, set()))
    ids, _, bad = rows_of(chunks)
    assert ids == [0, 1]
    assert chunks[0].x.tolist() == [[1, 2, 3], [2, 4, 6]]  # a, b, c: the model's order
    assert bad == {2: "column 'c': empty", 3: "column 'b': not a number 'oops'"}
    decimals = tmp_path / "decimals.parquet"  # a warehouse's NUMERIC(9, 3) columns are numbers
    money = pa.array([1, 2], pa.decimal128(9, 3)).cast(pa.decimal128(9, 3))
    pq.write_table(
        pa.table({"a": money, "b": [2.5, 4.0], "c": pa.array([3, None], pa.int32())}), decimals
    )
    chunks = list(open_source(decimals, TABLE, None).chunks(3, set()))
    assert chunks[0].x.tolist() == [[1.0, 2.5, 3.0]]
    assert chunks[0].bad[0].reason == "column 'c': empty"
    binary = tmp_path / "binary.parquet"
    pq.write_table(pa.table({"a": [1.0], "b": [b"x"], "c": [1.0]}), binary)
    with pytest.raises(ScoreJobError, match="holds binary, not numbers"):
        open_source(binary, TABLE, None)


def test_npy_layouts_and_values(tmp_path: Path) -> None:
    images = np.arange(5 * 4, dtype=np.float64).reshape(5, 2, 2)
    images[3, 1, 0] = np.inf
    path = tmp_path / "images.npy"
    np.save(path, images)
    chunks = list(open_source(path, IMAGE, None).chunks(2, set()))
    ids, _, bad = rows_of(chunks)
    assert ids == [0, 1, 2, 4]
    assert bad == {3: "feature 2: not finite (inf)"}
    assert chunks[0].x.dtype == np.float32
    np.save(path, np.zeros((5, 3, 3)))
    with pytest.raises(ScoreJobError, match=r"items of shape \(3, 3\)"):
        open_source(path, IMAGE, None)
    np.save(path, np.array(["a", "b"]))
    with pytest.raises(ScoreJobError, match="expected numbers"):
        open_source(path, IMAGE, None)
    path.write_bytes(b"not an npy")
    with pytest.raises(ScoreJobError, match=r"not a readable \.npy"):
        open_source(path, IMAGE, None)


def test_unknown_inputs_are_refused_by_name(tmp_path: Path) -> None:
    with pytest.raises(ScoreJobError, match="no such file"):
        open_source(tmp_path / "missing.csv", TABLE, None)
    other = tmp_path / "rows.xlsx"
    other.write_text("x")
    with pytest.raises(ScoreJobError, match=r"unknown input type \.xlsx"):
        open_source(other, TABLE, None)


def test_a_file_that_breaks_on_the_way_is_the_jobs_error_not_arrows(tmp_path: Path) -> None:
    """Text that is not UTF-8, a Parquet file cut short, a .npy shorter than its header: a
    ScoreJobError naming the file (the CLI's status 2), never a traceback."""
    binary = tmp_path / "binary.csv"
    binary.write_bytes(b"1,2,3\n4,\xff\xfe,6\n")
    with pytest.raises(ScoreJobError, match=r"cannot be read on.*invalid UTF8"):
        list(open_source(binary, UNNAMED, None).chunks(10, set()))
    table = pa.table({"a": np.arange(100_000.0), "b": np.ones(100_000), "c": np.ones(100_000)})
    whole = tmp_path / "whole.parquet"
    pq.write_table(table, whole, row_group_size=10_000)
    cut = tmp_path / "cut.parquet"
    data = whole.read_bytes()
    cut.write_bytes(data[: len(data) // 2] + data[-(8 + 2048) :])  # footer kept, pages gone
    with pytest.raises(ScoreJobError, match=r"cut\.parquet"):
        list(open_source(cut, TABLE, None).chunks(50_000, set()))
    short = tmp_path / "short.npy"
    np.save(short, np.zeros((100, 3), np.float32))
    short.write_bytes(short.read_bytes()[:-40])
    with pytest.raises(ScoreJobError, match="shorter than its header says"):
        open_source(short, UNNAMED, None)


def test_an_image_too_large_for_the_memory_setting_is_a_bad_row(tmp_path: Path) -> None:
    from PIL import Image

    from bundle.image_decoding import ImageSpec

    spec = ImageSpec("m", 1, 2, 2, 0.0, 255.0, True, np.ones(1, np.float32))
    Image.new("L", (40, 40), 200).save(tmp_path / "small.png")
    Image.new("L", (400, 400), 200).save(tmp_path / "large.png")
    source = ImageFolderSource(tmp_path, spec, memory_bytes=16 * 100 * 100)
    (chunk,) = source.chunks(10, set())
    assert chunk.paths == ["small.png"]
    assert chunk.x.shape == (1, 1, 2, 2)
    assert chunk.x.max() == 200.0  # pixel units, resized
    assert [row.row for row in chunk.bad] == [0]  # large.png sorts first
    assert "400x400 pixels, above the 10000" in chunk.bad[0].reason
