"""Perceptual hashes of media: PDQ for images, vPDQ-style per-second PDQ for videos.

256 bits and a quality (below :data:`MIN_QUALITY` too flat to mean much) per picture, computed on
the decoded picture before the model's resize; matching is in :mod:`moderation.bank_index`.
"""

from __future__ import annotations

import io
import logging
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from typing import Any

import numpy as np
from PIL import Image

logger = logging.getLogger(__name__)

PDQ = "pdq"
VPDQ = "vpdq"
HASH_HEX_CHARS = 64
# Pictures are hashed at most this large on their longer side: PDQ reduces every picture to 64x64
# anyway, and a 12-megapixel photo would otherwise cost about two seconds of CPU (docs/design.md).
MAX_SIDE = 256
# PDQ's own guidance: hashes of quality below 50 are unreliable for matching.
MIN_QUALITY = 50
_BITS = 1 << np.arange(7, -1, -1, dtype=np.uint8)


class InvalidHash(ValueError):
    """A text that is not a PDQ hash (64 hexadecimal characters)."""


@dataclass(frozen=True)
class PdqHash:
    """One PDQ hash as 64 lower-case hex characters, and its quality (0-100)."""

    hex: str
    quality: int

    def to_json(self) -> dict[str, Any]:
        """Returns ``{"pdq": hex, "quality": q}``."""
        return {"pdq": self.hex, "quality": self.quality}


@dataclass(frozen=True)
class FrameHash:
    """The PDQ hash of a video's frame at ``timestamp_s``."""

    timestamp_s: float
    hash: PdqHash


@dataclass(frozen=True)
class MediaHash:
    """What the worker stores for a submission: PDQ (images) or per-second frames (videos)."""

    signal_type: str  # PDQ or VPDQ
    pdq: PdqHash | None  # images; for videos the first frame's hash
    frames: tuple[FrameHash, ...] = ()

    def frames_json(self) -> list[dict[str, Any]] | None:
        """Returns the frames as stored (None for images)."""
        if self.signal_type != VPDQ:
            return None
        return [
            {"t": f.timestamp_s, "pdq": f.hash.hex, "quality": f.hash.quality} for f in self.frames
        ]


def normalize_hex(text: str) -> str:
    """Returns a PDQ hash's 64 lower-case hex characters; raises :class:`InvalidHash`."""
    value = text.strip().lower()
    if len(value) != HASH_HEX_CHARS or any(c not in "0123456789abcdef" for c in value):
        shown = value[:80]
        raise InvalidHash(f"{shown!r} is not a PDQ hash; expected 64 hexadecimal characters")
    return value


def hex_to_bytes(text: str) -> np.ndarray:
    """Returns the 32 bytes of a hex PDQ hash as uint8 (faiss' binary vector layout)."""
    return np.frombuffer(bytes.fromhex(normalize_hex(text)), dtype=np.uint8)


def hamming(a: str, b: str) -> int:
    """Returns the Hamming distance between two hex PDQ hashes."""
    return int(bin(int(normalize_hex(a), 16) ^ int(normalize_hex(b), 16)).count("1"))


def _bits_to_hex(bits: np.ndarray) -> str:
    packed = (bits.astype(np.uint8).reshape(32, 8) * _BITS).sum(axis=1).astype(np.uint8)
    return bytes(packed).hex()


def _rgb_array(image: Image.Image) -> np.ndarray:
    if image.mode != "RGB":
        image = image.convert("RGB")
    if max(image.size) > MAX_SIDE:
        scale = MAX_SIDE / max(image.size)
        size = (max(1, round(image.width * scale)), max(1, round(image.height * scale)))
        image = image.resize(size, Image.Resampling.BILINEAR, reducing_gap=2.0)
    return np.ascontiguousarray(np.asarray(image, dtype=np.uint8))


def image_pdq(image: Image.Image) -> PdqHash:
    """Returns the PDQ hash and quality of a decoded picture."""
    import pdqhash

    bits, quality = pdqhash.compute(_rgb_array(image))
    return PdqHash(_bits_to_hex(bits), int(quality))


def bytes_pdq(data: bytes) -> PdqHash:
    """Returns the PDQ hash of image bytes (upright first frame), e.g. for ``dfmod bank add``."""
    from moderation.preprocess import decode_image

    image, _fmt = decode_image(data)
    return image_pdq(image)


class SecondSampler:
    """vPDQ's sampling: the PDQ hash of the first frame at or after each whole second, up to
    ``max_seconds``. Fed frame by frame (:func:`video_hash`, and the scorer's one decode of a
    video in :func:`moderation.video.decode_video`); a frame that cannot be hashed abandons the
    whole hash (no hash only means no match)."""

    def __init__(self, max_seconds: float) -> None:
        self.max_seconds = max_seconds
        self.next_second = 0.0
        self.frames: list[FrameHash] = []
        self.abandoned = False

    def wants(self, t: float) -> bool:
        """Returns whether the frame at ``t`` seconds is to be hashed."""
        return not self.abandoned and t <= self.max_seconds and t + 1e-6 >= self.next_second

    def take(self, t: float, image: Image.Image) -> None:
        """Hashes the frame at ``t`` seconds."""
        self.run(lambda: self.frames.append(FrameHash(round(t, 3), image_pdq(image))))
        # The same tolerance as wants(): 10 GIF frames of 100 ms add up to 0.9999999 s.
        self.next_second = float(int(t + 1e-6) + 1)

    def abandon(self, exc: BaseException) -> None:
        """Gives the hash up (a frame could not be decoded or hashed)."""
        logger.warning("no video hash: %s", type(exc).__name__)
        self.abandoned = True

    def run(self, feed: Callable[[], object]) -> None:
        """Runs ``feed``, which hashes frames into this sampler; what it raises gives the hash
        up instead (hostile media must not fail a scoring that succeeds)."""
        try:
            feed()
        except Exception as exc:
            self.abandon(exc)

    def media_hash(self) -> MediaHash | None:
        """Returns the per-second hashes, or None when there are none or the hash was given up."""
        if self.abandoned or not self.frames:
            return None
        return MediaHash(VPDQ, self.frames[0].hash, tuple(self.frames))


def hash_container_frames(
    frames: Iterable[Any], seconds: SecondSampler, start: float | None = None
) -> None:
    """Feeds decoded PyAV frames to ``seconds`` until they end or pass ``max_seconds``; times
    count from ``start`` (the first frame's time when None)."""
    for frame in frames:
        if frame.time is None:
            continue
        start = frame.time if start is None else start
        t = float(frame.time - start)
        if t > seconds.max_seconds:
            return
        if seconds.wants(t):
            seconds.take(t, frame.to_image())


def frame_seconds(image: Image.Image) -> float:
    """Returns how long an animation's current frame shows (100 ms when it does not say)."""
    return float(image.info.get("duration") or 100) / 1000


def hash_animation_frames(
    image: Image.Image,
    seconds: SecondSampler,
    *,
    first: int = 0,
    elapsed: float = 0.0,
    seek: Callable[[int], object] | None = None,
) -> None:
    """Feeds an animated image's frames from ``first`` (shown at ``elapsed`` seconds) to
    ``seconds`` until they end or pass ``max_seconds``; ``seek`` moves to a frame (the image's
    own ``seek`` when None; the scorer's checks each frame's size first)."""
    move = seek or image.seek
    for index in range(first, int(getattr(image, "n_frames", 1))):
        if elapsed > seconds.max_seconds:
            return
        move(index)
        if seconds.wants(elapsed):
            seconds.take(elapsed, image)
        elapsed += frame_seconds(image)


def _container_frames(data: bytes, seconds: SecondSampler) -> None:
    import av

    with av.open(io.BytesIO(data), mode="r") as container:
        hash_container_frames(container.decode(container.streams.video[0]), seconds)


def _animation_frames(data: bytes, seconds: SecondSampler) -> None:
    with Image.open(io.BytesIO(data)) as image:
        hash_animation_frames(image, seconds)


def video_hash(data: bytes, *, max_seconds: float) -> MediaHash | None:
    """Returns one PDQ hash per second of a video (vPDQ's sampling), or None when it cannot be
    decoded (a missing hash only means no match). The scorer takes the same hashes during its own
    decode (:func:`moderation.video.decode_video`); this is for videos it does not score."""
    from moderation.video import sniff_video

    seconds = SecondSampler(max_seconds)
    source = _container_frames if sniff_video(data) else _animation_frames
    seconds.run(lambda: source(data, seconds))
    return seconds.media_hash()
