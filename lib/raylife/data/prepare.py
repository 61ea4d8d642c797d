"""Prepare a model's data: the dispatcher above the embedded path (sources -> split -> preprocessing)
and the streaming path (raylife.data.streaming). Both produce the same contracts.PreparedData."""

from __future__ import annotations

from typing import TYPE_CHECKING

from raylife.data import profile, streaming
from raylife.data.contracts import (
    InputSchema,
    PreparedData,
    Split,
    fingerprint,
    fit_preprocessing,
    split,
)
from raylife.data.sources import load_raw

if TYPE_CHECKING:
    from raylife.catalog.specs import ModelSpec
    from raylife.config import DataConfig


def prepare(spec: ModelSpec, cfg: DataConfig) -> PreparedData:
    """Load, split, fit preprocessing on train, transform all splits: the data half of a run.
    Folders, globs and big files stream through Ray Data instead (raylife.data.streaming)."""
    cfg = spec.data_config(cfg)  # "embedded": the model's declared data
    if streaming.wants_streaming(cfg.source):
        return streaming.prepare_streaming(spec, cfg)
    raw = load_raw(spec, cfg)
    classification = spec.task != "regression"
    train, val, test = split(raw, cfg, stratify=classification)
    pre = fit_preprocessing(raw, train, regression=not classification)
    sample = profile.Sample.of(
        profile.monitored(train.X, raw.input_kind),
        train.y,
        profile.random_keys(len(train), cfg.seed),
    )
    reference = profile.profile_of(
        sample, profile.monitored_names(raw.input_kind, raw.feature_names), raw.label_names
    )

    def transformed(part: Split) -> Split:
        return Split(pre.transform(part.X), pre.transform_target(part.y))

    shape = list(raw.X.shape[1:])
    schema = InputSchema(
        kind=raw.input_kind,
        feature_names=raw.feature_names,
        shape=shape,
        example=[float(v) for v in train.X[0].reshape(-1)],
    )
    provenance = {
        "source": cfg.source,
        "origin": raw.origin,
        "rows": {"train": len(train), "val": len(val), "test": len(test)},
        "split_seed": cfg.seed,
        "sha256": fingerprint(raw.X, raw.y),
    }
    return PreparedData(
        transformed(train),
        transformed(val),
        transformed(test),
        test,
        pre,
        schema,
        raw.label_names,
        provenance,
        profile=reference,
    )
