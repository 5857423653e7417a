"""Video throughput: a 10 s 720p clip through the whole pipeline, beside the image pipeline.

One run: encodes a 10 s 1280x720 25 fps H.264 clip (moving photo-like content, one cut at 5 s)
with PyAV, measures in-process sampling (decode + scene detection + preprocessing of the sampled
frames), then starts the bundled Triton, the ``dfmod`` worker and API (embedded SQLite) and submits
the clip, then 1 MP JPEG images, one at a time through the real API, printing side by side:
sampled frames/s, seconds of video per wall second, images/s and their ratio.

    python benchmarks/bench_video.py            # about a minute on 2 cores
    python benchmarks/bench_video.py --videos 3 --images 20
"""

from __future__ import annotations

import argparse
import io
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
sys.path.insert(0, str(Path(__file__).resolve().parent))

from bench_decode import encode, photo
from bench_pipeline import started_stack

from moderation.mediahash import video_hash
from moderation.settings import load_settings
from moderation.video import VideoLimits, decode_video, load_video
from tests.fixtures.triton import private_server

SECONDS, FPS, WIDTH, HEIGHT = 10, 25, 1280, 720


def make_clip() -> bytes:
    """Returns the 10 s 720p clip: two photo-like scenes panning slowly, cut at 5 s."""
    import av

    scenes = [np.asarray(photo(WIDTH + 200, HEIGHT, seed=s)) for s in (1, 2)]
    buffer = io.BytesIO()
    with av.open(buffer, mode="w", format="mp4") as out:
        stream: Any = out.add_stream("libx264", rate=FPS, options={"preset": "ultrafast"})
        stream.width, stream.height, stream.pix_fmt = WIDTH, HEIGHT, "yuv420p"
        for i in range(SECONDS * FPS):
            scene = scenes[0 if i < SECONDS * FPS // 2 else 1]
            shift = (i * 2) % 200
            pixels = np.ascontiguousarray(scene[:, shift : shift + WIDTH])
            out.mux(stream.encode(av.VideoFrame.from_ndarray(pixels, format="rgb24")))
        out.mux(stream.encode())
    return buffer.getvalue()


def in_process(clip: bytes, repeats: int) -> tuple[int, float]:
    """Returns (sampled frames, seconds per sampling) for load_video in this process."""
    limits = VideoLimits.from_settings(load_settings(environ={}))
    started = time.perf_counter()
    for _ in range(repeats):
        frames = load_video(clip, limits)
    return len(frames), (time.perf_counter() - started) / repeats


def scorer_decode(clip: bytes, rounds: int) -> tuple[float, float]:
    """Returns the CPU seconds per clip of the scorer's decode with its per-second hashes, as two
    decodes (``load_video`` then ``video_hash``, as before 2026-12-01) and as one
    (``decode_video(hash_seconds=True)``), alternating in this process (median of ``rounds``)."""
    limits = VideoLimits.from_settings(load_settings(environ={}))
    two, one = [], []
    for _ in range(rounds):
        started = time.process_time()
        load_video(clip, limits)
        video_hash(clip, max_seconds=limits.max_seconds)
        two.append(time.process_time() - started)
        started = time.process_time()
        decode_video(clip, limits, hash_seconds=True)
        one.append(time.process_time() - started)
    return float(np.median(two)), float(np.median(one))


def through_stack(stack: Any, items: list[bytes]) -> tuple[float, list[dict]]:
    """Returns (wall seconds, final bodies) submitting the items one at a time."""
    tenant = stack.tenant()
    finals = []
    started = time.perf_counter()
    for data in items:
        response = stack.submit_file(tenant.api_key, data, filename="media")
        assert response.status_code == 202, response.text
        finals.append(stack.wait_final(tenant.api_key, response.json()["id"], timeout_s=120))
    return time.perf_counter() - started, finals


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--videos", type=int, default=3)
    parser.add_argument("--images", type=int, default=20)
    args = parser.parse_args()
    clip = make_clip()
    images = [encode(photo(1152, 864, seed=10 + i), "JPEG") for i in range(args.images)]
    count, sample_s = in_process(clip, 2)
    two_decodes_s, one_decode_s = scorer_decode(clip, 3)
    stack_args = argparse.Namespace(
        worker_concurrency=2, pool=None, backend="embedded", redis_db=14, bank_entries=0
    )
    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp)
        with (
            private_server(root / "t") as server,
            started_stack(stack_args, root / "s", server) as stack,
        ):
            through_stack(stack, [clip, images[0]])  # warm-up: worker imports, Triton load
            video_s, finals = through_stack(stack, [clip] * args.videos)
            image_s, _ = through_stack(stack, images)
    frames = len(finals[0]["verdict"]["video"]["frames"])
    per_video = video_s / args.videos
    print(
        f"clip: {SECONDS} s {WIDTH}x{HEIGHT} {FPS} fps H.264, {len(clip)} bytes, {frames} sampled"
    )
    print("| measure | value |\n| --- | --- |")
    print(f"| in-process sampling (decode all, keep {count}) | {sample_s:.2f} s/clip |")
    print(f"| decoded frames/s in-process | {SECONDS * FPS / sample_s:.0f} |")
    print(
        f"| scorer's decode + per-second hashes, CPU s/clip: two decodes / one | "
        f"{two_decodes_s:.2f} / {one_decode_s:.2f} ({one_decode_s / two_decodes_s:.2f}x) |"
    )
    print(f"| pipeline: s per clip (submit to verdict) | {per_video:.2f} |")
    print(f"| pipeline: sampled frames/s | {frames / per_video:.1f} |")
    print(f"| pipeline: decoded frames/s | {SECONDS * FPS / per_video:.0f} |")
    print(f"| pipeline: seconds of video per wall second | {SECONDS / per_video:.1f} |")
    print(f"| pipeline: images/s (1 MP JPEG, one at a time) | {args.images / image_s:.1f} |")
    ratio = frames / per_video / (args.images / image_s)
    print(f"| ratio sampled frames/s : images/s | {ratio:.2f} |")


if __name__ == "__main__":
    main()
