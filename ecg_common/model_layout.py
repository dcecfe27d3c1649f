"""The serving export's layout and contract, in one place: what the trainer writes under
`MODEL/serving/` and what its readers (the trainer's predict, the pipeline's nightly scoring) look up.

    MODEL/serving/<version>/                        one SavedModel per training run, versions 1, 2, ...
                                                    in the layout TF Serving loads
    MODEL/serving/<version>/assets.extra/transformed_metadata/   the schema of the examples it was trained on
    MODEL/serving/<version>/assets.extra/transform.json          the lead statistics of that transform

No TensorFlow here: the names, the version lookup and the transform record are plain files.
"""
from __future__ import annotations

import json
import os

from ecg_common.rejections import ConfigurationError
from ecg_common.transform_fingerprint import LEAD_STATISTICS_KEY

SERVING_DIR = "serving"
EXTRA_ASSETS_DIR = "assets.extra"
"""TF Serving's folder for files that travel with a SavedModel without being loaded by TensorFlow."""
TRANSFORMED_METADATA_DIR = "transformed_metadata"
TRANSFORM_INFO_FILE = "transform.json"
SAVED_MODEL_FILE = "saved_model.pb"

SERVING_SIGNATURE = "serving_default"
EXAMPLES_SIGNATURE = "serving_examples"
TRANSFORMED_SIGNATURE = "transformed"
"""Takes `ecg` already normalized by the pipeline, as in the TFRecords: what predict and nightly scoring use."""
EXAMPLES_KEY = "examples"
PROBABILITY_KEY = "probability"
PREDICTED_LABEL_KEY = "label"
PROBABILITIES_KEY = "probabilities"
"""Multi-label models: float32 [batch, K], one probability per class of `assets.extra/classes.txt`."""
LABELS_OUTPUT_KEY = "labels"
"""Multi-label models: int64 [batch, K], 1 where the class's probability >= its own threshold."""


def serving_root(model_dir: str) -> str:
    return os.path.join(model_dir, SERVING_DIR)


def export_versions(model_dir: str) -> list[int]:
    """The versions under MODEL/serving/, ascending: integer-named folders holding a SavedModel.

    TF Serving's rule: only such folders are versions; anything else there (a staging folder) is ignored.
    """
    root = serving_root(model_dir)
    if not os.path.isdir(root):
        return []
    return sorted(int(name) for name in os.listdir(root)
                  if name.isdigit() and os.path.isfile(os.path.join(root, name, SAVED_MODEL_FILE)))


def version_dir(model_dir: str, version: int) -> str:
    return os.path.join(serving_root(model_dir), str(version))


def resolve_version(model_dir: str, version: int | None = None) -> tuple[int, str]:
    """(version, its folder): `version`, or the newest. A missing one is a configuration error."""
    versions = export_versions(model_dir)
    if not versions:
        if os.path.isfile(os.path.join(serving_root(model_dir), SAVED_MODEL_FILE)):
            raise ConfigurationError(f"{serving_root(model_dir)} holds an export of an older trainer (not "
                                     "versioned, no threshold inside): train again to export MODEL/serving/1/")
        raise ConfigurationError(f"no exported model in {serving_root(model_dir)} (run `python -m trainer` first)")
    if version is None:
        version = versions[-1]
    elif version not in versions:
        raise ConfigurationError(f"no version {version} in {serving_root(model_dir)}; versions: "
                                 f"{', '.join(map(str, versions))}")
    return version, version_dir(model_dir, version)


def resolve_export(model_dir: str, version: int | None = None) -> str:
    """The export to use: `version`, or the newest (see `resolve_version`)."""
    return resolve_version(model_dir, version)[1]


def transform_info(export_dir: str) -> dict:
    """What the export recorded about its transform (`transform.json`); empty when it recorded nothing."""
    path = os.path.join(export_dir, EXTRA_ASSETS_DIR, TRANSFORM_INFO_FILE)
    if not os.path.isfile(path):
        return {}
    with open(path, encoding="utf-8") as handle:
        return json.load(handle)


def export_lead_statistics(export_dir: str) -> dict | None:
    """The lead statistics of the transform the export's model was trained with (None: not recorded)."""
    statistics = transform_info(export_dir).get(LEAD_STATISTICS_KEY)
    return statistics if isinstance(statistics, dict) else None
