"""Content provenance: the C2PA manifest a file carries, read with ``c2pa-python``, summarised.

:func:`read_provenance` never raises and makes no network request; ``manifest`` is ``valid``,
``untrusted`` or ``invalid`` (docs/design.md, "Provenance").
"""

from __future__ import annotations

import functools
import io
import json
import logging
import threading
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from moderation.settings import Settings

logger = logging.getLogger(__name__)

VALID, UNTRUSTED, INVALID = "valid", "untrusted", "invalid"
# IPTC digital source types that mean "made (wholly or partly) by a generative model".
AI_SOURCE_TYPES = frozenset({"trainedAlgorithmicMedia", "compositeWithTrainedAlgorithmicMedia"})
BMFF_C2PA_UUID = bytes.fromhex("d8fec3d61b0e483c92975828877ec481")
MAX_TEXT = 200  # longest string kept from a manifest (all of it is the file author's text)
MAX_ITEMS = 10  # most source types and validation codes kept
MAX_ABANDONED = 4  # reads past their time limit still running; beyond, new reads are skipped
_HARD_BINDING_MATCH = frozenset(
    {
        "assertion.dataHash.match",
        "assertion.bmffHash.match",
        "assertion.boxesHash.match",
        "assertion.collectionHash.match",
    }
)
_abandoned = threading.Semaphore(MAX_ABANDONED)


@dataclass(frozen=True)
class ProvenanceLimits:
    """How a manifest is read: time limit, size limit, and the trusted signing anchors (PEM)."""

    timeout_s: float = 2.0
    max_manifest_mb: int = 16
    trust_anchors: str = ""

    @classmethod
    def from_settings(cls, settings: Settings) -> ProvenanceLimits:
        """Returns the limits the settings ask for (the anchors file read once per change)."""
        return cls(
            settings.provenance_timeout_s,
            settings.provenance_max_manifest_mb,
            _anchors(settings.c2pa_trust_anchors),
        )


def _anchors(path: str) -> str:
    if not path:
        return ""
    try:
        return _read_anchors(path, Path(path).stat().st_mtime_ns)
    except OSError as exc:
        logger.error(
            "DFMOD_C2PA_TRUST_ANCHORS: cannot read %s (%s); no signer is trusted", path, exc
        )
        return ""


@functools.lru_cache(maxsize=4)
def _read_anchors(path: str, mtime_ns: int) -> str:
    text = Path(path).read_text(encoding="ascii", errors="replace")
    if "-----BEGIN CERTIFICATE-----" not in text:
        logger.error("DFMOD_C2PA_TRUST_ANCHORS: %s holds no PEM certificate", path)
        return ""
    return text


def read_provenance(data: bytes, limits: ProvenanceLimits) -> dict[str, Any] | None:
    """Returns the summary of the file's C2PA manifest, or None when it carries none."""
    size = manifest_bytes(data)
    if size == 0:
        return None
    if size > limits.max_manifest_mb * 1024 * 1024:
        return _invalid("too_large")
    if not _abandoned.acquire(blocking=False):
        return _invalid("busy")
    _abandoned.release()
    result: list[dict[str, Any] | None] = []
    finished = threading.Event()

    def run() -> None:
        try:
            result.append(_read(data, limits))
        finally:
            finished.set()

    # A daemon thread: native code cannot be interrupted, so a read past its limit is left to
    # finish alone (counted, so that a flood of slow files cannot pile threads up).
    threading.Thread(target=run, name="c2pa-read", daemon=True).start()
    if finished.wait(limits.timeout_s):
        return result[0] if result else _invalid("unreadable")
    if _abandoned.acquire(blocking=False):
        threading.Thread(target=_release_when, args=(finished,), daemon=True).start()
    logger.warning("provenance: reading a manifest took over %.1f s; invalid", limits.timeout_s)
    return _invalid("timeout")


def _release_when(finished: threading.Event) -> None:
    finished.wait()
    _abandoned.release()


def _read(data: bytes, limits: ProvenanceLimits) -> dict[str, Any] | None:
    import c2pa

    try:
        context = c2pa.Context.from_dict(_c2pa_settings(limits))
        reader = c2pa.Reader.try_create(media_type(data), io.BytesIO(data), None, context)
        if reader is None:
            return None
        with reader:
            store = json.loads(reader.json())
            state = reader.get_validation_state()
    except c2pa.C2paError as exc:
        code = type(exc).__name__.removeprefix("_C2pa") or "C2paError"
        logger.info("provenance: unreadable manifest (%s)", code)
        return _invalid(code)
    except Exception:  # a hostile manifest must never fail the submission
        logger.exception("provenance: reading the manifest failed")
        return _invalid("unreadable")
    return summarize(store, state)


def _c2pa_settings(limits: ProvenanceLimits) -> dict[str, Any]:
    verify = {"verify_trust": True, "ocsp_fetch": False, "remote_manifest_fetch": False}
    settings: dict[str, Any] = {
        "verify": verify,
        "core": {
            "allowed_network_hosts": [],
            "max_decompressed_manifest_size_in_mb": limits.max_manifest_mb,
        },
    }
    if limits.trust_anchors:
        settings["trust"] = {"trust_anchors": limits.trust_anchors}
    return settings


def _invalid(error: str) -> dict[str, Any]:
    return {
        "manifest": INVALID,
        "ai_generated": False,
        "digital_source_type": None,
        "digital_source_types": [],
        "claim_generator": None,
        "signer": None,
        "signature_valid": None,
        "hard_binding_valid": None,
        "validation_codes": [],
        "error": error,
    }


def _text(value: Any) -> str | None:
    return None if value is None else str(value)[:MAX_TEXT]


def _source_types(manifest: dict[str, Any]) -> list[str]:
    found = []
    for assertion in manifest.get("assertions") or []:
        if not isinstance(assertion, dict) or not str(assertion.get("label", "")).startswith(
            "c2pa.actions"
        ):
            continue
        for action in (assertion.get("data") or {}).get("actions") or []:
            value = action.get("digitalSourceType") if isinstance(action, dict) else None
            if isinstance(value, str) and value:
                found.append(value.rstrip("/").rsplit("/", 1)[-1][:MAX_TEXT])
    return found


def _claim_generator(manifest: dict[str, Any]) -> str | None:
    infos = manifest.get("claim_generator_info")
    if isinstance(infos, list) and infos and isinstance(infos[0], dict):
        name, version = infos[0].get("name"), infos[0].get("version")
        return _text(f"{name} {version}" if version else name)
    return _text(manifest.get("claim_generator"))


def _codes(results: dict[str, Any], kind: str) -> list[str]:
    return [str(c.get("code")) for c in results.get(kind) or [] if isinstance(c, dict)]


def summarize(store: dict[str, Any], state: str | None) -> dict[str, Any]:
    """Returns the summary of a manifest store as ``c2pa.Reader.json()`` gives it."""
    manifests = store.get("manifests") or {}
    active = manifests.get(store.get("active_manifest")) or {}
    results = (store.get("validation_results") or {}).get("activeManifest") or {}
    success, failure = _codes(results, "success"), _codes(results, "failure")
    # The active manifest first, then its ingredients' (an AI image later edited stays one).
    types = _source_types(active)
    for label, manifest in manifests.items():
        if label != store.get("active_manifest") and isinstance(manifest, dict):
            types += _source_types(manifest)
    ai = [t for t in types if t in AI_SOURCE_TYPES]
    signature = active.get("signature_info") or {}
    signed = "claimSignature.validated" in success and not any(
        c.startswith(("claimSignature.", "signingCredential.invalid", "signingCredential.revoked"))
        for c in failure
    )
    bound = any(c in _HARD_BINDING_MATCH for c in success) and not any(
        c.endswith("Hash.mismatch") or "hardBinding" in c for c in failure
    )
    manifest_state = {"Trusted": VALID, "Valid": UNTRUSTED}.get(state or "", INVALID)
    if not (signed and bound):
        manifest_state = INVALID
    return {
        "manifest": manifest_state,
        "ai_generated": bool(ai),
        "digital_source_type": next(iter(ai or types), None),
        "digital_source_types": list(dict.fromkeys(types))[:MAX_ITEMS],
        "claim_generator": _claim_generator(active),
        "signer": {
            "common_name": _text(signature.get("common_name")),
            "issuer": _text(signature.get("issuer")),
        }
        if signature
        else None,
        "signature_valid": signed,
        "hard_binding_valid": bound,
        "validation_codes": failure[:MAX_ITEMS],
        "error": None,
    }


def media_type(data: bytes) -> str | None:
    """Returns the MIME type of the containers C2PA reads here, or None (let c2pa sniff)."""
    head = data[:16]
    if head.startswith(b"\xff\xd8\xff"):
        return "image/jpeg"
    if head.startswith(b"\x89PNG\r\n\x1a\n"):
        return "image/png"
    if head[:4] == b"RIFF" and head[8:12] == b"WEBP":
        return "image/webp"
    if head[4:8] == b"ftyp":
        return "video/quicktime" if head[8:12] == b"qt  " else "video/mp4"
    if head[:6] in (b"GIF87a", b"GIF89a"):
        return "image/gif"
    return None


def might_carry_manifest(data: bytes) -> bool:
    """Returns whether the container holds a C2PA box where C2PA puts one (headers only)."""
    return manifest_bytes(data) > 0


def manifest_bytes(data: bytes) -> int:
    """Returns the size of the container's C2PA boxes (0: none), from segment headers only."""
    kind = media_type(data)
    if kind == "image/jpeg":
        return _jpeg_app11(data)
    if kind == "image/png":
        return _png_chunk(data)
    if kind == "image/webp":
        return _riff_chunk(data)
    if kind in ("video/mp4", "video/quicktime"):
        return _bmff_uuid(data)
    if kind == "image/gif":
        at = data.find(b"C2PA_GIF")
        return 0 if at < 0 else len(data) - at
    return 0


def _jpeg_app11(data: bytes) -> int:
    i, end, found = 2, len(data), 0
    while i + 4 <= end:
        if data[i] != 0xFF:
            break
        marker = data[i + 1]
        if marker == 0xFF:  # fill byte
            i += 1
            continue
        if marker in (0xDA, 0xD9):  # start of scan, end of image: no more metadata segments
            break
        if marker == 0x01 or 0xD0 <= marker <= 0xD8:
            i += 2
            continue
        length = int.from_bytes(data[i + 2 : i + 4], "big")
        if marker == 0xEB and data[i + 4 : i + 6] == b"JP":  # APP11 carrying JUMBF
            found += length
        i += 2 + length
    return found


def _png_chunk(data: bytes) -> int:
    i, end = 8, len(data)
    while i + 8 <= end:
        length, kind = int.from_bytes(data[i : i + 4], "big"), data[i + 4 : i + 8]
        if kind == b"caBX":
            return length
        if kind == b"IEND":
            break
        i += 12 + length
    return 0


def _riff_chunk(data: bytes) -> int:
    i, end = 12, len(data)
    while i + 8 <= end:
        size = int.from_bytes(data[i + 4 : i + 8], "little")
        if data[i : i + 4] == b"C2PA":
            return size
        i += 8 + size + (size & 1)
    return 0


def _bmff_uuid(data: bytes) -> int:
    i, end = 0, len(data)
    while i + 8 <= end:
        size, kind, header = int.from_bytes(data[i : i + 4], "big"), data[i + 4 : i + 8], 8
        if size == 1:
            size, header = int.from_bytes(data[i + 8 : i + 16], "big"), 16
        elif size == 0:
            size = end - i
        if kind == b"uuid" and data[i + header : i + header + 16] == BMFF_C2PA_UUID:
            return size
        if size < header:
            break
        i += size
    return 0
