"""JPEG draft decoding vs the plain full-size decode, and what it does to the served scores.

Generates photo-like JPEGs (smooth gradients, soft blobs, edges, sensor noise) at about 1 MP,
times :func:`moderation.preprocess.load_image` with ``jpeg_draft`` on and off, interleaved in the
same run, then scores both arrays of every image with the version's ONNX model in-process and
prints the distribution of |Δ p_fake| and |Δ logit| between the two decode paths.

    python benchmarks/bench_decode.py --images 36 --repeats 3
"""

from __future__ import annotations

import argparse
import io
import time
from pathlib import Path

import numpy as np
from PIL import Image, ImageFilter

from moderation.preprocess import ImageLimits, load_image
from moderation.settings import PROJECT_ROOT

DEFAULT_MODEL = PROJECT_ROOT / "model_repository" / "deepfake_detector" / "1" / "model.onnx"
MEGAPIXELS = (0.1, 0.3, 0.5, 1.0, 2.0, 3.0)
ASPECTS = (4 / 3, 3 / 2, 1.0, 3 / 4)


def photo(width: int, height: int, *, seed: int) -> Image.Image:
    """Returns a photo-like RGB image: gradients, soft shapes with edges, mild sensor noise."""
    rng = np.random.default_rng(seed)
    y, x = np.mgrid[0:height, 0:width].astype(np.float32)
    colours = rng.uniform(30, 220, (2, 3)).astype(np.float32)
    t = ((x / width) * rng.uniform(0.3, 1) + (y / height) * rng.uniform(0.3, 1))[..., None] / 2
    array = colours[0] * (1 - t) + colours[1] * t
    for _ in range(int(rng.integers(6, 14))):
        cx, cy = rng.uniform(0, width), rng.uniform(0, height)
        radius = rng.uniform(0.04, 0.25) * min(width, height)
        mask = ((x - cx) ** 2 + (y - cy) ** 2) < radius**2
        array[mask] = array[mask] * 0.4 + rng.uniform(0, 255, 3).astype(np.float32) * 0.6
    image = Image.fromarray(np.clip(array, 0, 255).astype(np.uint8), "RGB")
    image = image.filter(ImageFilter.GaussianBlur(radius=float(rng.uniform(0.6, 2.0))))
    noisy = np.asarray(image, np.float32) + rng.normal(0, rng.uniform(2, 6), (height, width, 3))
    return Image.fromarray(np.clip(noisy, 0, 255).astype(np.uint8), "RGB")


def encode(image: Image.Image, fmt: str, *, quality: int = 88) -> bytes:
    """Returns the image encoded as JPEG (with the given quality) or PNG."""
    buffer = io.BytesIO()
    if fmt == "JPEG":
        image.save(buffer, "JPEG", quality=quality)
    else:
        image.save(buffer, fmt)
    return buffer.getvalue()


def megapixel_jpegs(count: int, *, seed: int = 0) -> list[bytes]:
    """Returns ``count`` photo-like JPEGs of about 1 MP (several aspect ratios)."""
    sizes = [(1280, 800), (1152, 864), (1024, 1024), (864, 1152), (1216, 832)]
    return [
        encode(photo(*sizes[i % len(sizes)], seed=seed + i), "JPEG", quality=80 + i % 16)
        for i in range(count)
    ]


def make_images(count: int, *, seed: int = 7) -> list[tuple[str, bytes]]:
    """Returns (format, bytes) photo-like images cycling 0.1-3 MP; every third one is PNG."""
    images = []
    for i in range(count):
        pixels = MEGAPIXELS[i % len(MEGAPIXELS)] * 1e6
        aspect = ASPECTS[i % len(ASPECTS)]
        width = int((pixels * aspect) ** 0.5)
        fmt = "PNG" if i % 3 == 2 else "JPEG"
        images.append((fmt, encode(photo(width, int(width / aspect), seed=seed + i), fmt)))
    return images


def time_paths(images: list[bytes], *, repeats: int) -> dict[str, float]:
    """Returns seconds per image of each decode path, measured interleaved image by image."""
    paths = {"plain": ImageLimits(jpeg_draft=False), "draft": ImageLimits(jpeg_draft=True)}
    spent = dict.fromkeys(paths, 0.0)
    for data in images:  # warm-up
        for limits in paths.values():
            load_image(data, limits)
    for _ in range(repeats):
        for data in images:
            for name, limits in paths.items():
                started = time.perf_counter()
                load_image(data, limits)
                spent[name] += time.perf_counter() - started
    return {name: total / (repeats * len(images)) for name, total in spent.items()}


def score_deltas(images: list[bytes], model: Path) -> tuple[np.ndarray, np.ndarray]:
    """Returns |Δ logit| and |Δ p_fake| per image between the plain and draft arrays."""
    from training.export import onnx_logits, onnx_session

    session = onnx_session(model, threads=1)
    plain = np.stack([load_image(d, ImageLimits(jpeg_draft=False)) for d in images])
    draft = np.stack([load_image(d, ImageLimits(jpeg_draft=True)) for d in images])
    logit_plain, logit_draft = onnx_logits(session, plain), onnx_logits(session, draft)

    def sigmoid(v: np.ndarray) -> np.ndarray:
        return 1.0 / (1.0 + np.exp(-v.astype(np.float64)))

    return np.abs(logit_plain - logit_draft), np.abs(sigmoid(logit_plain) - sigmoid(logit_draft))


def _quantiles(values: np.ndarray) -> str:
    p50, p90, top = np.percentile(values, [50, 90, 100])
    return f"mean {values.mean():.4f}  p50 {p50:.4f}  p90 {p90:.4f}  max {top:.4f}"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--images", type=int, default=36, help="number of ~1 MP JPEGs")
    parser.add_argument("--repeats", type=int, default=3, help="timed passes over the images")
    parser.add_argument("--model", type=Path, default=DEFAULT_MODEL, help="ONNX model to score")
    args = parser.parse_args()
    images = megapixel_jpegs(args.images)
    mean_kb = sum(map(len, images)) / len(images) / 1024
    print(f"{len(images)} photo-like JPEGs, ~1 MP, mean {mean_kb:.0f} KiB")
    per_image = time_paths(images, repeats=args.repeats)
    print(f"{'decode path':12} {'ms/image':>9} {'images/s':>9}")
    for name, seconds in per_image.items():
        print(f"{name:12} {seconds * 1000:9.2f} {1 / seconds:9.1f}")
    print(f"speed-up draft vs plain: {per_image['plain'] / per_image['draft']:.2f}x")
    logit, prob = score_deltas(images, args.model)
    print(f"|Δ logit|  {_quantiles(logit)}")
    print(f"|Δ p_fake| {_quantiles(prob)}")


if __name__ == "__main__":
    main()
