"""What reading provenance costs the worker, set beside the decoding it does anyway.

For each container (photo-like ~1 MP JPEG, PNG and WebP; a 5 s 640x360 MP4) it times, in the
same process and interleaved, the worker's decode of the bytes (``load_image`` or ``load_video``)
and :func:`moderation.provenance.read_provenance`, without a manifest and with one (signed here
with a freshly made test chain), and prints each as milliseconds and as a share of the decode.
For files without a manifest it also times c2pa's own ``Reader.try_create``, which the header walk
spares the worker. Needs the test extra (``cryptography``) for the signing.

    python benchmarks/bench_provenance.py --repeats 20
"""

from __future__ import annotations

import argparse
import io
import statistics
import sys
import time
from collections.abc import Callable
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
sys.path.insert(0, str(Path(__file__).resolve().parent))

import c2pa
from bench_decode import encode, photo

from moderation.preprocess import load_image
from moderation.provenance import ProvenanceLimits, media_type, read_provenance
from moderation.video import VideoLimits, load_video
from tests.provenance.signing import make_chain, sign
from tests.video.media import encode as encode_video


def median_ms(call: Callable[[], object], repeats: int) -> float:
    """Returns the median wall time of ``call`` in milliseconds (one warm-up call first)."""
    call()
    times = []
    for _ in range(repeats):
        started = time.perf_counter()
        call()
        times.append(time.perf_counter() - started)
    return statistics.median(times) * 1000


def samples() -> dict[str, bytes]:
    """Returns one file per container, none carrying a manifest."""
    image = photo(1280, 800, seed=3)
    video_frames = [photo(640, 360, seed=s) for s in range(4)]
    frames = [np.asarray(video_frames[i // 38]) for i in range(150)]  # 5 s at 30 fps, 4 shots
    return {
        "jpeg 1 MP": encode(image, "JPEG", quality=88),
        "png 1 MP": encode(image, "PNG"),
        "webp 1 MP": encode(image, "WEBP"),
        "mp4 5 s": encode_video(frames, fps=30),
    }


def decoder(data: bytes) -> Callable[[], object]:
    """Returns the worker's decode of these bytes (image or video path)."""
    if media_type(data) == "video/mp4":
        limits = VideoLimits()
        return lambda: load_video(data, limits)
    return lambda: load_image(data)


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--repeats", type=int, default=20, help="timed calls per measurement")
    args = parser.parse_args(argv)
    chain, limits = make_chain(), ProvenanceLimits()
    print(f"c2pa-python {c2pa.__version__}, {args.repeats} calls each, median")
    header = f"{'file':<12} {'decode ms':>10} {'none ms':>9} {'share':>8} {'c2pa ms':>9}"
    print(f"{header} {'signed ms':>10} {'share':>7} {'manifest':>9}")
    for name, data in samples().items():
        mime = media_type(data) or "application/octet-stream"
        signed = sign(data, mime, chain)
        decode = median_ms(decoder(data), max(3, args.repeats // 4))
        none = median_ms(lambda d=data: read_provenance(d, limits), args.repeats)
        native = median_ms(
            lambda d=data, m=mime: c2pa.Reader.try_create(m, io.BytesIO(d)), args.repeats
        )
        with_manifest = median_ms(lambda s=signed: read_provenance(s, limits), args.repeats)
        state = (read_provenance(signed, limits) or {}).get("manifest")
        print(
            f"{name:<12} {decode:>10.2f} {none:>9.4f} {none / decode:>8.4%} {native:>9.2f} "
            f"{with_manifest:>10.2f} {with_manifest / decode:>7.1%} {state!s:>9}"
        )


if __name__ == "__main__":
    main()
