"""Scoring one submission: blob → preprocess → Triton → calibrated verdict, decision and outbox.

:func:`score_submission` is idempotent: verdict, status and outbox row are written in one
transaction guarded by the unique verdict. Refused media ends ``failed``; Triton outages raise
``InferenceUnavailable`` for the task to retry.
"""

from __future__ import annotations

import dataclasses
import enum
import functools
import logging
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
from sqlalchemy import Table, bindparam, cast, func, insert, literal_column, select, update
from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import Session, sessionmaker

from moderation.api_schema import EVENT_FAILED, EVENT_SCORED
from moderation.bank_models import BankPolicy, BankState, MediaHashRow
from moderation.banks import DEFAULT_POLICY, Policy
from moderation.blobs import BlobStore
from moderation.contract import INPUT_SIZE, ModelMetadata
from moderation.db import session_scope
from moderation.ensemble import ModelScore, combine_scores, is_demo, latest_ensemble
from moderation.explanation import explain, video_explain
from moderation.mediahash import MediaHash
from moderation.models import Status, Submission, Tenant, Verdict, new_id, utcnow
from moderation.outbox import OUTBOX, add_outbox, outbox_row
from moderation.policy import (
    REASON_DEMO_MODEL,
    REASON_MODEL,
    calibrate,
    decide,
    resolve_thresholds,
)
from moderation.preprocess import ImageLimits, MediaRejected, decode_upright, image_to_input
from moderation.provenance import ProvenanceLimits, read_provenance
from moderation.redact import public_detail
from moderation.settings import Settings
from moderation.signal_policy import decide_with_signals
from moderation.submissions import VIEW_COLUMNS, submission_view
from moderation.video import Frame, VideoLimits, aggregate, decode_video, is_video
from serving.client import InferenceResult
from worker import callbacks, leases
from worker.metrics import observe_since, stage
from worker.models import ModelAnswer, ModelSet, get_model_set

if TYPE_CHECKING:
    from moderation.bank_index import BankMatcher, Match
    from serving.client import TritonClient

logger = logging.getLogger(__name__)

SCORABLE = (Status.RECEIVED, Status.QUEUED, Status.SCORING)
_SUBMISSIONS: Table = Submission.__table__  # type: ignore[assignment]
_TENANTS: Table = Tenant.__table__  # type: ignore[assignment]
_VERDICTS: Table = Verdict.__table__  # type: ignore[assignment]
_POLICIES: Table = BankPolicy.__table__  # type: ignore[assignment]
_HASHES: Table = MediaHashRow.__table__  # type: ignore[assignment]


class Outcome(str, enum.Enum):
    """What one call did."""

    SCORED = "scored"
    FAILED = "failed"
    NOOP = "noop"  # already moved on (a redelivery or a lost race)
    NEEDS_FETCH = "needs_fetch"  # a media_url submission whose bytes are not stored yet


@dataclass(frozen=True)
class ScoreResult:
    """The outcome, the submission's status and the outbox row to deliver (if any)."""

    outcome: Outcome
    status: str | None = None
    delivery_id: str | None = None
    # The outbox row's first attempt, claimed by the finishing write (``claim_first_attempt``).
    attempt: callbacks.Attempt | None = None


@functools.lru_cache(maxsize=64)
def model_metadata(repository: Path, name: str, version: str) -> ModelMetadata:
    """Returns (cached) calibration metadata of the model version that answered."""
    return ModelMetadata.read(Path(repository) / name / version)


@dataclass(frozen=True)
class _Claimed:
    """A claimed submission: its blob, and its tenant's thresholds and policies at claim time."""

    blob_sha256: str
    tenant_pass_below: float | None
    tenant_flag_at: float | None
    tenant_provenance_policy: str | None = None
    tenant_id: str = ""
    policy: Policy = DEFAULT_POLICY
    bank_generation: int | None = None  # read by the claim: the matcher syncs only if it moved
    tenant_models: list[str] | None = None  # dfmod tenant set-models; None: DFMOD_MODELS
    submission: dict[str, Any] = dataclasses.field(default_factory=dict)  # VIEW_COLUMNS, claimed
    # The tenant's webhook secret, previous secret and its expiry (callbacks.first_attempt).
    signing: tuple[Any, Any, Any] = (None, None, None)


def _tenant_column(name: str) -> Any:
    return (
        select(_TENANTS.c[name])
        .where(_TENANTS.c.id == _SUBMISSIONS.c.tenant_id)
        .scalar_subquery()
        .label(f"tenant_{name}")
    )


def _policy_column(name: str) -> Any:
    return (
        select(_POLICIES.c[name])
        # Qualified by hand: inside RETURNING both sides would render as a bare "tenant_id".
        .where(literal_column("bank_policies.tenant_id") == literal_column("submissions.tenant_id"))
        .scalar_subquery()
        .label(f"policy_{name}")
    )


# One conditional UPDATE … RETURNING per claim (and per verdict): on SQLite the database's write
# lock is held for one statement, not for an ORM load, flush and the Python in between.
_CLAIM = (
    update(_SUBMISSIONS)
    .where(
        _SUBMISSIONS.c.id == bindparam("submission_id"),
        leases.claimable(Status.SCORING),
        _SUBMISSIONS.c.blob_sha256.is_not(None),
    )
    .values(
        status=Status.SCORING,
        attempts=_SUBMISSIONS.c.attempts + 1,
        updated_at=bindparam("now"),
        lease_owner=bindparam("owner"),
        lease_expires_at=bindparam("lease_until"),
    )
    .returning(
        # The view's columns too: the verdict's callback payload is built from them, so the
        # finishing write need not read the row back (the scorer holds the lease meanwhile).
        *(_SUBMISSIONS.c[name] for name in VIEW_COLUMNS),
        _SUBMISSIONS.c.attempts,
        _SUBMISSIONS.c.queued_at,
        _tenant_column("pass_below"),
        _tenant_column("flag_at"),
        _tenant_column("provenance_policy"),
        _tenant_column("models"),
        _tenant_column("webhook_secret"),
        _tenant_column("previous_webhook_secret"),
        _tenant_column("previous_secret_expires_at"),
        _SUBMISSIONS.c.tenant_id,
        _policy_column("on_fake"),
        _policy_column("on_real"),
        select(BankState.generation)
        .where(literal_column("bank_state.id") == 1)
        .scalar_subquery()
        .label("bank_generation"),
    )
)
_STATE = select(_SUBMISSIONS.c.status).where(_SUBMISSIONS.c.id == bindparam("submission_id"))
_LEASE = select(_SUBMISSIONS.c.status, _SUBMISSIONS.c.blob_sha256).where(
    _SUBMISSIONS.c.id == bindparam("submission_id")
)
_FINISH = (
    update(_SUBMISSIONS)
    # Parameter names no inserted table has as a column (see _finish_in_one).
    .where(_SUBMISSIONS.c.id == bindparam("finish_id"), _SUBMISSIONS.c.status.in_(SCORABLE))
    .values(
        status=bindparam("finish_status"),
        completed_at=bindparam("finish_at"),
        updated_at=bindparam("finish_at"),
        lease_owner=None,
        lease_expires_at=None,
    )
)


# The rows a scoring's finishing write inserts, in order, and their parameters' prefix there.
_FINISH_ROWS = ((_VERDICTS, "v_"), (_HASHES, "h_"), (OUTBOX, "o_"))


@functools.lru_cache(maxsize=16)
def _finish_in_one(
    verdict: tuple[str, ...], media_hash: tuple[str, ...], outbox: tuple[str, ...]
) -> Any:
    """Returns PostgreSQL's one statement for :data:`_FINISH` and the inserts of the verdict, the
    media hash and the outbox row (the columns each names; none: no row), made only if the update
    matched: ``WITH finished AS (UPDATE … RETURNING id), … INSERT … SELECT … FROM finished``,
    selecting how many rows the update matched. Parameters are the columns' names prefixed with
    ``v_``, ``h_`` and ``o_``; one statement and its own commit instead of six round trips."""
    finished = _FINISH.returning(_SUBMISSIONS.c.id).cte("finished")
    statement = select(func.count()).select_from(finished)
    for (table, prefix), names in zip(_FINISH_ROWS, (verdict, media_hash, outbox), strict=True):
        if not names:
            continue
        # Cast: a parameter in a SELECT list has no column to take its type from.
        values = [
            cast(bindparam(prefix + name, type_=table.c[name].type), table.c[name].type)
            for name in names
        ]
        rows = insert(table).from_select(
            list(names), select(*values).select_from(finished), include_defaults=False
        )
        statement = statement.add_cte(rows.cte(f"{table.name}_row"))
    return statement


def _claim(
    factory: sessionmaker[Session], submission_id: str, settings: Settings
) -> tuple[_Claimed | None, str | None]:
    """Moves a scorable submission with stored bytes to ``scoring`` (``attempts`` + 1) under
    this worker's lease; returns (what the scoring needs or None, status)."""
    now = utcnow()
    values = {
        "submission_id": submission_id,
        "now": now,
        "owner": leases.owner(),
        "lease_until": leases.expiry(settings, now),
    }
    # One write (the claim); the lookup after a miss only reads.
    with session_scope(factory, autocommit=True) as session:
        row = session.execute(_CLAIM, values).first()
        if row is None:
            found = session.execute(_LEASE, {"submission_id": submission_id}).first()
            if found is None:
                logger.warning("score: submission %s does not exist", submission_id)
                return None, None
            if found.blob_sha256 is None and found.status in SCORABLE:
                return None, Status.FETCHING  # a media_url whose bytes are not stored yet
            return None, found.status  # finished, or held by another live worker
    if row.attempts == 1:
        observe_since("queue", row.queued_at or row.created_at)
    policy = DEFAULT_POLICY
    if row.policy_on_fake is not None:
        policy = Policy(row.policy_on_fake, row.policy_on_real)
    claimed = _Claimed(
        row.blob_sha256,
        row.tenant_pass_below,
        row.tenant_flag_at,
        row.tenant_provenance_policy,
        row.tenant_id,
        policy,
        row.bank_generation or 0,
        _model_list(row.tenant_models),
        {name: row._mapping[name] for name in VIEW_COLUMNS},
        (
            row.tenant_webhook_secret,
            row.tenant_previous_webhook_secret,
            row.tenant_previous_secret_expires_at,
        ),
    )
    return claimed, Status.SCORING


def _model_list(value: Any) -> list[str] | None:
    """Returns a tenant's model list from its JSON column (a list; None or empty: the default)."""
    if isinstance(value, str):  # a JSON column read through a scalar subquery on some backends
        import json

        value = json.loads(value)
    return [str(v) for v in value] if value else None


def fail_submission(
    *, submission_id: str, session_factory: sessionmaker[Session], reason: str, detail: str
) -> ScoreResult:
    """Ends an unfinished submission ``failed`` with a reason (+ outbox row); no-op if finished."""
    try:
        with session_scope(session_factory) as session:
            sub = session.get(Submission, submission_id)
            if sub is None or sub.status in Status.FINAL or sub.status == Status.NEEDS_REVIEW:
                return ScoreResult(Outcome.NOOP, sub.status if sub else None)
            sub.status, sub.failure_reason = Status.FAILED, reason
            sub.lease_owner, sub.lease_expires_at = None, None
            sub.failure_detail, sub.completed_at = public_detail(detail), utcnow()
            session.flush()
            # Unfinished and never reviewed (reviews need needs_review): nothing to load.
            view = submission_view(sub)
            delivery_id = add_outbox(session, view=view, event_type=EVENT_FAILED)
    except IntegrityError:
        return ScoreResult(Outcome.NOOP)
    logger.info("submission %s failed: %s (%s)", submission_id, reason, detail)
    return ScoreResult(Outcome.FAILED, Status.FAILED, delivery_id)


def _video_batch(frames: list[Frame]) -> np.ndarray:
    """Returns one batch: every frame, then every face crop in frame order."""
    return np.stack([f.pixels for f in frames] + [c.pixels for f in frames for c in f.crops])


def _frame_entry(frame: Frame, full: float, crops: list[float]) -> tuple[float, dict[str, Any]]:
    """Returns the frame's score (max of the full frame and its face crops) and its record."""
    best = max(range(len(crops)), key=lambda i: crops[i], default=None)
    driver = "frame" if best is None or crops[best] <= full else f"face_{best}"
    score = full if driver == "frame" else crops[best]  # type: ignore[index]
    entry = {
        "timestamp_s": frame.timestamp,
        "p_fake": score,
        "scene_change": frame.scene_change,
        "frame_p_fake": full,
        "crops": [
            {"box": list(c.box), "p_fake": p} for c, p in zip(frame.crops, crops, strict=True)
        ],
        "driver": driver,
    }
    return score, entry


def _video_scores(
    frames: list[Frame], logits: np.ndarray, temperature: float
) -> tuple[float, int, dict[str, Any]]:
    """Returns (video p_fake, index of the top frame, the stored per-frame record)."""
    calibrated = [calibrate(float(x), temperature) for x in logits]
    scores, entries, offset = [], [], len(frames)
    for index, frame in enumerate(frames):
        crops = calibrated[offset : offset + len(frame.crops)]
        offset += len(frame.crops)
        score, entry = _frame_entry(frame, calibrated[index], crops)
        scores.append(score)
        entries.append(entry)
    p_fake, chosen = aggregate(scores)
    record = {
        "rule": "mean_top_k",
        "k": len(chosen),
        "frames": entries,
        "suspicious_timestamps_s": [frames[i].timestamp for i in chosen],
        "drivers": [entries[i]["driver"] for i in chosen],
    }
    return p_fake, chosen[0], record


def _explanation(
    result: InferenceResult, frames: list[Frame] | None, size: tuple[int, int] | None, top: int
) -> dict[str, Any] | None:
    """Returns the verdict's explanation from the served maps; None when the version has none."""
    if result.cams is None:
        return None
    try:
        if frames is None:
            width, height = size or (0, 0)
            return explain(result.cams[0], width=width, height=height)
        # Full frames come first in the batch; face crops (after them) have no map of their own.
        keys = [(f.timestamp, f.size) for f in frames]
        return video_explain(keys, result.cams[: len(frames)], top=top)
    except ValueError as exc:  # a malformed map must not lose the verdict
        logger.warning("explanation dropped: %s", exc)
        return None


@dataclass(frozen=True)
class Signals:
    """What the worker found besides the model: the media's hash and its bank match."""

    media: MediaHash | None = None
    match: Match | None = None


def _hash_row(submission_id: str, media: MediaHash | None) -> dict[str, Any] | None:
    if media is None or media.pdq is None:
        return None
    return {
        "submission_id": submission_id,
        "signal_type": media.signal_type,
        "pdq": media.pdq.hex,
        "quality": media.pdq.quality,
        "frames": media.frames_json(),
        "created_at": utcnow(),
    }


def _scores(
    answers: list[ModelAnswer], settings: Settings, frames: list[Frame] | None
) -> tuple[
    list[ModelScore], list[dict[str, Any]], tuple[ModelAnswer, float, float, Any, int] | None
]:
    """Returns the answering models' scores, every model's entry for the verdict, and the first
    answering model's (answer, logit, temperature, video record, top frame)."""
    scores: list[ModelScore] = []
    entries: list[dict[str, Any]] = []
    first = None
    for answer in answers:
        entry: dict[str, Any] = {
            "name": answer.name,
            "version": answer.version,
            "p_fake": None,
            "latency_ms": round(answer.latency_ms, 2),
        }
        entries.append(entry)
        if answer.logits is None or answer.version is None:
            entry["error"] = answer.error or "unavailable"
            continue
        meta = model_metadata(settings.model_repository, answer.name, answer.version)
        logits = np.asarray(answer.logits, dtype=np.float64).reshape(-1)
        record, top = None, 0
        if frames is None:
            p_fake = calibrate(float(logits[0]), meta.temperature)
        else:
            p_fake, top, record = _video_scores(frames, logits, meta.temperature)
        entry["p_fake"] = p_fake
        if first is None:
            first = (answer, float(logits[top]), meta.temperature, record, top)
        scores.append(
            ModelScore(
                answer.name, answer.version, p_fake, meta.pass_below, meta.flag_at, is_demo(meta)
            )
        )
    return scores, entries, first


def _finish(
    factory: sessionmaker[Session],
    submission_id: str,
    decision: str,
    now: Any,
    verdict: dict[str, Any],
    hash_row: dict[str, Any] | None,
    delivery: dict[str, Any] | None,
) -> tuple[bool, str | None]:
    """Writes the verdict, the media hash and the outbox row and moves the submission to its
    decision, all or nothing and only while it is scorable; returns (whether it was, and if not
    its status). Raises IntegrityError when another run stored a verdict first.

    PostgreSQL does it in one statement (:func:`_finish_in_one`); SQLite, where a statement costs
    no round trip, in one transaction of plain statements (it has no writing CTEs)."""
    params = {"finish_id": submission_id, "finish_status": decision, "finish_at": now}
    rows = (verdict, hash_row, delivery)
    if factory.kw["bind"].dialect.name == "postgresql":
        statement = _finish_in_one(*(tuple(row or ()) for row in rows))
        for (_table, prefix), row in zip(_FINISH_ROWS, rows, strict=True):
            params.update({prefix + name: value for name, value in (row or {}).items()})
        with session_scope(factory, autocommit=True) as session:
            if session.execute(statement, params).scalar():
                return True, None
            return False, session.execute(_STATE, {"submission_id": submission_id}).scalar()
    with session_scope(factory) as session:
        if session.execute(_FINISH, params).rowcount != 1:  # type: ignore[attr-defined]
            return False, session.execute(_STATE, {"submission_id": submission_id}).scalar()
        for (table, _prefix), row in zip(_FINISH_ROWS, rows, strict=True):
            if row is not None:
                session.execute(insert(table), row)
    return True, None


def _record_verdict(
    factory: sessionmaker[Session],
    submission_id: str,
    answers: list[ModelAnswer],
    settings: Settings,
    claimed: _Claimed,
    frames: list[Frame] | None = None,
    provenance: dict[str, Any] | None = None,
    signals: Signals = Signals(),
    *,
    size: tuple[int, int] | None = None,
    claim_first_attempt: Callable[[], float | None] | None = None,
) -> ScoreResult:
    scores, entries, first = _scores(answers, settings, frames)
    assert first is not None  # ModelSet.infer raises when no model answered
    answer, logit, temperature, record, top = first
    ensemble = latest_ensemble(settings.model_repository) if len(scores) > 1 else None
    combined = combine_scores(scores, ensemble)
    p_fake = combined.p_fake
    thresholds = resolve_thresholds(
        model_pass_below=combined.pass_below,
        model_flag_at=combined.flag_at,
        tenant_pass_below=claimed.tenant_pass_below,
        tenant_flag_at=claimed.tenant_flag_at,
    )
    model_decision = decide(p_fake, pass_below=thresholds.pass_below, flag_at=thresholds.flag_at)
    # Demo weights never decide alone: what only they would pass or flag goes to review.
    demoted = (
        combined.demo_only
        and not settings.demo_weights_decide
        and model_decision != Status.NEEDS_REVIEW
    )
    match = signals.match
    decision, reason = decide_with_signals(
        model_decision=Status.NEEDS_REVIEW if demoted else model_decision,
        match_verdict=None if match is None else match.verdict,
        policy=claimed.policy,
        provenance=provenance,
        provenance_policy=claimed.tenant_provenance_policy or settings.provenance_policy,
    )
    if demoted and reason == REASON_MODEL:
        reason = REASON_DEMO_MODEL
    missing = [e["name"] for e in entries if e["p_fake"] is None]
    ensemble_record = {
        "combination": combined.combination,
        "version": combined.ensemble_version,
        "weights": combined.weights,
        "partial": bool(missing),
        "missing": missing,
        "demo_only": combined.demo_only,
        "stale": combined.stale,
    }
    primary = InferenceResult(
        np.asarray(answer.logits), answer.name, str(answer.version), answer.cams
    )
    now = utcnow()
    verdict = {
        "id": new_id("ver"),
        "submission_id": submission_id,
        "logit": logit,
        "p_fake": p_fake,
        "decision": decision,
        "model_name": primary.model_name,
        "model_version": primary.model_version,
        "temperature": temperature,
        "pass_below": thresholds.pass_below,
        "flag_at": thresholds.flag_at,
        "frames": record,
        "decision_reason": reason,
        "provenance": provenance,
        "explanation": _explanation(primary, frames, size, top),
        "signals": {
            "model": {"p_fake": p_fake, "decision": model_decision},
            "match": None if match is None else match.to_json(),
        },
        "models": entries,
        "ensemble": ensemble_record,
        "created_at": now,
    }
    hash_row = _hash_row(submission_id, signals.media)
    # The submission as the finishing write leaves it: claimed (the scorer holds the lease), then
    # _FINISH's changes. No reviews: a scorable submission was never reviewed.
    finished = {**claimed.submission, "status": decision, "completed_at": now, "updated_at": now}
    delivery = outbox_row(view=submission_view(finished, verdict=verdict), event_type=EVENT_SCORED)
    lease_s = None
    if delivery is not None and claim_first_attempt is not None:
        lease_s = claim_first_attempt()  # just before the write: a thread is held meanwhile
        if lease_s is not None:
            delivery = callbacks.claimed_first(delivery, lease_s)
    try:
        matched, status = _finish(
            factory, submission_id, decision, now, verdict, hash_row, delivery
        )
    except IntegrityError:  # another worker stored the verdict first
        logger.info("score: verdict for %s already stored by another run", submission_id)
        return ScoreResult(Outcome.NOOP)
    if not matched:  # finished meanwhile (a redelivery or another worker)
        return ScoreResult(Outcome.NOOP, status)
    delivery_id = None if delivery is None else str(delivery["id"])
    logger.info(
        "submission %s scored p_fake=%.4f -> %s (%s)", submission_id, p_fake, decision, reason
    )
    attempt = None
    if delivery is not None and lease_s is not None:
        attempt = callbacks.first_attempt(delivery, claimed.signing)
    return ScoreResult(Outcome.SCORED, decision, delivery_id, attempt)


def score_submission(
    *,
    submission_id: str,
    session_factory: sessionmaker[Session],
    blobs: BlobStore,
    client: TritonClient,
    settings: Settings,
    matcher: BankMatcher | None = None,
    claim_first_attempt: Callable[[], float | None] | None = None,
) -> ScoreResult:
    """Scores one submission (see the module docstring); raises InferenceUnavailable to retry.

    The media's perceptual hash is stored with the verdict; with a ``matcher`` it is also looked
    up in the banks the submission's tenant sees. ``claim_first_attempt`` is called just before
    the verdict's write when the submission has a callback: when it returns a lease (the caller
    then holds a thread to send the attempt) the outbox row is written claimed for its first
    attempt (:func:`worker.callbacks.claimed_first`), and the result carries that attempt."""
    with leases.running(submission_id) as first:
        if not first:  # this process scores it already
            return ScoreResult(Outcome.NOOP, Status.SCORING)
        return _score(
            submission_id, session_factory, blobs, client, settings, matcher, claim_first_attempt
        )


def _score(
    submission_id: str,
    session_factory: sessionmaker[Session],
    blobs: BlobStore,
    client: TritonClient,
    settings: Settings,
    matcher: BankMatcher | None,
    claim_first_attempt: Callable[[], float | None] | None,
) -> ScoreResult:
    with stage("database"):
        claimed, status = _claim(session_factory, submission_id, settings)
    if claimed is None:
        outcome = Outcome.NEEDS_FETCH if status == Status.FETCHING else Outcome.NOOP
        return ScoreResult(outcome, status)
    with stage("blob"):
        data = blobs.get(claimed.blob_sha256)
    with stage("provenance"):  # from the stored bytes as uploaded, before any decoding
        provenance = read_provenance(data, ProvenanceLimits.from_settings(settings))
    models = get_model_set(settings)
    names, missing = _asked_models(models, claimed, settings)
    frames, size, video_limits = None, None, VideoLimits.from_settings(settings)
    media: MediaHash | None = None
    try:
        if is_video(data, video_limits):
            with stage("decode"):  # the per-second hashes come from the same decode
                video = decode_video(data, video_limits, hash_seconds=True)
                frames, media = video.frames, video.media
            with stage("resize"):
                inputs = _frame_inputs(_video_batch(frames), names)
        else:
            picture = prepare_picture(data, names, ImageLimits.from_settings(settings))
            inputs, media, size = picture.inputs, picture.media, picture.size
    except MediaRejected as exc:
        with stage("database"):
            return fail_submission(
                submission_id=submission_id,
                session_factory=session_factory,
                reason=exc.reason,
                detail=exc.detail,
            )
    signals = Signals(media)
    if matcher is not None and media is not None:
        with stage("match"):
            found = matcher.match(
                media=media, tenant_id=claimed.tenant_id, generation=claimed.bank_generation
            )
            signals = Signals(media, found)
    # One round for every model; one call per model for all of a video's frames.
    with stage("inference"):
        answers = models.infer(inputs, primary=client)
    answers += [ModelAnswer(name, None, None, 0.0, "not_in_repository") for name in missing]
    with stage("database"):
        return _record_verdict(
            session_factory,
            submission_id,
            answers,
            settings,
            claimed,
            frames,
            provenance,
            signals,
            size=size,
            claim_first_attempt=claim_first_attempt,
        )


@dataclass(frozen=True)
class PreparedPicture:
    """A still picture ready for inference: each model's input (uint8 [1, S, S, 3]), its PDQ
    hash (None when PDQ cannot read it) and the full picture's upright (width, height)."""

    inputs: dict[str, np.ndarray]
    media: MediaHash | None
    size: tuple[int, int]


def prepare_picture(
    data: bytes, names: dict[str, tuple[int, str]], limits: ImageLimits
) -> PreparedPicture:
    """Decodes a still picture once, hashes it and resizes it for each model in ``names`` (name
    -> (size, resize method)), each step timed as a stage; raises MediaRejected. The in-process
    limit of benchmarks/bench_pipeline.py runs this too, so it measures the same work."""
    largest = max(side for side, _ in names.values())
    with stage("decode"):
        decoded = decode_upright(data, dataclasses.replace(limits, size=largest))
    with stage("hash"):
        media = _image_hash(decoded.image)
    with stage("resize"):
        what = f"{decoded.format} image"
        # Once per (size, resize method), whatever the number of models asking for it.
        prepared = {
            (side, how): image_to_input(decoded.image, size=side, resize=how, what=what)[np.newaxis]
            for side, how in set(names.values())
        }
    return PreparedPicture(
        {name: prepared[key] for name, key in names.items()}, media, decoded.size
    )


def _image_hash(image: Any) -> MediaHash | None:
    """Returns the picture's PDQ hash, or None when PDQ cannot read it (no match, no failure)."""
    from moderation.mediahash import PDQ, image_pdq

    try:
        return MediaHash(PDQ, image_pdq(image))
    except (OSError, ValueError) as exc:
        logger.warning("no PDQ hash: %s", exc)
        return None


def _asked_models(
    models: ModelSet, claimed: _Claimed, settings: Settings
) -> tuple[dict[str, tuple[int, str]], list[str]]:
    """Returns the enabled models to ask with their (size, resize), and those the repository
    lacks. The primary model is asked even without a listed version, as before."""
    asked: dict[str, tuple[int, str]] = {}
    missing = []
    for name in models.enabled(claimed.tenant_models):
        info = models.info(name)
        if info is not None:
            asked[name] = (info.size, info.resize)
        elif name == settings.model_name:
            asked[name] = (INPUT_SIZE, "bilinear")
        else:
            missing.append(name)
    if not asked:  # no enabled model is served: the primary answers (or the item retries)
        asked[settings.model_name] = (INPUT_SIZE, "bilinear")
    return asked, missing


def _frame_inputs(batch: np.ndarray, names: dict[str, tuple[int, str]]) -> dict[str, np.ndarray]:
    """Returns each model's frames: the 224 batch, resized for models of another size."""
    from PIL import Image

    from moderation.preprocess import RESAMPLING

    prepared: dict[tuple[int, str], np.ndarray] = {}
    for key in set(names.values()):
        side, resize = key
        if side == batch.shape[1]:
            prepared[key] = batch
        else:
            prepared[key] = np.stack(
                [
                    np.asarray(Image.fromarray(f).resize((side, side), RESAMPLING[resize]))
                    for f in batch
                ]
            )
    return {name: prepared[key] for name, key in names.items()}
