"""Scoring one submission: blob → preprocess → Triton → calibrated verdict, decision and outbox.

:func:`score_submission` is idempotent. It acts only on a submission still in ``received``,
``queued`` or ``scoring``; the verdict, the decision status and the callback outbox row are written
in ONE transaction guarded by the unique verdict per submission, so an at-least-once redelivery or
a race between two workers yields exactly one verdict and one callback. Media the preprocessor
refuses ends ``failed`` with its reason at once; Triton outages propagate as
``InferenceUnavailable`` for the task to retry.
"""

from __future__ import annotations

import enum
import functools
import logging
from dataclasses import dataclass
from pathlib import Path
from types import SimpleNamespace
from typing import TYPE_CHECKING, Any

import numpy as np
from sqlalchemy import Table, bindparam, insert, literal_column, select, update
from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import Session, sessionmaker

from moderation.bank_models import BankPolicy, BankState, MediaHashRow
from moderation.banks import DEFAULT_POLICY, Policy
from moderation.blobs import BlobStore
from moderation.contract import ModelMetadata
from moderation.db import session_scope
from moderation.explanation import explain, oriented_size, video_explain
from moderation.mediahash import MediaHash, video_hash
from moderation.models import Status, Submission, Tenant, Verdict, new_id, utcnow
from moderation.policy import apply_provenance, calibrate, decide, resolve_thresholds
from moderation.preprocess import ImageLimits, MediaRejected, decode_image, image_to_input
from moderation.provenance import ProvenanceLimits, read_provenance
from moderation.redact import public_detail
from moderation.settings import Settings
from moderation.signal_policy import decide_with_signals
from moderation.submissions import columns_view, submission_view, verdict_view
from moderation.video import Frame, VideoLimits, aggregate, is_video, load_video
from worker import leases
from worker.callbacks import EVENT_FAILED, EVENT_SCORED, add_outbox, insert_outbox
from worker.metrics import observe_since, stage

if TYPE_CHECKING:
    from moderation.bank_index import BankMatcher, Match
    from worker.triton_client import InferenceResult, TritonClient

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
        _SUBMISSIONS.c.blob_sha256,
        _SUBMISSIONS.c.attempts,
        _SUBMISSIONS.c.queued_at,
        _SUBMISSIONS.c.created_at,
        _tenant_column("pass_below"),
        _tenant_column("flag_at"),
        _tenant_column("provenance_policy"),
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
    .where(_SUBMISSIONS.c.id == bindparam("submission_id"), _SUBMISSIONS.c.status.in_(SCORABLE))
    .values(
        status=bindparam("decision"),
        completed_at=bindparam("now"),
        updated_at=bindparam("now"),
        lease_owner=None,
        lease_expires_at=None,
    )
    .returning(*_SUBMISSIONS.c)
)


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
    with session_scope(factory) as session:
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
    )
    return claimed, Status.SCORING


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
            view = submission_view(sub, verdict=None, reviews=())
            delivery = add_outbox(session, submission=sub, event_type=EVENT_FAILED, view=view)
            delivery_id = delivery.id if delivery else None
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


def _record_verdict(
    factory: sessionmaker[Session],
    submission_id: str,
    result: InferenceResult,
    settings: Settings,
    claimed: _Claimed,
    frames: list[Frame] | None = None,
    provenance: dict[str, Any] | None = None,
    signals: Signals = Signals(),
    *,
    size: tuple[int, int] | None = None,
) -> ScoreResult:
    logits = np.asarray(result.logits, dtype=np.float64).reshape(-1)
    meta = model_metadata(settings.model_repository, result.model_name, result.model_version)
    record, top = None, 0
    if frames is None:
        p_fake = calibrate(float(logits[0]), meta.temperature)
    else:
        p_fake, top, record = _video_scores(frames, logits, meta.temperature)
    logit = float(logits[top])
    thresholds = resolve_thresholds(
        model_pass_below=meta.pass_below,
        model_flag_at=meta.flag_at,
        tenant_pass_below=claimed.tenant_pass_below,
        tenant_flag_at=claimed.tenant_flag_at,
    )
    model_decision = decide(p_fake, pass_below=thresholds.pass_below, flag_at=thresholds.flag_at)
    match = signals.match
    decision, reason = decide_with_signals(
        model_decision=model_decision,
        match_verdict=None if match is None else match.verdict,
        policy=claimed.policy,
    )
    provenance_policy = claimed.tenant_provenance_policy or settings.provenance_policy
    decision, reason = apply_provenance(
        decision, provenance, policy=provenance_policy, reason=reason
    )
    now = utcnow()
    verdict = {
        "id": new_id("ver"),
        "submission_id": submission_id,
        "logit": logit,
        "p_fake": p_fake,
        "decision": decision,
        "model_name": result.model_name,
        "model_version": str(result.model_version),
        "temperature": meta.temperature,
        "pass_below": thresholds.pass_below,
        "flag_at": thresholds.flag_at,
        "frames": record,
        "decision_reason": reason,
        "provenance": provenance,
        "explanation": _explanation(result, frames, size, top),
        "signals": {
            "model": {"p_fake": p_fake, "decision": model_decision},
            "match": None if match is None else match.to_json(),
        },
        "created_at": now,
    }
    hash_row = _hash_row(submission_id, signals.media)
    try:
        with session_scope(factory) as session:
            row = session.execute(
                _FINISH, {"submission_id": submission_id, "decision": decision, "now": now}
            ).first()
            if row is None:  # finished meanwhile (a redelivery or another worker)
                status = session.execute(_STATE, {"submission_id": submission_id}).scalar()
                return ScoreResult(Outcome.NOOP, status)
            session.execute(insert(_VERDICTS), verdict)
            if hash_row is not None:
                session.execute(insert(_HASHES), hash_row)
            # The verdict just written, and no reviews: a scorable submission was never reviewed.
            view = columns_view(row._mapping, verdict=verdict_view(SimpleNamespace(**verdict)))
            delivery_id = insert_outbox(session, view=view, event_type=EVENT_SCORED)
    except IntegrityError:  # another worker stored the verdict first
        logger.info("score: verdict for %s already stored by another run", submission_id)
        return ScoreResult(Outcome.NOOP)
    logger.info(
        "submission %s scored p_fake=%.4f -> %s (%s)", submission_id, p_fake, decision, reason
    )
    return ScoreResult(Outcome.SCORED, decision, delivery_id)


def score_submission(
    *,
    submission_id: str,
    session_factory: sessionmaker[Session],
    blobs: BlobStore,
    client: TritonClient,
    settings: Settings,
    matcher: BankMatcher | None = None,
) -> ScoreResult:
    """Scores one submission (see the module docstring); raises InferenceUnavailable to retry.

    The media's perceptual hash is stored with the verdict; with a ``matcher`` it is also looked
    up in the banks the submission's tenant sees."""
    with leases.running(submission_id) as first:
        if not first:  # this process scores it already
            return ScoreResult(Outcome.NOOP, Status.SCORING)
        return _score(submission_id, session_factory, blobs, client, settings, matcher)


def _score(
    submission_id: str,
    session_factory: sessionmaker[Session],
    blobs: BlobStore,
    client: TritonClient,
    settings: Settings,
    matcher: BankMatcher | None,
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
    frames, size, video_limits = None, None, VideoLimits.from_settings(settings)
    media: MediaHash | None = None
    try:
        if is_video(data, video_limits):
            with stage("decode"):
                frames = load_video(data, video_limits)
            images = _video_batch(frames)
            with stage("hash"):
                media = video_hash(data, max_seconds=video_limits.max_seconds)
        else:
            limits = ImageLimits.from_settings(settings)
            with stage("decode"):
                image, fmt = decode_image(data, limits)
            with stage("hash"):
                media = _image_hash(image)
            with stage("resize"):
                images = image_to_input(image, size=limits.size, what=f"{fmt} image")[np.newaxis]
                size = oriented_size(data) or image.size
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
    # One call for all of a video's frames: they fill Triton's dynamic batcher together.
    with stage("inference"):
        result = client.infer(images)
    with stage("database"):
        return _record_verdict(
            session_factory,
            submission_id,
            result,
            settings,
            claimed,
            frames,
            provenance,
            signals,
            size=size,
        )


def _image_hash(image: Any) -> MediaHash | None:
    """Returns the picture's PDQ hash, or None when PDQ cannot read it (no match, no failure)."""
    from moderation.mediahash import PDQ, image_pdq

    try:
        return MediaHash(PDQ, image_pdq(image))
    except (OSError, ValueError) as exc:
        logger.warning("no PDQ hash: %s", exc)
        return None
