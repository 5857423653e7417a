"""The HTTP API's contract in one place: its limits and its request and response models.

They validate what the API reads, build what it writes (also the callbacks' ``data``) and are the
OpenAPI document's schemas, so the three cannot disagree (docs/design.md, "The API contract").
"""

from __future__ import annotations

import datetime as dt
import json
import logging
from typing import Annotated, Any, Literal

from pydantic import (
    BaseModel,
    ConfigDict,
    Field,
    PlainSerializer,
    StringConstraints,
    ValidationInfo,
    WithJsonSchema,
    field_validator,
)

from moderation.models import Status

logger = logging.getLogger(__name__)

# -- limits ------------------------------------------------------------------------------------
MAX_URL_LENGTH = 2048
MAX_EXTERNAL_ID_LENGTH = 200
MAX_METADATA_BYTES = 16 * 1024
MAX_IDEMPOTENCY_KEY_LENGTH = 255
MAX_PAGE_SIZE = 100
DEFAULT_PAGE_SIZE = 50
# What the HTTP server (gunicorn) reads before the application sees a request; beyond them it
# answers 414 / 431 (as problem+json, see webhook_api.server_errors).
MAX_REQUEST_LINE_BYTES = 8190
MAX_HEADER_FIELDS = 100
MAX_HEADER_FIELD_BYTES = 8190

# -- body shapes of POST /v1/submissions ---------------------------------------------------------
OPTIONAL_FIELDS = ("callback_url", "external_id", "metadata")
JSON_FIELDS = ("media_url", *OPTIONAL_FIELDS)
# Raw bodies: any image/* type, the containers moderation.video decodes, or untyped bytes.
RAW_VIDEO_TYPES = ("video/mp4", "video/quicktime", "video/webm", "video/x-matroska")
RAW_TYPES = ("image/*", *RAW_VIDEO_TYPES, "application/octet-stream")

# An http(s) URL with a host (a name or an [IPv6] literal), no credentials and a valid port, in
# printable ASCII (percent-encode the rest): what the SSRF guard parses. Whether its host resolves
# to a public address is decided at submission time (422 when it does not).
_PORT = r"(?::(?:[0-9]{1,4}|[1-5][0-9]{4}|6[0-4][0-9]{3}|65[0-4][0-9]{2}|655[0-2][0-9]|6553[0-5]))?"
_HOST = r"(?:[A-Za-z0-9._~-]+|\[[0-9A-Fa-f:.]+\])"
URL_PATTERN = r"^[Hh][Tt][Tt][Pp][Ss]?://" + _HOST + _PORT + r"(?:[/?#][!-~]*)?$"
# 1-255 printable ASCII characters; spaces and tabs around them are HTTP's, not the key's.
IDEMPOTENCY_KEY_PATTERN = r"^[ \t]*[!-~](?:[ -~]{0,253}[!-~])?[ \t]*$"
# An opaque cursor: the last row's creation time (microseconds since the epoch) and its id.
CURSOR_PATTERN = r"^[0-9]{1,19}\.[A-Za-z0-9_]{1,64}$"

HttpUrl = Annotated[
    str, StringConstraints(min_length=1, max_length=MAX_URL_LENGTH, pattern=URL_PATTERN)
]
# The same as text (a form field, a query parameter), where empty means not given.
TextHttpUrl = Annotated[
    str, StringConstraints(max_length=MAX_URL_LENGTH, pattern="^$|" + URL_PATTERN)
]
# Any text but NUL, which PostgreSQL cannot store in a text column.
ExternalId = Annotated[
    str, StringConstraints(max_length=MAX_EXTERNAL_ID_LENGTH, pattern=r"^[^\x00]*$")
]

# What each field expects, in the words of the 422 errors.
EXPECTED = {
    "media_url": "an http(s) URL",
    "callback_url": "an http(s) URL",
    "external_id": f"a string of at most {MAX_EXTERNAL_ID_LENGTH} characters, without NUL",
    "metadata": "a JSON object",
    "status": f"one of {', '.join(Status.ALL)}",
    "limit": f"an integer from 1 to {MAX_PAGE_SIZE}",
    "cursor": "a cursor taken from a previous page's next_cursor",
}
_URL_DOC = (
    f"An http(s) URL of at most {MAX_URL_LENGTH} characters whose host resolves to public "
    "addresses only (the SSRF guard; DFMOD_OUTBOUND_ALLOWLIST exempts networks): 422 otherwise"
)
_METADATA_DOC = f"Any JSON object of at most {MAX_METADATA_BYTES} bytes as JSON, echoed back"


def _iso(value: dt.datetime) -> str:
    return value.astimezone(dt.timezone.utc).isoformat()


Timestamp = Annotated[
    dt.datetime,
    PlainSerializer(_iso, return_type=str),
    WithJsonSchema({"type": "string", "format": "date-time"}),
]


def metadata_size_ok(value: dict[str, Any]) -> dict[str, Any]:
    """Returns ``value`` when its JSON fits :data:`MAX_METADATA_BYTES`; raises ValueError."""
    if len(json.dumps(value)) > MAX_METADATA_BYTES:
        raise ValueError(f"expected at most {MAX_METADATA_BYTES} bytes of JSON")
    return value


# -- requests ------------------------------------------------------------------------------------


class SubmissionFields(BaseModel):
    """The optional fields of every submission shape (form fields or query parameters as text)."""

    model_config = ConfigDict(extra="forbid", strict=True)

    callback_url: HttpUrl | None = Field(None, description=_URL_DOC)
    external_id: ExternalId | None = Field(None, description="Your own id, echoed back")
    metadata: dict[str, Any] | None = Field(None, description=_METADATA_DOC)

    @field_validator("metadata")
    @classmethod
    def _metadata_size(cls, value: dict[str, Any] | None) -> dict[str, Any] | None:
        return None if value is None else metadata_size_ok(value)

    @field_validator("callback_url", "media_url", check_fields=False)
    @classmethod
    def _outbound(cls, value: str | None, info: ValidationInfo) -> str | None:
        """Refuses URLs the SSRF guard refuses (the allow-list comes in the context)."""
        from moderation.ssrf import check_url

        if value is not None and info.context is not None:
            check_url(value, allowlist=info.context.get("allowlist", ()))
        return value


class MediaUrlRequest(SubmissionFields):
    """``application/json``: score the media at a URL (fetched by the worker)."""

    media_url: HttpUrl = Field(description=_URL_DOC)


class UploadForm(BaseModel):
    """``multipart/form-data``: one ``file`` part and the optional fields as text (empty: not
    given). The intake reads the parts itself (raw bytes, no spooling) and validates the fields
    with :class:`SubmissionFields`; this model is their schema in the document."""

    model_config = ConfigDict(extra="forbid")

    file: bytes = Field(
        json_schema_extra={"format": "binary", "minLength": 1},
        description="The media's bytes (any content; the worker decides what it is)",
    )
    callback_url: TextHttpUrl = Field("", description=_URL_DOC)
    external_id: ExternalId = Field("", description="Your own id, echoed back")
    metadata: dict[str, Any] = Field(
        default_factory=dict, description=f"{_METADATA_DOC}, as JSON text"
    )


class ListQuery(BaseModel):
    """The query of ``GET /v1/submissions``."""

    model_config = ConfigDict(extra="forbid", strict=True)

    status: Literal[Status.ALL] | None = Field(None, description="Only submissions in this status")  # type: ignore[valid-type]
    limit: Annotated[int, Field(ge=1, le=MAX_PAGE_SIZE)] = Field(
        DEFAULT_PAGE_SIZE, description="Page size"
    )
    cursor: Annotated[str, StringConstraints(pattern=CURSOR_PATTERN)] | None = Field(
        None, description="A previous page's next_cursor (opaque)"
    )


# -- responses -----------------------------------------------------------------------------------


class _Open(BaseModel):
    """A sub-object whose keys other parts of the project may still add to."""

    model_config = ConfigDict(extra="allow")


class MediaOut(BaseModel):
    kind: Literal["upload", "url"]
    url: str | None
    sha256: str | None
    size_bytes: int | None


class ModelRef(_Open):
    name: str
    version: str


class Thresholds(BaseModel):
    pass_below: float
    flag_at: float


class VideoCrop(_Open):
    box: list[int] | None = None
    p_fake: float | None = Field(None, ge=0, le=1)


class VideoFrame(_Open):
    timestamp_s: float | None = Field(None, ge=0)
    p_fake: float | None = Field(None, ge=0, le=1)
    scene_change: bool | None = None
    frame_p_fake: float | None = Field(None, description="The full frame's score")
    crops: list[VideoCrop] | None = Field(None, description="Face crops scored with the frame")
    driver: str | None = Field(None, description="What gave the frame its score: frame, face_<i>")


class VideoScores(_Open):
    """Videos only: per-frame scores and how p_fake was aggregated."""

    rule: str | None = Field(None, description="mean_top_k: the mean of the top-k frame p_fake")
    k: int | None = Field(None, ge=1)
    frames: list[VideoFrame] | None = None
    drivers: list[str] | None = Field(None, description="The driver of each suspicious frame")
    suspicious_timestamps_s: list[float] | None = Field(
        None, description="Timestamps of the top-k frames, most suspicious first"
    )


class ModelSignal(_Open):
    """What the model alone said: its score, label and what its thresholds alone decide."""

    name: str
    version: str
    p_fake: float = Field(ge=0, le=1)
    label: Literal["real", "fake"]
    decision: Literal["auto_passed", "auto_flagged", "needs_review"]


class BankOrigin(_Open):
    """Where a bank entry came from: a review (submission, review, reviewer) or an import."""

    source: Literal["review", "import", "file"]
    submission: str | None = None
    review: str | None = None
    reviewer: str | None = None
    import_source: str | None = None
    external_id: str | None = None
    added_by: str | None = None


class BankMatch(_Open):
    """The known-media bank entry the item matched (PDQ, or per-second PDQ for videos)."""

    bank: str
    bank_id: str
    verdict: Literal["fake", "real"]
    distance: int = Field(ge=0, le=256, description="PDQ Hamming distance to the entry")
    signal_type: Literal["pdq", "vpdq"]
    entry_id: int
    frame_share: float | None = Field(None, description="Videos: share of frames matched")
    origin: BankOrigin


class Signer(_Open):
    common_name: str | None = None
    issuer: str | None = None


class Provenance(_Open):
    """The file's C2PA manifest as validated by c2pa-python."""

    manifest: Literal["valid", "untrusted", "invalid"] = Field(
        description="valid: signature and hard binding hold and the signer is trusted; "
        "untrusted: they hold, the signer is not trusted; invalid: otherwise"
    )
    ai_generated: bool = Field(
        description="An action declares trainedAlgorithmicMedia or "
        "compositeWithTrainedAlgorithmicMedia"
    )
    digital_source_type: str | None = None
    digital_source_types: list[str] = Field(default_factory=list)
    claim_generator: str | None = None
    signer: Signer | None = None
    signature_valid: bool | None = None
    hard_binding_valid: bool | None = None
    validation_codes: list[str] = Field(
        default_factory=list, description="C2PA failure codes, e.g. assertion.dataHash.mismatch"
    )
    error: str | None = Field(None, description="Why an invalid manifest could not be read")


class Signals(_Open):
    """The evidence behind a verdict, each kind on its own; null where absent."""

    model: ModelSignal
    match: BankMatch | None = None
    provenance: Provenance | None = None


class Region(_Open):
    box: list[int] = Field(description="[x0, y0, x1, y1] in the upright original's pixels")
    share: float = Field(ge=0, le=1, description="Share of the map's mass inside the box")


class FrameExplanation(_Open):
    timestamp_s: float | None = None
    cam: list[list[float]] | None = None
    regions: list[Region] = Field(default_factory=list)


class Explanation(_Open):
    """Grad-CAM of the model's fake score: a 7x7 map in [0, 1] and its strongest regions."""

    cam: list[list[float]] | None = Field(None, description="7x7 map, rows top to bottom")
    regions: list[Region] = Field(default_factory=list, description="Largest share first")
    frames: list[FrameExplanation] | None = Field(
        None, description="Videos only: each scored frame's map and regions"
    )


class ModelScore(_Open):
    name: str
    version: str | None = Field(description="The version that answered; null when it did not")
    p_fake: float | None = Field(None, ge=0, le=1)
    latency_ms: float | None = None
    error: Literal["unavailable", "error", "not_in_repository"] | None = Field(
        None, description="Why the model gave no score (the verdict came from the others)"
    )


class EnsembleOut(_Open):
    """How p_fake combined the models' scores (moderation.ensemble)."""

    combination: Literal["single", "fitted", "mean"]
    version: int | None = Field(None, description="The fitted ensemble's version")
    weights: dict[str, float] | None = None
    partial: bool = Field(description="An enabled model gave no score")
    missing: list[str] = Field(default_factory=list)
    demo_only: bool = Field(
        False, description="Only demo weights carried the score: never auto-decided alone"
    )
    stale: bool = Field(
        False, description="A weighted model answered with a version it was not fitted on"
    )


class VerdictOut(BaseModel):
    p_fake: float = Field(ge=0, le=1, description="Calibrated probability that it is fake")
    label: Literal["real", "fake", "ai_generated"] = Field(
        description="real/fake from p_fake; ai_generated when provenance decided"
    )
    decision: Literal["auto_passed", "auto_flagged", "needs_review"]
    model: ModelRef
    thresholds: Thresholds
    created_at: Timestamp
    video: VideoScores | None = None
    decision_reason: str = Field(
        description="What decided: model, bank_match:fake, bank_match:real, "
        "provenance:ai_generated, demo_model_review"
    )
    signals: Signals
    explanation: Explanation | None = Field(
        None, description="Grad-CAM; null for model versions without the cam output"
    )
    models: list[ModelScore] | None = Field(None, description="Each detector's own score")
    ensemble: EnsembleOut | None = Field(None, description="How p_fake combined the models")


class ReviewOut(BaseModel):
    """The latest human review decision."""

    label: Literal["real", "fake"]
    created_at: Timestamp


class FailureOut(BaseModel):
    reason: str = Field(description="unsupported_media, unreadable_media, too_large, ...")
    detail: str | None


class SubmissionOut(BaseModel):
    """A submission as ``GET`` returns it and callbacks carry it."""

    id: str = Field(examples=["sub_3f2c0c1e9d5b4b8e9a7d6c5b4a392817"])
    status: Literal[Status.ALL]  # type: ignore[valid-type]
    media: MediaOut
    callback_url: str | None
    external_id: str | None
    metadata: dict[str, Any]
    verdict: VerdictOut | None
    review: ReviewOut | None
    failure: FailureOut | None
    created_at: Timestamp
    updated_at: Timestamp
    completed_at: Timestamp | None


class SubmissionList(BaseModel):
    items: list[SubmissionOut]
    next_cursor: Annotated[str, StringConstraints(pattern=CURSOR_PATTERN)] | None
    next: str | None = Field(description="The URL of the next page; null on the last")


class FieldError(BaseModel):
    field: str
    message: str


class Problem(_Open):
    """RFC 9457 problem details (extension members such as ``max_bytes`` may follow)."""

    type: str = Field(description="https://dfmod.dev/problems/<slug>, stable")
    title: str
    status: int
    detail: str = Field(description="What was wrong and what was expected")
    instance: str | None = None
    errors: list[FieldError] | None = Field(None, description="422: each invalid field")


class Health(BaseModel):
    status: Literal["ok"]


class Check(_Open):
    ok: bool
    detail: str | None = None


class Readiness(BaseModel):
    status: Literal["ready", "unavailable"]
    checks: dict[str, Check]


# The events a callback carries (``WebhookEvent.type``).
EVENT_SCORED = "submission.scored"
EVENT_FAILED = "submission.failed"
EVENT_DECIDED = "submission.decided"
EVENTS = {
    EVENT_SCORED: "The worker scored the submission: its verdict decided it, or it waits in review",
    EVENT_FAILED: "The submission ended `failed`; `failure.reason` says why",
    EVENT_DECIDED: "A reviewer decided a submission that waited in review",
}


class WebhookEvent(BaseModel):
    """The JSON body of every callback: a Standard Webhooks payload whose ``data`` is the
    submission as ``GET /v1/submissions/{submission_id}`` returns it, in its new state."""

    type: Literal[EVENT_SCORED, EVENT_FAILED, EVENT_DECIDED]  # type: ignore[valid-type]
    timestamp: Timestamp
    data: SubmissionOut


RESPONSE_MODELS: tuple[type[BaseModel], ...] = (
    SubmissionOut,
    SubmissionList,
    Problem,
    Health,
    Readiness,
    WebhookEvent,
)
REQUEST_MODELS: tuple[type[BaseModel], ...] = (MediaUrlRequest, UploadForm)
