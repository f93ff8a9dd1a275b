"""Small built-in datasets shipped inside scikit-learn, so demos and tests need no download."""

from __future__ import annotations

from collections.abc import Callable

import numpy as np

from training.data._arrays import RawData


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


BUILTINS: dict[str, Callable[[], RawData]] = {
    "digits": _digits,
    "breast-cancer": _breast_cancer,
}


def builtin_names() -> list[str]:
    return sorted(BUILTINS)


def load_builtin(name: str) -> RawData:
    return BUILTINS[name]()
