"""Settings for every dfmod process: embedded defaults, overridden by ``DFMOD_*`` variables.

One frozen dataclass, built once per process by :func:`load_settings`. The README's settings table
is generated from the same field list (``dfmod settings``), so the two cannot drift.
"""

from __future__ import annotations

import dataclasses
import os
from collections.abc import Mapping
from dataclasses import dataclass, field, fields
from pathlib import Path
from typing import Any

PROJECT_ROOT = Path(__file__).resolve().parents[1]
_DEFAULT_DATA_DIR = Path("var")
_DEFAULT_REPOSITORY = PROJECT_ROOT / "model_repository"


def _env_name(name: str) -> str:
    return "DFMOD_" + name.upper()


def _setting(default: Any, help: str) -> Any:
    return field(default=default, metadata={"help": help})


@dataclass(frozen=True)
class Settings:
    """Every tunable of the service; field names map to ``DFMOD_<NAME>`` variables."""

    data_dir: Path = _setting(_DEFAULT_DATA_DIR, "Embedded database, broker and blob folder")  # noqa: RUF009
    api_host: str = _setting("127.0.0.1", "Address the webhook API listens on")
    api_port: int = _setting(8080, "Port of the webhook API and dashboard")
    api_workers: int = _setting(2, "Worker processes of the API server (gunicorn)")
    api_threads: int = _setting(8, "Threads per API worker process (gunicorn gthread)")
    database_url: str = _setting("", "SQLAlchemy URL; default sqlite:///<data_dir>/dfmod.db")
    broker_url: str = _setting("", "Celery broker URL; default sqla+sqlite:///<data_dir>/broker.db")
    worker_metrics_host: str = _setting("127.0.0.1", "Address of the worker's Prometheus metrics")
    worker_metrics_port: int = _setting(
        0, "Port of the worker's Prometheus metrics (time per stage of a scoring); 0: off"
    )
    triton_host: str = _setting("127.0.0.1", "Host of the Triton server")
    triton_grpc_port: int = _setting(8001, "Triton gRPC port")
    triton_http_port: int = _setting(8000, "Triton HTTP port")
    triton_metrics_port: int = _setting(8002, "Triton Prometheus metrics port")
    triton_timeout_s: float = _setting(10.0, "Deadline of one Triton inference call")
    triton_retries: int = _setting(4, "Retries on unavailable/overloaded Triton before giving up")
    triton_batch_images: int = _setting(
        8,
        "Most images a worker process joins into one Triton request: scorings that arrive while "
        "its request is in flight wait and go together; 1: one request per scoring",
    )
    model_repository: Path = _setting(  # noqa: RUF009
        _DEFAULT_REPOSITORY, "Triton model repository (read by Triton, written by deploy)"
    )
    model_name: str = _setting("deepfake_detector", "Model name in the Triton repository")
    models: str = _setting(
        "",
        "Comma-separated models every item is scored by, unless 'dfmod tenant set-models' sets a "
        "tenant's own; empty: every model in the repository",
    )
    demo_weights_decide: int = _setting(
        0,
        "1: a model version marked as demo weights may auto-pass or auto-flag on its own; "
        "0: its decisions go to needs_review (demo_model_review)",
    )
    outbound_allowlist: str = _setting(
        "", "Comma-separated CIDRs exempt from the SSRF guard (e.g. 127.0.0.0/8 for tests)"
    )
    max_upload_bytes: int = _setting(20 * 1024 * 1024, "Largest accepted media file in bytes")
    rate_limit_per_minute: int = _setting(
        600,
        "Submissions one tenant may make per minute (sliding window, all API processes) unless "
        "'dfmod tenant set-rate-limit' gives it its own; 0: off",
    )
    max_image_pixels: int = _setting(40_000_000, "Largest accepted image (width x height)")
    allowed_image_formats: str = _setting(
        "JPEG,PNG,WEBP,GIF,BMP,HEIF,AVIF", "Accepted image formats (HEIF covers HEIC)"
    )
    jpeg_draft: int = _setting(
        1, "1: decode JPEGs at reduced DCT scale before the resize (faster); 0: full size"
    )
    video_enabled: int = _setting(
        1, "1: score MP4/MOV/WebM and multi-frame GIF/WebP as video; 0: refuse them"
    )
    max_video_seconds: float = _setting(600.0, "Longest accepted video duration in seconds")
    max_video_pixels: int = _setting(3840 * 2160, "Largest accepted video frame (width x height)")
    max_video_streams: int = _setting(8, "Most streams (video, audio, subtitles) in a container")
    max_video_frames: int = _setting(
        32, "Most frames sampled from one video (uniform, then scene changes)"
    )
    video_scene_threshold: float = _setting(
        30.0, "Mean abs difference (0-255) of 32x32 gray thumbnails that marks a scene change"
    )
    video_faces: int = _setting(
        0, "Largest faces per video frame also scored as crops (packaged OpenCV detector); 0: off"
    )
    provenance_policy: str = _setting(
        "trusted",
        "Which C2PA manifests declaring AI generation flag an item, unless 'dfmod tenant "
        "set-provenance-policy' sets a tenant's own: trusted (signer chains to "
        "DFMOD_C2PA_TRUST_ANCHORS), signed (any intact signature), off (report only)",
    )
    c2pa_trust_anchors: str = _setting(
        "", "PEM file of the certificates trusted to sign C2PA manifests; empty: none (untrusted)"
    )
    provenance_timeout_s: float = _setting(
        2.0, "Time limit for reading one file's C2PA manifest; past it the manifest is invalid"
    )
    provenance_max_manifest_mb: int = _setting(
        16,
        "Largest C2PA manifest store read (MB, as stored or decompressed); larger: invalid",
    )
    bank_match_distance: int = _setting(
        31, "Largest PDQ Hamming distance (0-255) that counts as a bank match (PDQ's own: 31)"
    )
    bank_video_match_share: float = _setting(
        0.8, "Share of a video's per-second hashes (and of the bank video's) that must match"
    )
    bank_min_quality: int = _setting(
        50, "Lowest PDQ quality (0-100) of a hash that is looked up in the banks"
    )
    fetch_timeout_s: float = _setting(10.0, "Total time limit for fetching a media_url")
    callback_timeout_s: float = _setting(10.0, "Time a callback receiver has to answer 2xx")
    callback_dispatch_threads: int = _setting(
        1, "Threads per worker process making first callback attempts; 0: all via the broker"
    )
    callback_schedule: str = _setting(
        "0,5,300,1800,7200,18000,36000,36000",
        "Seconds before each callback attempt (Standard Webhooks schedule); then dead",
    )
    score_retry_schedule: str = _setting(
        "2,5,10,20,30,60,60,60,60",
        "Seconds between scoring retries while Triton is unavailable; then failed",
    )
    task_soft_time_limit_s: float = _setting(
        120.0, "Time after which a running task is interrupted and its submission fails (prefork)"
    )
    task_time_limit_s: float = _setting(
        180.0, "Time after which a task's process is killed; the sweeper retries it (prefork)"
    )
    lease_s: float = _setting(
        15.0,
        "How long a worker holds a job without renewing it; its heartbeat renews every third of "
        "that, and a lapsed job is re-enqueued",
    )
    stuck_after_s: float = _setting(300.0, "Age after which the sweeper re-enqueues a stuck job")
    sweep_interval_s: float = _setting(30.0, "How often the sweeper runs")
    log_level: str = _setting("INFO", "Logging level")

    @property
    def resolved_database_url(self) -> str:
        """Returns the database URL, defaulting to SQLite under the data folder."""
        return self.database_url or f"sqlite:///{self.data_dir.resolve() / 'dfmod.db'}"

    @property
    def resolved_broker_url(self) -> str:
        """Returns the broker URL, defaulting to kombu's SQLAlchemy transport on SQLite."""
        return self.broker_url or f"sqla+sqlite:///{self.data_dir.resolve() / 'broker.db'}"

    @property
    def blob_dir(self) -> Path:
        """Returns the content-addressed blob folder."""
        return self.data_dir / "blobs"

    @property
    def triton_grpc_url(self) -> str:
        """Returns host:port of Triton's gRPC endpoint."""
        return f"{self.triton_host}:{self.triton_grpc_port}"

    @property
    def image_formats(self) -> tuple[str, ...]:
        """Returns the accepted image formats, upper-case."""
        return tuple(f.strip().upper() for f in self.allowed_image_formats.split(",") if f.strip())

    @property
    def callback_delays(self) -> tuple[float, ...]:
        """Returns the seconds before each callback attempt."""
        return tuple(float(s) for s in self.callback_schedule.split(",") if s.strip())

    @property
    def score_retry_delays(self) -> tuple[float, ...]:
        """Returns the seconds before each scoring retry while inference is unavailable."""
        return tuple(float(s) for s in self.score_retry_schedule.split(",") if s.strip())

    def replace(self, **changes: Any) -> Settings:
        """Returns a copy with some fields changed (used by tests and the CLI)."""
        return dataclasses.replace(self, **changes)


def _coerce(kind: Any, raw: str, name: str) -> Any:
    try:
        if kind in (int, "int"):
            return int(raw)
        if kind in (float, "float"):
            return float(raw)
        if kind in (Path, "Path"):
            return Path(raw)
    except ValueError as exc:
        raise ValueError(f"{_env_name(name)}={raw!r}: expected a {kind} value") from exc
    return raw


def load_settings(environ: Mapping[str, str] | None = None, **overrides: Any) -> Settings:
    """Returns settings from defaults, then ``DFMOD_*`` variables, then keyword overrides."""
    env = os.environ if environ is None else environ
    values: dict[str, Any] = {}
    for f in fields(Settings):
        raw = env.get(_env_name(f.name))
        if raw is not None and raw != "":
            values[f.name] = _coerce(f.type, raw, f.name)
    values.update(overrides)
    return Settings(**values)


def settings_table() -> str:
    """Returns the settings as a Markdown table for the README."""
    rows = ["| variable | default | meaning |", "| --- | --- | --- |"]
    for f in fields(Settings):
        default = f.default
        if isinstance(default, Path) and default.is_absolute():
            default = default.relative_to(PROJECT_ROOT)
        rows.append(f"| `{_env_name(f.name)}` | `{default}` | {f.metadata['help']} |")
    return "\n".join(rows)
