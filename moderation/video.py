"""Video submissions: sniffing, bounded frame sampling and the frame → video score rule.

PyAV for MP4/MOV and WebM/Matroska, Pillow for animated GIF/WebP; uniform frames plus scene changes,
streamed with limits checked before and while decoding (docs/design.md, "Video submissions").
"""

from __future__ import annotations

import functools
import io
import logging
import math
import re
import warnings
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import numpy as np
from PIL import Image

from moderation.contract import INPUT_SIZE
from moderation.faces import Crop, face_crops
from moderation.mediahash import (
    MediaHash,
    SecondSampler,
    frame_seconds,
    hash_animation_frames,
    hash_container_frames,
)
from moderation.preprocess import (
    TOO_LARGE,
    UNREADABLE_MEDIA,
    UNSUPPORTED_MEDIA,
    MediaRejected,
    bomb_refused,
    image_to_input,
    sniff_still_brand,
)

if TYPE_CHECKING:
    from moderation.settings import Settings

logger = logging.getLogger(__name__)

THUMB = 32


@dataclass(frozen=True)
class VideoLimits:
    """What :func:`load_video` accepts; built from settings by the worker."""

    enabled: bool = True
    max_bytes: int = 20 * 1024 * 1024
    max_seconds: float = 600.0
    max_pixels: int = 3840 * 2160
    max_streams: int = 8
    max_frames: int = 32
    scene_threshold: float = 30.0
    faces: int = 0  # largest faces per frame also scored as crops; 0: off
    size: int = INPUT_SIZE

    @classmethod
    def from_settings(cls, settings: Settings) -> VideoLimits:
        """Returns the limits configured in a :class:`moderation.settings.Settings`."""
        return cls(
            enabled=bool(settings.video_enabled),
            max_bytes=settings.max_upload_bytes,
            max_seconds=settings.max_video_seconds,
            max_pixels=settings.max_video_pixels,
            max_streams=settings.max_video_streams,
            max_frames=settings.max_video_frames,
            scene_threshold=settings.video_scene_threshold,
            faces=settings.video_faces,
        )


@dataclass(frozen=True)
class Frame:
    """One sampled frame: its time in seconds, the model input, why it was kept, face crops."""

    timestamp: float
    pixels: np.ndarray
    scene_change: bool
    crops: tuple[Crop, ...] = ()
    size: tuple[int, int] = (0, 0)  # the decoded frame's width and height (explanation boxes)


def _frame(timestamp: float, image: Image.Image, change: bool, limits: VideoLimits) -> Frame:
    pixels = image_to_input(image, size=limits.size, what="video frame")
    crops = face_crops(image, count=limits.faces, size=limits.size) if limits.faces else ()
    return Frame(round(timestamp, 3), pixels, change, crops, image.size)


def sniff_video(data: bytes) -> str | None:
    """Returns "MP4/MOV" or "WebM" for video container bytes, else None."""
    if data[4:8] == b"ftyp" and sniff_still_brand(data) is None:
        return "MP4/MOV"
    if data[:4] == b"\x1a\x45\xdf\xa3":
        return "WebM"
    return None


def _animated_frames(data: bytes) -> int:
    """Returns the frame count of a GIF/WebP (1 for anything else or unreadable)."""
    is_gif = data[:6] in (b"GIF87a", b"GIF89a")
    if not (is_gif or (data[:4] == b"RIFF" and data[8:12] == b"WEBP")):
        return 1
    try:
        with Image.open(io.BytesIO(data), formats=["GIF" if is_gif else "WEBP"]) as image:
            return int(getattr(image, "n_frames", 1)) if getattr(image, "is_animated", False) else 1
    except Exception:  # the image path reports unreadable pictures with its own reason
        return 1


def is_video(data: bytes, limits: VideoLimits) -> bool:
    """Returns whether the bytes take the video path (containers, multi-frame GIF/WebP)."""
    if not limits.enabled:
        return False
    return sniff_video(data) is not None or _animated_frames(data) > 1


class Sampler:
    """Decides which decoded frames to keep: uniform positions, then scene changes.

    ``total`` is the length in the unit of ``position`` (seconds, or frame indices for animated
    images); None means unknown, and the uniform step is then one per second. A quarter of the
    cap (at least one) is reserved for scene changes; unused scene slots are not back-filled.
    """

    def __init__(self, *, total: float | None, max_frames: int, threshold: float) -> None:
        self.scene_budget = max_frames // 4 if max_frames >= 4 else 0
        self.uniform = max(1, max_frames - self.scene_budget)
        self.step = total / self.uniform if total and total > 0 else 1.0
        self.next_at = 0.0
        self.taken = 0
        self.threshold = threshold
        self.previous: np.ndarray | None = None

    def offer(self, position: float, thumb: np.ndarray) -> tuple[bool, bool]:
        """Returns (keep, is_scene_change) for a frame at ``position`` with its gray thumbnail."""
        thumb = thumb.astype(np.int16)
        change = self.previous is not None and (
            float(np.abs(thumb - self.previous).mean()) > self.threshold
        )
        self.previous = thumb
        if position >= self.next_at and self.taken < self.uniform:
            self.taken += 1
            self.next_at = self.taken * self.step
            return True, change
        if change and self.scene_budget > 0:
            self.scene_budget -= 1
            return True, True
        return False, False

    @property
    def done(self) -> bool:
        """Returns whether nothing more can be kept (decoding may stop)."""
        return self.taken >= self.uniform and self.scene_budget == 0


def _too_large(detail: str) -> MediaRejected:
    return MediaRejected(TOO_LARGE, detail)


def _check_size(width: int, height: int, limits: VideoLimits) -> None:
    if width < 1 or height < 1:
        raise MediaRejected(UNREADABLE_MEDIA, f"the video is {width}x{height}; expected pixels")
    if width * height > limits.max_pixels:
        raise _too_large(
            f"the video is {width}x{height} = {width * height} pixels per frame; "
            f"expected at most {limits.max_pixels}"
        )


def _check_duration(seconds: float | None, limits: VideoLimits) -> None:
    if seconds is not None and seconds > limits.max_seconds:
        raise _too_large(f"the video lasts {seconds:.1f} s; expected at most {limits.max_seconds}")


def _container_frames(
    data: bytes, limits: VideoLimits, seconds: SecondSampler | None
) -> Iterator[Frame]:
    import av  # imported lazily: API processes never decode video

    try:
        container = av.open(io.BytesIO(data), mode="r")
    except (av.FFmpegError, ValueError, OSError) as exc:
        raise MediaRejected(UNREADABLE_MEDIA, f"cannot parse the container: {exc}") from exc
    with container:
        if len(container.streams) > limits.max_streams:
            raise _too_large(
                f"the container has {len(container.streams)} streams; "
                f"expected at most {limits.max_streams}"
            )
        if not container.streams.video:
            kinds = ", ".join(s.type for s in container.streams) or "none"
            raise MediaRejected(UNSUPPORTED_MEDIA, f"no video stream (streams: {kinds})")
        stream = container.streams.video[0]
        _check_size(stream.codec_context.width, stream.codec_context.height, limits)
        # FFmpeg refuses a frame above this before allocating it ("Picture size … is invalid"):
        # a later frame may declare a size the stream's header does not.
        stream.codec_context.options = {"max_pixels": str(limits.max_pixels)}
        length = _duration(container, stream)
        _check_duration(length, limits)
        sampler = Sampler(
            total=length, max_frames=limits.max_frames, threshold=limits.scene_threshold
        )
        yield from _refusing_bad_frames(
            _sampled(container, stream, sampler, limits, seconds), limits
        )


def _duration(container: Any, stream: Any) -> float | None:
    if stream.duration is not None and stream.time_base is not None:
        return float(stream.duration * stream.time_base)
    if container.duration is not None:
        return float(container.duration) / 1_000_000
    return None


_PICTURE_SIZE = re.compile(r"Picture size \d+x\d+ (is invalid|exceeds)|Invalid image size")


def _oversized(logs: list[tuple[int, str, str]]) -> str | None:
    """Returns FFmpeg's complaint about a frame's size among captured log lines, if any."""
    for _level, _name, message in logs:
        if _PICTURE_SIZE.search(message):
            return message.strip()
    return None


def _refusing_bad_frames(frames: Iterator[Frame], limits: VideoLimits) -> Iterator[Frame]:
    """Yields ``frames`` (a decoding generator), turning what FFmpeg refuses while they are
    decoded into :class:`MediaRejected`: ``too_large`` for an oversized frame, else corrupt."""
    import av
    import av.logging

    _capture_errors()
    logs: list[tuple[int, str, str]] = []
    try:
        with av.logging.Capture() as logs:
            yield from frames
    except MemoryError as exc:
        raise bomb_refused(exc, "video frame") from exc
    except av.FFmpegError as exc:
        complaint = _oversized([*logs, (0, "", str(exc))])
        if complaint is not None:
            raise _too_large(
                f"a video frame is larger than allowed ({complaint}); "
                f"expected at most {limits.max_pixels} pixels"
            ) from exc
        raise MediaRejected(UNREADABLE_MEDIA, f"the video data is corrupt: {exc}") from exc


@functools.cache
def _capture_errors() -> None:
    """Lets FFmpeg's error lines through to PyAV (off by default), so a refused frame size can
    be told from corrupt data."""
    import av.logging

    if av.logging.get_level() is None:
        av.logging.set_level(av.logging.ERROR)


def _sampled(
    container: Any,
    stream: Any,
    sampler: Sampler,
    limits: VideoLimits,
    seconds: SecondSampler | None,
) -> Iterator[Frame]:
    start: float | None = None
    frames = container.decode(stream)
    for frame in frames:
        if frame.time is None:
            continue
        start = frame.time if start is None else start
        t = float(frame.time - start)
        _check_duration(t, limits)  # the header may lie about the length
        _check_size(frame.width, frame.height, limits)
        thumb = frame.reformat(width=THUMB, height=THUMB, format="gray").to_ndarray()
        keep, change = sampler.offer(t, thumb)
        hashed = seconds is not None and seconds.wants(t)
        if keep or hashed:
            image = frame.to_image()
            if seconds is not None and hashed:
                seconds.take(t, image)
            if keep:
                yield _frame(t, image, change, limits)
        if sampler.done:
            if seconds is not None:  # the rest is decoded only to hash: a failure ends the hash
                seconds.run(functools.partial(hash_container_frames, frames, seconds, start))
            return


def _seek_frame(image: Image.Image, index: int, limits: VideoLimits) -> None:
    """Decodes frame ``index`` once its declared size is known to be within the limits: a GIF
    frame may declare a larger canvas than the file's header (Pillow then grows the image)."""
    try:
        image.seek(index)
        _check_size(image.width, image.height, limits)
        for tile in getattr(image, "tile", ()):  # an ImageFile's pending decoder tiles
            x0, y0, x1, y1 = tile[1]
            _check_size(max(x1 - x0, 1), max(y1 - y0, 1), limits)
        image.load()
    except MediaRejected:
        raise
    except (Image.DecompressionBombError, MemoryError) as exc:
        raise bomb_refused(exc, f"animation frame {index}") from exc
    except (OSError, EOFError, ValueError, SyntaxError, RuntimeError) as exc:
        raise MediaRejected(UNREADABLE_MEDIA, f"the animation is corrupt: {exc}") from exc


def _animated_image_frames(
    data: bytes, limits: VideoLimits, seconds: SecondSampler | None
) -> Iterator[Frame]:
    try:
        with warnings.catch_warnings():  # the limits below decide, not Pillow's warning
            warnings.simplefilter("ignore", Image.DecompressionBombWarning)
            image = Image.open(io.BytesIO(data), formats=["GIF", "WEBP"])
            _check_size(image.width, image.height, limits)
            count = int(getattr(image, "n_frames", 1))
    except MediaRejected:
        raise
    except (Image.DecompressionBombError, MemoryError) as exc:
        raise bomb_refused(exc, "animation") from exc
    except (OSError, SyntaxError, ValueError, EOFError, RuntimeError) as exc:
        raise MediaRejected(UNREADABLE_MEDIA, f"cannot parse the animation: {exc}") from exc
    sampler = Sampler(total=count, max_frames=limits.max_frames, threshold=limits.scene_threshold)
    elapsed = 0.0
    with image, warnings.catch_warnings():
        warnings.simplefilter("ignore", Image.DecompressionBombWarning)
        for index in range(count):
            _seek_frame(image, index, limits)
            thumb = np.asarray(image.convert("L").resize((THUMB, THUMB)), dtype=np.uint8)
            keep, change = sampler.offer(index, thumb)
            if seconds is not None and seconds.wants(elapsed):
                seconds.take(elapsed, image)
            if keep:
                yield _frame(elapsed, image, change, limits)
            elapsed += frame_seconds(image)
            _check_duration(elapsed, limits)
            if sampler.done:
                if seconds is not None:  # the rest is seeked only to hash: a failure ends the hash
                    _hash_rest_of_animation(image, index + 1, elapsed, seconds, limits)
                return


def _hash_rest_of_animation(
    image: Image.Image, first: int, elapsed: float, seconds: SecondSampler, limits: VideoLimits
) -> None:
    seconds.run(
        lambda: hash_animation_frames(
            image,
            seconds,
            first=first,
            elapsed=elapsed,
            seek=lambda index: _seek_frame(image, index, limits),
        )
    )


@dataclass(frozen=True)
class DecodedVideo:
    """A video's sampled frames, and its per-second hashes when they were asked for."""

    frames: list[Frame]
    media: MediaHash | None = None


def decode_video(data: bytes, limits: VideoLimits, *, hash_seconds: bool = False) -> DecodedVideo:
    """Returns the sampled frames of a video (at most ``limits.max_frames``), in time order, and
    with ``hash_seconds`` its vPDQ-style hashes (:class:`moderation.mediahash.SecondSampler`)
    from the same decode: decoding goes on past the last sampled frame only to hash, and what
    fails there gives up the hash, not the frames.

    Raises :class:`MediaRejected`: ``too_large`` past a limit, ``unsupported_media`` for a
    container without video, ``unreadable_media`` for corrupt data or no decodable frame.
    """
    if not data:
        raise MediaRejected(UNREADABLE_MEDIA, "the file is empty; expected a video")
    if len(data) > limits.max_bytes:
        raise _too_large(f"the file has {len(data)} bytes; expected at most {limits.max_bytes}")
    seconds = SecondSampler(limits.max_seconds) if hash_seconds else None
    source = _container_frames if sniff_video(data) else _animated_image_frames
    frames = list(source(data, limits, seconds))
    if not frames:
        raise MediaRejected(UNREADABLE_MEDIA, "no decodable video frame; expected at least one")
    logger.debug("sampled %d frames", len(frames))
    return DecodedVideo(frames, seconds.media_hash() if seconds is not None else None)


def load_video(data: bytes, limits: VideoLimits) -> list[Frame]:
    """Returns the sampled frames of a video (:func:`decode_video` without the hashes)."""
    return decode_video(data, limits).frames


def frame_png(data: bytes, limits: VideoLimits, timestamp: float) -> bytes:
    """Returns the sampled frame at ``timestamp`` (the 224x224 model input) as PNG.

    Resampled with the same limits the worker used; a frame that is not sampled any more (the
    settings changed since) raises LookupError rather than showing a different frame.
    """
    for frame in load_video(data, limits):
        if abs(frame.timestamp - timestamp) < 1e-6:
            buffer = io.BytesIO()
            Image.fromarray(frame.pixels, "RGB").save(buffer, format="PNG")
            return buffer.getvalue()
    raise LookupError(f"no sampled frame at {timestamp} s with the current video settings")


def top_k(count: int) -> int:
    """Returns how many of the highest frame scores make the video's score: ceil(n / 4), >= 1."""
    return max(1, math.ceil(count / 4))


def aggregate(scores: Sequence[float]) -> tuple[float, list[int]]:
    """Returns (video p_fake, indices of the frames that drove it, highest first).

    The rule: the mean of the top-k calibrated frame scores, k = ceil(n / 4). A short fake
    segment is not averaged away by many clean frames, and one noisy frame alone cannot flag a
    long clip. Ties keep time order.
    """
    if not scores:
        raise ValueError("aggregate needs at least one frame score")
    order = sorted(range(len(scores)), key=lambda i: (-scores[i], i))
    chosen = order[: top_k(len(scores))]
    return float(np.mean([scores[i] for i in chosen])), chosen
