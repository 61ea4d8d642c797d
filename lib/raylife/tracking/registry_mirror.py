"""The MLflow Model Registry as a mirror of the raylife store.

Each store version is also an MLflow Model (a pyfunc around raylife's own Predictor: the verified
artifact files, a signature from the input schema, an input example), logged to the MLflow run
that trained it and registered under the model's name; the promoted version carries the alias
`champion`. The store stays the source of truth for serving: every method here is best-effort and
returns a problem line instead of raising, so a failing mirror never blocks or corrupts a
promotion; `raylife models sync` brings the mirror back in line.

The other way round, `RegistryModel` loads a mirrored version named by `models:/<name>@<alias>` or
`models:/<name>/<version>` back into a Predictor (`raylife predict --model-uri`, a Serve app's
`model_uri`): the pyfunc's own loading step (`predictor_from_files`), without unpickling
anything from the registry, so weights still load with `weights_only=True` and their checksum is
verified. Imports mlflow at import: only the modules that need it import this one, lazily.
"""

from __future__ import annotations

import dataclasses
import logging
import re
import tempfile
import warnings
from pathlib import Path
from typing import TYPE_CHECKING, Any

import mlflow.pyfunc
import numpy as np
import pandas as pd
from mlflow.pyfunc.model import PythonModel

from raylife.config import TrackingConfig
from raylife.errors import ArtifactError, RaylifeError
from raylife.lifecycle.artifact import META_FILE, WEIGHTS_FILE, Artifact
from raylife.lifecycle.store import ModelStore
from raylife.tracking import runs as tracking

if TYPE_CHECKING:
    from raylife.inference.predict import Predictor

CHAMPION = "champion"
"""The alias of the promoted version."""
VERSION_TAG = "raylife.version"
"""The store version an MLflow model version mirrors."""


class RaylifeModel(PythonModel):
    """pyfunc flavor of a raylife artifact: rows in (a DataFrame of the schema's features, or an
    array of images), one label (classification) or value (regression) per row out."""

    # MLflow wraps a subclass's predict to validate inputs by its type hints, and without hints
    # it warns at class definition (in every run that trains). There is nothing to validate by:
    # the logged signature is the schema's, and the Predictor checks every row itself.
    _skip_type_hint_validation = True

    def load_context(self, context: Any) -> None:
        self.predictor = predictor_from_files(
            Path(context.artifacts["meta"]), Path(context.artifacts["weights"])
        )

    # No type hints: MLflow would read them as the signature; the logged one is the schema's.
    def predict(self, context, model_input, params=None):
        schema = self.predictor.artifact.schema
        if isinstance(model_input, pd.DataFrame):
            answers = self.predictor.predict_rows(model_input.to_dict(orient="records"))
        else:
            array = np.asarray(model_input, dtype=np.float32).reshape(-1, *schema.shape)
            answers = self.predictor.predict_array(array)
        key = "label" if self.predictor.task.is_classification else "value"
        return pd.DataFrame({key: [answer[key] for answer in answers]})


def predictor_from_files(meta: Path, weights: Path, device: str = "cpu") -> Predictor:
    """The Predictor of an MLflow model's artifact files (checksum verified, weights_only)."""
    # lazy: imports torch, needed only on this path
    from raylife.inference.predict import Predictor

    artifact = Artifact.from_files(meta.read_bytes(), weights.read_bytes(), where="MLflow model")
    return Predictor(artifact, str(artifact.run.get("store_version", "")), device)


def signature_and_example(artifact: Artifact) -> tuple[Any, Any]:
    """The model signature from the artifact's input schema, and its stored raw example."""
    from mlflow.models import ModelSignature
    from mlflow.types import ColSpec, Schema, TensorSpec

    schema = artifact.schema
    classification = artifact.label_names is not None
    outputs = Schema(
        [ColSpec("string" if classification else "double", "label" if classification else "value")]
    )
    if schema.is_image:
        inputs = Schema([TensorSpec(np.dtype("float32"), (-1, *schema.shape))])
        example: Any = np.asarray(schema.example, dtype=np.float32).reshape(1, *schema.shape)
    else:
        inputs = Schema([ColSpec("double", name) for name in schema.feature_names])
        example = pd.DataFrame([schema.example], columns=schema.feature_names)
    return ModelSignature(inputs=inputs, outputs=outputs), example


class Mirror:
    """Store versions -> MLflow model versions of the same name; the pointer -> `champion`."""

    def __init__(self, config: TrackingConfig) -> None:
        self.config = config

    def add_version(
        self, store: ModelStore, model: str, version: str, artifact: Artifact | None = None
    ) -> str:
        """Log and register one store version (nothing when it is already); "" or a problem."""
        try:
            self._model_version(store, model, version, artifact)
        except Exception as exc:
            return self._problem(model, f"version {version}", exc)
        return ""

    def set_champion(self, store: ModelStore, model: str, version: str | None) -> str:
        """Point `champion` at the mirror of `version` (registered first if needed); None
        removes the alias. "" or a problem line."""
        try:
            mlflow = tracking.client(self.config.uri)
            if version is None:
                if self._registered(mlflow, model) and CHAMPION in _aliases(mlflow, model):
                    mlflow.delete_registered_model_alias(model, CHAMPION)
                return ""
            mirrored = self._model_version(store, model, version, None)
            mlflow.set_registered_model_alias(model, CHAMPION, mirrored)
        except Exception as exc:
            return self._problem(model, f"champion {version}", exc)
        return ""

    def sync(self, store: ModelStore, model: str) -> tuple[int, list[str]]:
        """Every store version mirrored and the alias on the promoted one: (versions, problems)."""
        versions = store.versions(model)
        problems = [p for v in versions if (p := self.add_version(store, model, v))]
        pointer = store.pointer(model)
        problem = self.set_champion(store, model, pointer.version if pointer else None)
        return len(versions), [*problems, *([problem] if problem else [])]

    def mirrored(self, model: str) -> dict[str, str]:
        """store version -> MLflow model version number, of what is mirrored now."""
        mlflow = tracking.client(self.config.uri)
        if not self._registered(mlflow, model):
            return {}
        return {
            mv.tags[VERSION_TAG]: str(mv.version)
            for mv in mlflow.search_model_versions(f"name='{model}'")
            if VERSION_TAG in mv.tags
        }

    def _model_version(
        self, store: ModelStore, model: str, version: str, artifact: Artifact | None
    ) -> str:
        existing = self.mirrored(model).get(version)
        if existing is not None:
            return existing
        if artifact is None:
            version, artifact = store.load(model, version)
        mlflow = tracking.client(self.config.uri)
        run_id = self._run_of(mlflow, model, version, artifact)
        path = f"model-{version}"
        with tempfile.TemporaryDirectory() as folder:
            mlflow_model = save_pyfunc(artifact, version, Path(folder))
            mlflow.log_artifacts(run_id, str(mlflow_model), path)
        if not self._registered(mlflow, model):
            mlflow.create_registered_model(model, description=f"raylife model {model}")
        created = mlflow.create_model_version(
            model,
            source=f"runs:/{run_id}/{path}",
            run_id=run_id,
            tags={VERSION_TAG: version, "raylife.store": store.uri},
        )
        return str(created.version)

    def _run_of(self, mlflow: Any, model: str, version: str, artifact: Artifact) -> str:
        """The run that trained the version (by its Ray run name), or a run of its own."""
        experiment = tracking.ensure_experiment(mlflow, model, self.config.artifact_location)
        trained = artifact.run.get("run_name")
        run = tracking.find_run(mlflow, experiment, str(trained)) if trained else None
        if run is None:
            run, _ = tracking.find_or_create_run(
                mlflow, experiment, f"store-{model}-{version}", {tracking.KIND_TAG: "store"}
            )
            mlflow.set_terminated(run.info.run_id, "FINISHED")
        return str(run.info.run_id)

    @staticmethod
    def _registered(mlflow: Any, model: str) -> bool:
        return bool(mlflow.search_registered_models(f"name='{model}'"))

    def _problem(self, model: str, what: str, exc: BaseException) -> str:
        return (
            f"MLflow registry at {self.config.uri} not updated for {model} {what} "
            f"({tracking.error_text(exc)}); re-sync with: raylife models sync {model}"
        )


def save_pyfunc(artifact: Artifact, version: str, folder: Path) -> Path:
    """The MLflow Model folder of an artifact (pyfunc, signature, input example)."""
    artifact = dataclasses.replace(artifact, run={**artifact.run, "store_version": version})
    source = folder / "source"
    source.mkdir()
    files = artifact.to_files()
    for name, payload in files.items():
        (source / name).write_bytes(payload)
    target = folder / "model"
    quiet = _WithoutMessage("Passing a Python object as `python_model`")
    pyfunc_log = logging.getLogger("mlflow.pyfunc")
    pyfunc_log.addFilter(quiet)
    try:
        with warnings.catch_warnings():
            # A pandas deprecation inside MLflow: noise in a training run's output.
            warnings.filterwarnings("ignore", message="Operation with range is deprecated")
            _save(artifact, source, target)
    finally:
        pyfunc_log.removeFilter(quiet)
    return target


class _WithoutMessage(logging.Filter):
    """Drops log records that start with `prefix`. Here: MLflow's advice, logged at WARNING on
    every save, to log models from code instead of a Python object. Our object pickles by
    reference (raylife.tracking.registry_mirror.RaylifeModel, importable wherever raylife is installed, a
    pip requirement of the model) and holds no state; its weights load with weights_only."""

    def __init__(self, prefix: str) -> None:
        super().__init__()
        self.prefix = prefix

    def filter(self, record: logging.LogRecord) -> bool:
        return not str(record.msg).startswith(self.prefix)


def _save(artifact: Artifact, source: Path, target: Path) -> None:
    import torch

    signature, example = signature_and_example(artifact)
    mlflow.pyfunc.save_model(
        str(target),
        python_model=RaylifeModel(),
        artifacts={"meta": str(source / META_FILE), "weights": str(source / WEIGHTS_FILE)},
        signature=signature,
        input_example=example,
        # Given, not inferred: inference loads the model in a subprocess (seconds).
        pip_requirements=[f"torch=={torch.__version__.split('+')[0]}", "raylife"],
    )


def _aliases(mlflow: Any, model: str) -> dict[str, str]:
    return dict(mlflow.get_registered_model(model).aliases or {})


# --------------------------------------------------------------------------------------------------
# Loading a registered version: models:/<name>@<alias> | models:/<name>/<version>

MODEL_URI = re.compile(r"models:/(?P<name>[\w.-]+)(?:@(?P<alias>[\w-]+)|/(?P<version>\d+))")
NOT_FOUND = ("RESOURCE_DOES_NOT_EXIST", "INVALID_PARAMETER_VALUE", "NOT_FOUND")
"""MLflow's error codes for a model, version or alias it does not have (an unknown alias is an
invalid parameter to it)."""
MODEL_URI_FORMS = "models:/<name>@<alias> (e.g. models:/iris@champion) or models:/<name>/<version>"


@dataclasses.dataclass(frozen=True)
class Registered:
    """One MLflow model version that mirrors a store version."""

    name: str
    mlflow_version: str
    store_version: str
    source: str


class RegistryModel:
    """A raylife model in an MLflow registry, named by a models:/ URI: which version it names now
    (`resolve`, again on every promotion notice: an alias moves) and its Predictor (`load`)."""

    def __init__(self, model_uri: str, tracking_uri: str) -> None:
        found = MODEL_URI.fullmatch(model_uri.strip())
        if found is None:
            raise RaylifeError(f"model URI {model_uri!r} is not {MODEL_URI_FORMS}")
        self.uri, self.tracking_uri = model_uri.strip(), tracking_uri
        self.name, self.alias, self.version = found["name"], found["alias"], found["version"]
        if tracking_uri.startswith("sqlite:///"):
            database = Path(tracking_uri.removeprefix("sqlite:///"))
            if not database.is_file():
                raise RaylifeError(
                    f"no MLflow store at {database} to load {self.uri} from; mirror the store into "
                    f"it (raylife models sync {self.name}) or pass --tracking-uri of a registry"
                )

    def resolve(self) -> Registered:
        """The version the URI names now; RaylifeError naming the fix when there is none."""
        from mlflow.exceptions import MlflowException

        try:
            mlflow = tracking.client(self.tracking_uri)
            if self.alias is not None:
                found = mlflow.get_model_version_by_alias(self.name, self.alias)
            else:
                found = mlflow.get_model_version(self.name, str(self.version))
        except MlflowException as exc:
            if exc.error_code not in NOT_FOUND:
                raise self._unreachable(exc) from exc
            raise ArtifactError(
                f"{self.uri}: not in the MLflow registry at {self.tracking_uri} "
                f"({tracking.error_text(exc)}); mirror the store into it (raylife models sync "
                f"{self.name}) or check the name and alias"
            ) from None
        except Exception as exc:
            raise self._unreachable(exc) from exc
        store_version = (found.tags or {}).get(VERSION_TAG)
        if not store_version:
            raise ArtifactError(
                f"{self.uri} (MLflow version {found.version}) is not a raylife model (no "
                f"{VERSION_TAG} tag); register raylife versions with: raylife models sync {self.name}"
            )
        return Registered(self.name, str(found.version), store_version, str(found.source))

    def load(self, registered: Registered, device: str = "cpu") -> Predictor:
        """Download the MLflow model of `registered` and build its Predictor (no unpickling)."""
        import mlflow.artifacts
        from mlflow.models import Model

        with tempfile.TemporaryDirectory() as folder:
            try:
                local = mlflow.artifacts.download_artifacts(
                    artifact_uri=registered.source,
                    dst_path=folder,
                    tracking_uri=self.tracking_uri,
                )
            except Exception as exc:
                raise self._unreachable(exc) from exc
            model = Path(local)
            flavor = Model.load(str(model / "MLmodel")).flavors.get("python_function", {})
            files = {k: (v or {}).get("path") for k, v in (flavor.get("artifacts") or {}).items()}
            meta, weights = files.get("meta"), files.get("weights")
            if not (meta and weights):
                raise ArtifactError(
                    f"{self.uri} (MLflow version {registered.mlflow_version}) has no raylife "
                    "artifact files; register raylife versions with: raylife models sync "
                    f"{self.name}"
                )
            return predictor_from_files(model / meta, model / weights, device)

    def _unreachable(self, exc: BaseException) -> RaylifeError:
        return RaylifeError(
            f"cannot read {self.uri} from the MLflow registry at {self.tracking_uri} "
            f"({tracking.error_text(exc)}); start it, or pass --tracking-uri of a running one"
        )
