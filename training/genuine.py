"""A set of genuine photographs from installed Debian packages, for choosing thresholds.

``dfmod genuine-photos`` writes crops of the :data:`CATALOGUE` photographs with their origin and
licence in a CSV manifest; all crops of one photograph share a split.
"""

from __future__ import annotations

import csv
import hashlib
import json
import logging
import re
import subprocess
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from PIL import Image

logger = logging.getLogger(__name__)

MANIFEST_FILENAME = "manifest.csv"
SOURCES_FILENAME = "sources.csv"


@dataclass(frozen=True)
class Source:
    """A package and the glob patterns of its photographs (not drawings, not renders)."""

    package: str
    patterns: tuple[str, ...]


# Chosen by looking at each image: only photographs taken with a camera.
_PLASMA_PHOTOS = (
    "BytheWater",
    "ColdRipple",
    "ColorfulCups",
    "DarkestHour",
    "EveningGlow",
    "FallenLeaf",
    "Grey",
    "Kite",
    "OneStandsOut",
    "Path",
    "summer_1am",
)
CATALOGUE: tuple[Source, ...] = (
    Source("mate-backgrounds", ("/usr/share/backgrounds/mate/nature/*.jpg",)),
    Source(
        "plasma-workspace-wallpapers",
        tuple(f"/usr/share/wallpapers/{name}/contents/images/*.jpg" for name in _PLASMA_PHOTOS),
    ),
)


@dataclass(frozen=True)
class Photo:
    """One photograph found on this machine, with where it came from and under what licence."""

    photo_id: str
    path: Path
    package: str
    version: str
    author: str
    licence: str


def package_version(package: str) -> str | None:
    """Returns the installed version of a Debian package, or None when it is not installed."""
    try:
        out = subprocess.run(
            ["dpkg-query", "-W", "-f", "${Status}|${Version}", package],
            capture_output=True,
            text=True,
            check=False,
            timeout=30,
        )
    except (OSError, subprocess.TimeoutExpired):
        return None
    status, _, version = out.stdout.partition("|")
    return version if out.returncode == 0 and status.endswith(" installed") else None


def dep5_licence(copyright_file: Path, relative: str) -> tuple[str, str]:
    """Returns (copyright holders, licence) of ``relative`` from a machine-readable copyright file.

    The last ``Files:`` stanza whose patterns match wins, as the DEP-5 format says.
    """
    try:
        text = copyright_file.read_text(errors="replace")
    except OSError:
        return "", "unknown"
    holder, licence = "", "unknown"
    for stanza in re.split(r"\n\s*\n", text):
        fields = _dep5_fields(stanza)
        if "files" not in fields:
            continue
        if any(_dep5_match(p, relative) for p in fields["files"].split()):
            holder = " ".join(fields.get("copyright", "").split())
            licence = fields.get("license", "unknown").splitlines()[0].strip()
    return holder, licence


def _dep5_fields(stanza: str) -> dict[str, str]:
    fields: dict[str, str] = {}
    key = None
    for line in stanza.splitlines():
        if line[:1].isspace() and key is not None:
            fields[key] += "\n" + line.strip()
        elif ":" in line:
            key, _, value = line.partition(":")
            key = key.strip().lower()
            fields[key] = value.strip()
    return fields


def _dep5_match(pattern: str, relative: str) -> bool:
    regex = re.escape(pattern).replace(r"\*", ".*").replace(r"\?", ".")
    return (
        re.fullmatch(regex, relative) is not None
        or re.fullmatch(regex, relative.split("/")[-1]) is not None
    )


def _plasma_licence(image: Path) -> tuple[str, str] | None:
    meta = image.parents[2] / "metadata.json"
    try:
        plugin = json.loads(meta.read_text()).get("KPlugin", {})
    except (OSError, ValueError):
        return None
    authors = ", ".join(a.get("Name", "") for a in plugin.get("Authors", []) if a.get("Name"))
    return authors, str(plugin.get("License") or "unknown")


def find_photos(root: Path = Path("/"), catalogue: tuple[Source, ...] = CATALOGUE) -> list[Photo]:
    """Returns the catalogue's photographs installed under ``root``, the largest file per photo."""
    photos: list[Photo] = []
    for source in catalogue:
        version = package_version(source.package) if root == Path("/") else "unknown"
        if version is None:
            logger.warning("package %s is not installed; apt-get install it", source.package)
            continue
        for pattern in source.patterns:
            matches = sorted(root.glob(pattern.lstrip("/")))
            by_photo: dict[str, list[Path]] = {}
            for path in matches:
                by_photo.setdefault(_photo_key(path), []).append(path)
            for key, paths in sorted(by_photo.items()):
                path = max(paths, key=lambda p: p.stat().st_size)
                author, licence = _licence(root, source.package, path)
                photos.append(Photo(key, path, source.package, version, author, licence))
    return photos


def _photo_key(path: Path) -> str:
    # A plasma wallpaper ships one photograph in several sizes: the folder names the photograph.
    if path.parent.name == "images" and path.parent.parent.name == "contents":
        return path.parents[2].name
    return path.stem


def _licence(root: Path, package: str, path: Path) -> tuple[str, str]:
    plasma = _plasma_licence(path) if path.parent.name == "images" else None
    if plasma is not None:
        return plasma
    copyright_file = root / "usr/share/doc" / package / "copyright"
    relative = "/".join(path.parts[-2:])
    return dep5_licence(copyright_file, relative)


def assign_split(photo_id: str, eval_fraction: float, seed: int) -> str:
    """Returns ``val`` or ``test`` for a photograph, stably from its id and the seed."""
    digest = hashlib.sha256(f"{seed}:{photo_id}".encode()).digest()
    return "test" if int.from_bytes(digest[:8], "big") / 2**64 < eval_fraction else "val"


def crops(image: Image.Image, count: int, size: int, rng: np.random.Generator) -> list[Image.Image]:
    """Returns the whole photo and ``count - 1`` random crops (30-100 % of the short side).

    Each is resized so its longer side is ``size``: the shapes a platform receives, a whole
    photo or a part of one, downscaled.
    """
    image = image.convert("RGB")
    width, height = image.size
    out = [image]
    short = min(width, height)
    for _ in range(count - 1):
        side = int(short * rng.uniform(0.3, 1.0))
        aspect = rng.uniform(0.75, 1.33)
        w, h = min(width, int(side * aspect)), min(height, side)
        x, y = int(rng.integers(0, width - w + 1)), int(rng.integers(0, height - h + 1))
        out.append(image.crop((x, y, x + w, y + h)))
    resized = []
    for crop in out:
        scale = size / max(crop.size)
        resized.append(
            crop.resize(
                (max(1, round(crop.width * scale)), max(1, round(crop.height * scale))),
                Image.Resampling.LANCZOS,
            )
        )
    return resized


def build(
    out: Path,
    *,
    photos: list[Photo],
    crops_per_photo: int = 8,
    size: int = 512,
    eval_fraction: float = 0.5,
    seed: int = 0,
) -> Path:
    """Writes crops of ``photos`` under ``out/real`` with ``manifest.csv`` and ``sources.csv``."""
    if not photos:
        raise ValueError(
            "no genuine photographs found: apt-get install "
            + " ".join(s.package for s in CATALOGUE)
        )
    rng = np.random.default_rng(seed)
    (out / "real").mkdir(parents=True, exist_ok=True)
    rows, sources = [], []
    for photo in photos:
        split = assign_split(photo.photo_id, eval_fraction, seed)
        with Image.open(photo.path) as image:
            image.draft("RGB", (size * 4, size * 4))
            parts = crops(image, crops_per_photo, size, rng)
        for index, part in enumerate(parts):
            name = f"real/{photo.package}-{photo.photo_id}-{index}.jpg"
            part.save(out / name, quality=92)
            rows.append({"path": name, "label": 0, "split": split, "photo": photo.photo_id})
        sources.append(
            {
                "photo": photo.photo_id,
                "split": split,
                "package": photo.package,
                "package_version": photo.version,
                "file": str(photo.path),
                "author": photo.author,
                "licence": photo.licence,
            }
        )
    manifest = out / MANIFEST_FILENAME
    _write_csv(manifest, rows)
    _write_csv(out / SOURCES_FILENAME, sources)
    logger.info(
        "%d crops of %d photographs (%d for choosing thresholds, %d for reporting)",
        len(rows),
        len(photos),
        sum(s["split"] == "val" for s in sources),
        sum(s["split"] == "test" for s in sources),
    )
    return manifest


def _write_csv(path: Path, rows: list[dict]) -> None:
    with path.open("w", newline="") as handle:
        writer = csv.DictWriter(handle, fieldnames=list(rows[0]))
        writer.writeheader()
        writer.writerows(rows)
