"""Several detectors behind one verdict: the repository's models and their calibrated ensemble.

Reads each model's ``metadata.json``, fits and stores the logistic combination per subset of
members (``<repository>/_ensemble/<N>/ensemble.json``) and combines scores, else takes the mean.
Needs numpy only (docs/design.md, "Several detectors behind one verdict").
"""

from __future__ import annotations

import functools
import itertools
import json
import logging
import math
import os
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from moderation import contract

logger = logging.getLogger(__name__)

ENSEMBLE_DIR = "_ensemble"
ENSEMBLE_FILENAME = "ensemble.json"
MAX_MEMBERS = 8  # 255 subsets; beyond that a subset falls back to the mean
L2 = 1e-2


@dataclass(frozen=True)
class ModelInfo:
    """One servable model of the repository, at its newest version."""

    name: str
    version: int
    size: int
    resize: str
    demo_weights: bool
    licence: str
    temperature: float
    pass_below: float
    flag_at: float


def _versions(folder: Path) -> list[int]:
    return sorted(
        int(p.name)
        for p in folder.iterdir()
        if p.is_dir() and p.name.isdigit() and (p / contract.ONNX_FILENAME).is_file()
    )


def model_info(repository: Path, name: str, version: int | None = None) -> ModelInfo:
    """Returns what the worker needs to know about a model version (newest when not given)."""
    folder = Path(repository) / name
    number = version if version is not None else _versions(folder)[-1]
    meta = _metadata(Path(repository), name, str(number))
    extra = meta.extra
    return ModelInfo(
        name=name,
        version=number,
        size=int(extra.get("input_size", contract.INPUT_SIZE)),
        resize=str(extra.get("resize", "bilinear")),
        demo_weights=is_demo(meta),
        licence=str(extra.get("licence", "")),
        temperature=meta.temperature,
        pass_below=meta.pass_below,
        flag_at=meta.flag_at,
    )


@functools.lru_cache(maxsize=128)
def _metadata(repository: Path, name: str, version: str) -> contract.ModelMetadata:
    return contract.ModelMetadata.read(repository / name / version)


def is_demo(meta: contract.ModelMetadata) -> bool:
    """Returns whether a version's metadata marks it as demo weights."""
    return bool(meta.extra.get("demo_weights", False))


def servable_models(repository: Path) -> list[str]:
    """Returns the names of the repository's models that have a config and an ONNX version."""
    root = Path(repository)
    if not root.is_dir():
        return []
    return [
        p.name
        for p in sorted(root.iterdir())
        if p.is_dir()
        and not p.name.startswith(("_", "."))
        and (p / "config.pbtxt").is_file()
        and _versions(p)
    ]


def repository_models(repository: Path) -> list[dict[str, Any]]:
    """Returns every servable model's newest version as plain dicts (CLI, dashboard)."""
    rows = []
    for name in servable_models(repository):
        try:
            rows.append(asdict(model_info(repository, name)))
        except (OSError, ValueError, TypeError) as exc:
            logger.warning("cannot read model %s's metadata: %s", name, exc)
    return rows


# -- the fitted combination -------------------------------------------------------------------


def sigmoid(x: float) -> float:
    """Returns 1 / (1 + e^-x) without overflow."""
    if x >= 0:
        return 1.0 / (1.0 + math.exp(-x))
    e = math.exp(x)
    return e / (1.0 + e)


def subset_key(names: list[str] | tuple[str, ...]) -> str:
    """Returns the key of a subset of members: sorted names joined by '+'."""
    return "+".join(sorted(names))


@dataclass(frozen=True)
class Ensemble:
    """A fitted ensemble version: a logistic combination per subset of its members."""

    version: int
    members: list[str]
    combinations: dict[str, dict[str, Any]]  # subset key -> {"weights": {name: w}, "bias": b}
    pass_below: float = 0.3
    flag_at: float = 0.8
    created_at: str = ""
    fitted_on: dict[str, Any] = field(default_factory=dict)
    metrics: dict[str, Any] = field(default_factory=dict)

    def to_json(self) -> str:
        """Returns the artefact as pretty JSON."""
        return json.dumps(asdict(self), indent=2, sort_keys=True) + "\n"

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> Ensemble:
        """Returns an ensemble from its JSON dict."""
        known = set(cls.__dataclass_fields__)
        return cls(**{k: v for k, v in data.items() if k in known})

    def full(self) -> dict[str, Any]:
        """Returns the combination of all members (the one the dashboard shows)."""
        return self.combinations[subset_key(self.members)]

    def combine(self, z: dict[str, float]) -> tuple[float, dict[str, float]] | None:
        """Returns (p_fake, weights used) for the answering members' calibrated logits.

        None when none of the answering models is a member.
        """
        present = [name for name in self.members if name in z]
        if not present:
            return None
        combination = self.combinations.get(subset_key(present))
        if combination is None:
            return None
        weights = combination["weights"]
        value = float(combination["bias"]) + sum(float(weights[n]) * z[n] for n in present)
        return sigmoid(value), {n: float(weights[n]) for n in present}


def ensemble_dir(repository: Path) -> Path:
    """Returns the folder of the ensemble's versions."""
    return Path(repository) / ENSEMBLE_DIR


def ensemble_versions(repository: Path) -> list[int]:
    """Returns the stored ensemble versions, oldest first."""
    folder = ensemble_dir(repository)
    if not folder.is_dir():
        return []
    return sorted(
        int(p.name)
        for p in folder.iterdir()
        if p.name.isdigit() and (p / ENSEMBLE_FILENAME).is_file()
    )


def latest_ensemble(repository: Path) -> Ensemble | None:
    """Returns the newest ensemble version (re-read when its file changes), or None."""
    versions = ensemble_versions(repository)
    if not versions:
        return None
    path = ensemble_dir(repository) / str(versions[-1]) / ENSEMBLE_FILENAME
    try:
        return _read(path, os.stat(path).st_mtime_ns)
    except (OSError, ValueError, TypeError, KeyError) as exc:
        # An unreadable artefact must not fail every item: the models are averaged meanwhile.
        logger.error("cannot read ensemble version %s (%s); averaging the models", path, exc)
        return None


@functools.lru_cache(maxsize=8)
def _read(path: Path, mtime_ns: int) -> Ensemble:
    del mtime_ns  # part of the cache key only
    return Ensemble.from_dict(json.loads(path.read_text()))


def write_ensemble(repository: Path, ensemble: Ensemble) -> Path:
    """Writes an ensemble version atomically (temporary file, then rename); returns its path."""
    folder = ensemble_dir(repository) / str(ensemble.version)
    folder.mkdir(parents=True, exist_ok=True)
    path = folder / ENSEMBLE_FILENAME
    tmp = folder / (ENSEMBLE_FILENAME + ".tmp")
    tmp.write_text(ensemble.to_json())
    tmp.replace(path)
    return path


def fit_logistic(x: np.ndarray, y: np.ndarray, *, l2: float = L2) -> tuple[np.ndarray, float]:
    """Returns (weights, bias) of an L2-regularised logistic regression (Newton / IRLS).

    ``x`` is [N, K] (calibrated logits), ``y`` is [N] in {0, 1}; the bias is not penalised.
    """
    n, k = x.shape
    design = np.hstack([x, np.ones((n, 1))])
    beta = np.zeros(k + 1)
    penalty = np.diag([l2] * k + [0.0]) * n
    for _ in range(100):
        p = 1.0 / (1.0 + np.exp(-np.clip(design @ beta, -30, 30)))
        gradient = design.T @ (p - y) + penalty @ beta
        hessian = (design * (p * (1 - p))[:, None]).T @ design + penalty + 1e-9 * np.eye(k + 1)
        step = np.linalg.solve(hessian, gradient)
        beta -= step
        if np.max(np.abs(step)) < 1e-8:
            break
    return beta[:k], float(beta[k])


def fit_combinations(z: dict[str, np.ndarray], labels: np.ndarray) -> dict[str, dict[str, Any]]:
    """Fits one logistic combination per non-empty subset of the models in ``z``."""
    names = sorted(z)
    if len(names) > MAX_MEMBERS:
        raise ValueError(f"at most {MAX_MEMBERS} models in one ensemble; got {len(names)}")
    combinations = {}
    for size in range(1, len(names) + 1):
        for subset in itertools.combinations(names, size):
            x = np.stack([z[n] for n in subset], axis=1)
            weights, bias = fit_logistic(x, labels.astype(np.float64))
            combinations[subset_key(subset)] = {
                "weights": {n: float(w) for n, w in zip(subset, weights, strict=True)},
                "bias": bias,
            }
    return combinations


def combined_p(combination: dict[str, Any], z: dict[str, np.ndarray]) -> np.ndarray:
    """Returns the combination's p_fake for arrays of calibrated logits."""
    value = float(combination["bias"]) + sum(
        float(w) * z[name] for name, w in combination["weights"].items()
    )
    return 1.0 / (1.0 + np.exp(-np.asarray(value)))


# -- one verdict from several answers ---------------------------------------------------------


@dataclass(frozen=True)
class ModelScore:
    """One model's calibrated score for an item, with what its version's metadata says."""

    name: str
    version: str
    p_fake: float
    pass_below: float
    flag_at: float
    demo_weights: bool


@dataclass(frozen=True)
class Combined:
    """The item's score from its models' scores, and how it was made."""

    p_fake: float
    combination: str  # "single" (one model), "fitted" (the ensemble artefact), "mean"
    weights: dict[str, float] | None
    ensemble_version: int | None
    pass_below: float
    flag_at: float
    demo_only: bool  # every model that contributed is marked as demo weights
    stale: bool = False  # a weighted model answered with another version than it was fitted on


def logit(p: float) -> float:
    """Returns log(p / (1 - p)), bounded for p at 0 or 1."""
    q = min(max(p, 1e-7), 1 - 1e-7)
    return math.log(q / (1 - q))


def combine_scores(scores: list[ModelScore], ensemble: Ensemble | None) -> Combined:
    """Returns the item's score: one model's own, the fitted combination of the ensemble's
    members among ``scores`` (with the ensemble's thresholds), else the mean of them all (with
    the first model's thresholds). ``scores`` is not empty; the primary model comes first."""
    first = scores[0]
    if len(scores) == 1:
        return Combined(
            first.p_fake, "single", None, None, first.pass_below, first.flag_at, first.demo_weights
        )
    combined = ensemble.combine({s.name: logit(s.p_fake) for s in scores}) if ensemble else None
    if combined is not None and ensemble is not None:
        p_fake, weights = combined
        contributing = [s for s in scores if weights.get(s.name)]
        fitted_versions = ensemble.fitted_on.get("model_versions") or {}
        stale = any(
            s.name in fitted_versions and str(fitted_versions[s.name]) != str(s.version)
            for s in scores
            if s.name in weights
        )
        return Combined(
            p_fake,
            "fitted",
            weights,
            ensemble.version,
            ensemble.pass_below,
            ensemble.flag_at,
            all(s.demo_weights for s in contributing or scores),
            stale,
        )
    mean = sum(s.p_fake for s in scores) / len(scores)
    return Combined(
        mean,
        "mean",
        None,
        None,
        first.pass_below,
        first.flag_at,
        all(s.demo_weights for s in scores),
    )
