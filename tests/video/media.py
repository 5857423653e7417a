"""Short videos the tests encode themselves with PyAV (no files, no downloads)."""

from __future__ import annotations

import io
from fractions import Fraction
from typing import Any

import av
import numpy as np
from PIL import Image


def colour_frames(count: int, *, size: int = 64, change_at: int | None = None) -> list[np.ndarray]:
    """Returns RGB frames with a little texture; the colour jumps at ``change_at`` (a new scene)."""
    rng = np.random.default_rng(0)
    frames = []
    for i in range(count):
        base = (230, 220, 40) if change_at is not None and i >= change_at else (20, 30, 90)
        noise = rng.integers(0, 8, size=(size, size, 3))
        frames.append(np.clip(np.array(base) + noise, 0, 255).astype(np.uint8))
    return frames


def encode(
    frames: list[np.ndarray], *, fps: int = 10, fmt: str = "mp4", audio: bool = False
) -> bytes:
    """Returns the frames encoded as MP4 (h264), MOV or WebM (vp8), optionally with audio."""
    codec = {"mp4": "libx264", "mov": "libx264", "webm": "libvpx"}[fmt]
    buffer = io.BytesIO()
    with av.open(buffer, mode="w", format=fmt) as out:
        stream: Any = out.add_stream(codec, rate=fps)
        stream.height, stream.width = frames[0].shape[:2]
        stream.pix_fmt = "yuv420p"
        if audio:
            _add_silence(out, len(frames) / fps)
        for pixels in frames:
            for packet in stream.encode(av.VideoFrame.from_ndarray(pixels, format="rgb24")):
                out.mux(packet)
        for packet in stream.encode():
            out.mux(packet)
    return buffer.getvalue()


def _add_silence(out: av.container.OutputContainer, seconds: float) -> None:
    audio: Any = out.add_stream("aac", rate=8000)
    frame = av.AudioFrame.from_ndarray(
        np.zeros((1, int(8000 * seconds)), dtype=np.float32), format="fltp", layout="mono"
    )
    frame.sample_rate, frame.pts, frame.time_base = 8000, 0, Fraction(1, 8000)
    for packet in audio.encode(frame):
        out.mux(packet)
    for packet in audio.encode():
        out.mux(packet)


def audio_only(seconds: float = 1.0) -> bytes:
    """Returns an MP4 with one AAC stream and no video."""
    buffer = io.BytesIO()
    with av.open(buffer, mode="w", format="mp4") as out:
        _add_silence(out, seconds)
    return buffer.getvalue()


def animated(frames: list[np.ndarray], *, fmt: str = "GIF", duration_ms: int = 100) -> bytes:
    """Returns an animated GIF or WebP of the frames."""
    images = [Image.fromarray(f, "RGB") for f in frames]
    buffer = io.BytesIO()
    images[0].save(
        buffer, format=fmt, save_all=True, append_images=images[1:], duration=duration_ms, loop=0
    )
    return buffer.getvalue()
