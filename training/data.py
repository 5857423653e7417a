"""Training data: discovery (folders or CSV), deterministic stratified split, transforms, datasets.

Every image goes through :func:`moderation.preprocess.load_image` first, so evaluation sees what
serving sees; unreadable files are skipped and counted before training starts.
"""

from __future__ import annotations

import csv
import io
import logging
from collections import Counter
from dataclasses import dataclass, field, replace
from pathlib import Path

import numpy as np
import torch
from PIL import Image, ImageEnhance, ImageFilter
from torch.utils.data import Dataset

from moderation.preprocess import DEFAULT_LIMITS, ImageLimits, MediaRejected, load_image

logger = logging.getLogger(__name__)

CLASSES = ("real", "fake")  # label 0, label 1
SPLITS = ("train", "val", "test")
IMAGE_SUFFIXES = {".jpg", ".jpeg", ".png", ".webp", ".bmp", ".gif"}
_LABEL_WORDS = {"0": 0, "1": 1, "real": 0, "fake": 1}


class DataError(ValueError):
    """The data set cannot be used as given; the message says what was expected."""


@dataclass(frozen=True)
class Sample:
    """One image on disk with its label (0 real, 1 fake) and, from a manifest, its split."""

    path: Path
    label: int
    split: str | None = None


def discover_folders(root: Path) -> list[Sample]:
    """Returns the images under ``root/real`` and ``root/fake`` (recursive, sorted)."""
    root = Path(root)
    samples: list[Sample] = []
    for label, name in enumerate(CLASSES):
        folder = root / name
        if not folder.is_dir():
            raise DataError(f"{folder} is missing; expected {root}/real/ and {root}/fake/ folders")
        files = sorted(p for p in folder.rglob("*") if p.suffix.lower() in IMAGE_SUFFIXES)
        if not files:
            suffixes = ", ".join(sorted(IMAGE_SUFFIXES))
            raise DataError(f"{folder} holds no images; expected files ending in {suffixes}")
        samples.extend(Sample(path=p, label=label) for p in files)
    return samples


def read_manifest(path: Path) -> list[Sample]:
    """Returns the samples of a CSV manifest ``path,label[,split]`` (paths relative to the CSV)."""
    path = Path(path)
    with open(path, newline="") as handle:
        reader = csv.DictReader(handle)
        if not reader.fieldnames or not {"path", "label"} <= set(reader.fieldnames):
            raise DataError(f"{path} needs a header with 'path' and 'label' (and optional 'split')")
        samples = [_manifest_row(path, line, row) for line, row in enumerate(reader, start=2)]
    if not samples:
        raise DataError(f"{path} lists no images")
    return samples


def _manifest_row(manifest: Path, line: int, row: dict[str, str]) -> Sample:
    label = _LABEL_WORDS.get(str(row["label"]).strip().lower())
    if label is None:
        raise DataError(f"{manifest}:{line}: label {row['label']!r}; expected 0, 1, real or fake")
    split = (row.get("split") or "").strip().lower() or None
    if split is not None and split not in SPLITS:
        raise DataError(f"{manifest}:{line}: split {split!r}; expected one of {', '.join(SPLITS)}")
    image = Path(row["path"])
    return Sample(
        path=image if image.is_absolute() else manifest.parent / image, label=label, split=split
    )


def discover(source: Path) -> list[Sample]:
    """Returns samples from a folder (real/ + fake/) or a CSV manifest; errors before training."""
    source = Path(source)
    if source.is_file() and source.suffix.lower() == ".csv":
        samples = read_manifest(source)
    elif source.is_dir():
        samples = discover_folders(source)
    else:
        raise DataError(f"{source} is neither a folder with real/ and fake/ nor a .csv manifest")
    counts = Counter(s.label for s in samples)
    for label, name in enumerate(CLASSES):
        if counts[label] == 0:
            raise DataError(f"no {name} images in {source}; both classes are needed to train")
    return samples


def stratified_split(
    samples: list[Sample],
    *,
    val_fraction: float = 0.15,
    test_fraction: float = 0.15,
    seed: int = 0,
) -> dict[str, list[Sample]]:
    """Returns train/val/test lists; same input and seed → same split. Manifest splits win."""
    if not (0 <= val_fraction < 1 and 0 <= test_fraction < 1 and val_fraction + test_fraction < 1):
        raise DataError("val and test fractions must be in [0, 1) and sum to less than 1")
    result: dict[str, list[Sample]] = {name: [] for name in SPLITS}
    for sample in samples:
        if sample.split is not None:
            result[sample.split].append(sample)
    for label in range(len(CLASSES)):
        pool = sorted(
            (s for s in samples if s.split is None and s.label == label), key=lambda s: str(s.path)
        )
        order = np.random.default_rng([seed, label]).permutation(len(pool))
        n_val, n_test = round(len(pool) * val_fraction), round(len(pool) * test_fraction)
        for rank, index in enumerate(order):
            name = "val" if rank < n_val else "test" if rank < n_val + n_test else "train"
            result[name].append(replace(pool[index], split=name))
    return result


def balance_summary(splits: dict[str, list[Sample]]) -> str:
    """Returns a small table of images per class and split, for the log before training."""
    lines = [f"{'split':<6} {'real':>7} {'fake':>7} {'fake %':>7}"]
    for name, items in splits.items():
        counts = Counter(s.label for s in items)
        total = max(len(items), 1)
        lines.append(f"{name:<6} {counts[0]:>7} {counts[1]:>7} {100 * counts[1] / total:>6.1f}%")
    return "\n".join(lines)


@dataclass
class ScanResult:
    """Readable samples (with their arrays when cached) and the files that were skipped."""

    samples: list[Sample]
    arrays: np.ndarray | None
    skipped: list[tuple[Path, str]] = field(default_factory=list)


def eval_array(data: bytes, limits: ImageLimits = DEFAULT_LIMITS) -> np.ndarray:
    """Returns the evaluation input for image bytes: exactly the worker's preprocessing."""
    return load_image(data, limits)


def scan(samples: list[Sample], *, cache: bool = True) -> ScanResult:
    """Decodes every sample once; unreadable ones are skipped, counted and logged by path."""
    kept: list[Sample] = []
    arrays: list[np.ndarray] = []
    skipped: list[tuple[Path, str]] = []
    for sample in samples:
        try:
            array = eval_array(sample.path.read_bytes())
        except (OSError, MediaRejected) as exc:
            skipped.append((sample.path, str(exc)))
            logger.warning("skipping unreadable image %s: %s", sample.path, exc)
            continue
        kept.append(sample)
        if cache:
            arrays.append(array)
    if skipped:
        logger.warning("skipped %d unreadable of %d images", len(skipped), len(samples))
    stacked = np.stack(arrays) if cache and arrays else None
    return ScanResult(samples=kept, arrays=stacked, skipped=skipped)


@dataclass(frozen=True)
class TrainAugment:
    """Augmentations that keep manipulation traces meaningful: flip, JPEG, blur, resize, colour.

    Each is applied with its own probability to the uint8 [H, W, 3] array; strengths stay mild so
    the blending and compression traces the detector learns from survive.
    """

    flip: float = 0.5
    jpeg: float = 0.3
    jpeg_quality: tuple[int, int] = (65, 95)
    blur: float = 0.15
    blur_sigma: tuple[float, float] = (0.2, 0.8)
    resize: float = 0.2
    resize_scale: tuple[float, float] = (0.6, 0.95)
    color: float = 0.5
    color_strength: float = 0.12

    def __call__(self, array: np.ndarray, rng: np.random.Generator) -> np.ndarray:
        image = Image.fromarray(array)
        size = image.size
        if rng.random() < self.flip:
            image = image.transpose(Image.Transpose.FLIP_LEFT_RIGHT)
        if rng.random() < self.color:
            for enhancer in (ImageEnhance.Brightness, ImageEnhance.Contrast, ImageEnhance.Color):
                factor = 1 + rng.uniform(-self.color_strength, self.color_strength)
                image = enhancer(image).enhance(factor)
        if rng.random() < self.resize:
            scale = rng.uniform(*self.resize_scale)
            small = (max(8, int(size[0] * scale)), max(8, int(size[1] * scale)))
            image = image.resize(small, Image.Resampling.BILINEAR).resize(
                size, Image.Resampling.BILINEAR
            )
        if rng.random() < self.blur:
            image = image.filter(ImageFilter.GaussianBlur(float(rng.uniform(*self.blur_sigma))))
        if rng.random() < self.jpeg:
            buffer = io.BytesIO()
            image.save(buffer, format="JPEG", quality=int(rng.integers(*self.jpeg_quality)))
            image = Image.open(io.BytesIO(buffer.getvalue())).convert("RGB")
        return np.ascontiguousarray(np.asarray(image, dtype=np.uint8))


class ImageDataset(Dataset[tuple[torch.Tensor, torch.Tensor]]):
    """Yields (uint8 [224, 224, 3] tensor, float label); cached arrays or lazy decoding."""

    def __init__(
        self, scanned: ScanResult, *, augment: TrainAugment | None = None, seed: int = 0
    ) -> None:
        self.samples = scanned.samples
        self.arrays = scanned.arrays
        self.augment = augment
        self.seed = seed
        self.epoch = 0

    def __len__(self) -> int:
        return len(self.samples)

    def set_epoch(self, epoch: int) -> None:
        """Makes augmentation randomness depend on the epoch (deterministic per seed)."""
        self.epoch = epoch

    def __getitem__(self, index: int) -> tuple[torch.Tensor, torch.Tensor]:
        sample = self.samples[index]
        cached = self.arrays[index] if self.arrays is not None else None
        array = np.array(cached if cached is not None else eval_array(sample.path.read_bytes()))
        if self.augment is not None:
            array = self.augment(array, np.random.default_rng([self.seed, self.epoch, index]))
        return torch.from_numpy(array), torch.tensor(float(sample.label))

    def labels(self) -> np.ndarray:
        """Returns the labels as an int array."""
        return np.array([s.label for s in self.samples], dtype=np.int64)
