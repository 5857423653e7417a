"""Bank matching at scale, and how far PDQ hashes move under re-uploads.

``index``: builds the faiss multi-index-hashing index (:class:`moderation.bank_index.HashIndex`)
over N random PDQ hashes plus the true matches, then times single lookups of near copies (each a
bank hash with up to 31 random bits flipped: must be found) and of random hashes (must find
nothing), and reports the build time, the memory the index added (RSS) and p50/p99 lookup.
``--sql`` also times the full :meth:`BankMatcher.match` (generation check + index + reading the
candidates back) over an SQLite bank of the same size.

``robustness``: PDQ distance between a photo and its re-encoded, resized and lightly cropped
copies, over the demo generator's camera-style photos.

    python benchmarks/bench_banks.py index --hashes 1000000 --queries 2000
    python benchmarks/bench_banks.py robustness --images 200
    python benchmarks/bench_banks.py hashcost
"""

from __future__ import annotations

import argparse
import io
import os
import resource
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

import numpy as np
from PIL import Image

from moderation.bank_index import SPLITS, HashIndex

MAX_DISTANCE = 31


def _rss_mb() -> float:
    with open("/proc/self/statm") as handle:
        return int(handle.read().split()[1]) * os.sysconf("SC_PAGE_SIZE") / 2**20


def _flip(codes: np.ndarray, rng: np.random.Generator, most: int) -> np.ndarray:
    """Returns copies of hashes with 0..most random bits flipped each."""
    out = codes.copy()
    for row in out:
        for bit in rng.choice(256, size=int(rng.integers(0, most + 1)), replace=False):
            row[bit // 8] ^= 1 << (bit % 8)
    return out


def _percentiles(seconds: list[float]) -> str:
    ms = np.asarray(seconds) * 1000
    p50, p99 = np.percentile(ms, 50), np.percentile(ms, 99)
    return f"p50 {p50:.3f} ms  p99 {p99:.3f} ms  max {ms.max():.3f} ms"


def _time(calls: list[Callable[[], object]]) -> tuple[list[float], list[float], list[object]]:
    """Returns each call's wall time, its CPU time (this thread) and its result."""
    seconds, cpu, results = [], [], []
    for call in calls:
        started, cpu_started = time.perf_counter(), time.thread_time()
        results.append(call())
        cpu.append(time.thread_time() - cpu_started)
        seconds.append(time.perf_counter() - started)
    return seconds, cpu, results


def bench_index(hashes: int, queries: int, seed: int, sql: bool, chunks: int) -> None:
    import faiss

    faiss.omp_set_num_threads(1)
    rng = np.random.default_rng(seed)
    codes = rng.integers(0, 256, size=(hashes, 32), dtype=np.uint8)
    before = _rss_mb()
    started = time.perf_counter()
    index = HashIndex(MAX_DISTANCE, chunks)
    for start in range(0, hashes, 100_000):
        stop = min(start + 100_000, hashes)
        index.add(np.arange(start, stop, dtype=np.int64), codes[start:stop])
    build_s = time.perf_counter() - started
    added_mb = _rss_mb() - before
    targets = rng.integers(0, hashes, size=queries)
    near = _flip(codes[targets], rng, MAX_DISTANCE)
    strangers = rng.integers(0, 256, size=(queries, 32), dtype=np.uint8)
    near_s, near_cpu, near_found = _time([lambda q=q: index.search(q) for q in near])
    far_s, far_cpu, far_found = _time([lambda q=q: index.search(q) for q in strangers])
    recall = np.mean(
        [int(t) in {i for i, _ in f} for t, f in zip(targets, near_found, strict=True)]
    )
    false = sum(bool(f) for f in far_found)
    split = f"{chunks} x {SPLITS[chunks]} bits"
    print(f"index: {hashes:,} random PDQ hashes, faiss IndexBinaryMultiHash ({split})")
    print(f"  load average {os.getloadavg()[0]:.1f} on {os.cpu_count()} CPUs at the start")
    print(
        f"  build {build_s:.1f} s, index memory (RSS added) {added_mb:.0f} MB, peak RSS "
        f"{resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024:.0f} MB"
    )
    print(
        f"  near copies (<= {MAX_DISTANCE} bits) wall {_percentiles(near_s)}, recall {recall:.4f}"
    )
    print(f"                              CPU {_percentiles(near_cpu)}")
    print(f"  random hashes              wall {_percentiles(far_s)}, matches {false}")
    print(f"                              CPU {_percentiles(far_cpu)}")
    if sql:
        bench_matcher(codes, near[: min(queries, 500)], rng)


def fill_bank(url: str, codes: np.ndarray, *, name: str = "bench-fake") -> None:
    """Adds a shared fake bank holding ``codes`` to a migrated database (one transaction)."""
    from sqlalchemy import insert

    from moderation.bank_models import BankEntry
    from moderation.banks import bump_generation, create_bank
    from moderation.db import make_engine, make_session_factory, session_scope
    from moderation.mediahash import PDQ

    engine = make_engine(url)
    try:
        with session_scope(make_session_factory(engine)) as s:
            bank = create_bank(session=s, name=name, verdict="fake").id
            generation = bump_generation(s)
            for start in range(0, len(codes), 50_000):
                rows = [
                    {"bank_id": bank, "signal_type": PDQ, "pdq": bytes(c).hex(), "quality": 100,
                     "source": "import", "added_generation": generation}
                    for c in codes[start : start + 50_000]
                ]  # fmt: skip
                s.execute(insert(BankEntry), rows)
    finally:
        engine.dispose()


def bench_matcher(codes: np.ndarray, near: np.ndarray, rng: np.random.Generator) -> None:
    """Times BankMatcher.match end to end over an SQLite bank holding ``codes``."""
    from moderation.bank_index import BankMatcher
    from moderation.db import make_engine, make_session_factory, migrate, session_scope
    from moderation.mediahash import PDQ, MediaHash, PdqHash
    from moderation.tenants import create_tenant

    folder = tempfile.mkdtemp(prefix="bench-banks-")
    url = f"sqlite:///{Path(folder) / 'banks.db'}"
    migrate(url)
    fill_bank(url, codes)
    factory = make_session_factory(make_engine(url))
    with session_scope(factory) as s:
        tenant = create_tenant(session=s, name="bench").tenant_id
    matcher = BankMatcher(session_factory=factory)
    started = time.perf_counter()
    matcher.sync()
    load_s = time.perf_counter() - started
    queries = [MediaHash(PDQ, PdqHash(bytes(q).hex(), 100)) for q in near]
    seconds, cpu, found = _time(
        [lambda m=m: matcher.match(media=m, tenant_id=tenant) for m in queries]
    )
    hit = np.mean([f is not None for f in found])
    print(f"  BankMatcher over SQLite: load {load_s:.1f} s, found {hit:.4f}")
    print(f"    match (generation check + index + SQL read-back) wall {_percentiles(seconds)}")
    print(f"                                                      CPU {_percentiles(cpu)}")


EDITS: dict[str, Callable[[Image.Image], bytes]] = {}


def _jpeg(image: Image.Image, quality: int) -> bytes:
    buffer = io.BytesIO()
    image.save(buffer, format="JPEG", quality=quality)
    return buffer.getvalue()


def _resized(image: Image.Image, scale: float) -> Image.Image:
    return image.resize((round(image.width * scale), round(image.height * scale)), Image.BICUBIC)


def _cropped(image: Image.Image, share: float) -> Image.Image:
    dx, dy = round(image.width * share / 2), round(image.height * share / 2)
    return image.crop((dx, dy, image.width - dx, image.height - dy))


EDITS = {
    "re-encode JPEG q60": lambda im: _jpeg(im, 60),
    "re-encode JPEG q30": lambda im: _jpeg(im, 30),
    "resize 70 %": lambda im: _jpeg(_resized(im, 0.7), 95),
    "resize 50 %": lambda im: _jpeg(_resized(im, 0.5), 95),
    "q60 + resize 70 %": lambda im: _jpeg(_resized(im, 0.7), 60),
    "crop 1 % (0.5 % per side)": lambda im: _jpeg(_cropped(im, 0.01), 95),
    "crop 2 %": lambda im: _jpeg(_cropped(im, 0.02), 95),
    "crop 5 %": lambda im: _jpeg(_cropped(im, 0.05), 95),
    "crop 10 %": lambda im: _jpeg(_cropped(im, 0.10), 95),
    "crop 20 %": lambda im: _jpeg(_cropped(im, 0.20), 95),
    "q60 + resize 70 % + crop 2 %": lambda im: _jpeg(_cropped(_resized(im, 0.7), 0.02), 60),
}


def bench_robustness(images: int, size: int, seed: int) -> None:
    from moderation.mediahash import bytes_pdq, hamming
    from training.demo_data import make_real

    distances: dict[str, list[int]] = {name: [] for name in EDITS}
    unrelated: list[int] = []
    previous = None
    for i in range(images):
        image = Image.open(io.BytesIO(make_real(np.random.default_rng(seed + i), size)))
        image = image.convert("RGB")
        original = bytes_pdq(_jpeg(image, 95))
        for name, edit in EDITS.items():
            distances[name].append(hamming(original.hex, bytes_pdq(edit(image)).hex))
        if previous is not None:
            unrelated.append(hamming(original.hex, previous))
        previous = original.hex
    print(f"robustness: {images} demo photos of {size}x{size}, PDQ distance to the original")
    print(f"  {'edit':32} {'median':>6} {'p95':>5} {'max':>5} {'<= 31':>7}")
    for name, values in [*distances.items(), ("unrelated photos", unrelated)]:
        v = np.asarray(values)
        print(
            f"  {name:32} {np.median(v):6.0f} {np.percentile(v, 95):5.0f} {v.max():5d} "
            f"{np.mean(v <= MAX_DISTANCE):7.1%}"
        )


def bench_hash_cost(images: int, repeats: int) -> None:
    """Times, per image, the worker's decode and resize beside the PDQ hash of the decoded picture
    (bench_pipeline's photo-like images, 0.1-3 MP JPEG and PNG)."""
    import sys

    sys.path.insert(0, str(Path(__file__).resolve().parent))
    from bench_decode import make_images

    from moderation.mediahash import image_pdq
    from moderation.preprocess import DEFAULT_LIMITS, decode_image, image_to_input

    data = [d for _, d in make_images(images)]
    decode, resize, pdq = [], [], []
    for _ in range(repeats):
        for blob in data:
            started = time.thread_time()
            image, _fmt = decode_image(blob, DEFAULT_LIMITS)
            decoded = time.thread_time()
            image_to_input(image)
            resized = time.thread_time()
            image_pdq(image)
            decode.append(decoded - started)
            resize.append(resized - decoded)
            pdq.append(time.thread_time() - resized)
    mean = {k: 1000 * float(np.mean(v)) for k, v in (("decode", decode), ("resize", resize),
                                                      ("pdq", pdq))}  # fmt: skip
    print(f"hash cost: {len(data)} images x {repeats}, CPU ms per image (mean)")
    share = mean["pdq"] / (mean["decode"] + mean["resize"])
    print(f"  decode {mean['decode']:.2f}  resize {mean['resize']:.2f}  PDQ {mean['pdq']:.2f}  "
          f"PDQ / (decode + resize) {share:.2f}")  # fmt: skip


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    sub = parser.add_subparsers(dest="what", required=True)
    index = sub.add_parser("index")
    index.add_argument("--hashes", type=int, default=1_000_000)
    index.add_argument("--queries", type=int, default=2000)
    index.add_argument("--sql", action="store_true", help="also time BankMatcher over SQLite")
    index.add_argument("--chunks", type=int, default=16, choices=sorted(SPLITS))
    cost = sub.add_parser("hashcost")
    cost.add_argument("--images", type=int, default=24)
    cost.add_argument("--repeats", type=int, default=3)
    robust = sub.add_parser("robustness")
    robust.add_argument("--images", type=int, default=200)
    robust.add_argument("--size", type=int, default=640)
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args()
    if args.what == "index":
        bench_index(args.hashes, args.queries, args.seed, args.sql, args.chunks)
    elif args.what == "hashcost":
        bench_hash_cost(args.images, args.repeats)
    else:
        bench_robustness(args.images, args.size, args.seed)


if __name__ == "__main__":
    main()
