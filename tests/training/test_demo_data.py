"""The synthetic demo set is deterministic and its fakes carry manipulation traces."""

from __future__ import annotations

import csv
import io
from pathlib import Path

import numpy as np
from PIL import Image

from training.demo_data import generate, make_fake, make_real


def test_same_seed_same_bytes_other_seed_other_bytes(tmp_path: Path) -> None:
    generate(tmp_path / "a", per_class=3, seed=7, size=96)
    generate(tmp_path / "b", per_class=3, seed=7, size=96)
    generate(tmp_path / "c", per_class=3, seed=8, size=96)
    files = sorted(p.relative_to(tmp_path / "a") for p in (tmp_path / "a").rglob("*.jpg"))
    assert len(files) == 6
    for name in files:
        assert (tmp_path / "a" / name).read_bytes() == (tmp_path / "b" / name).read_bytes()
    assert (tmp_path / "a" / files[0]).read_bytes() != (tmp_path / "c" / files[0]).read_bytes()
    with open(tmp_path / "a" / "manifest.csv") as handle:
        rows = list(csv.DictReader(handle))
    assert [r["label"] for r in rows] == ["0"] * 3 + ["1"] * 3


def _quant_table_sum(data: bytes) -> int:
    image = Image.open(io.BytesIO(data))
    return sum(sum(t) for t in image.quantization.values())  # type: ignore[attr-defined]


def test_fakes_differ_from_reals_where_the_face_was_swapped() -> None:
    size = 160
    real = np.asarray(Image.open(io.BytesIO(make_real(np.random.default_rng(1), size))))
    fake_bytes = make_fake(np.random.default_rng(1), size)
    fake = np.asarray(Image.open(io.BytesIO(fake_bytes)))
    assert real.shape == fake.shape == (size, size, 3)
    # Same scene seed: outside the face the images agree more than inside the face region.
    centre = np.abs(real[50:110, 50:110].astype(int) - fake[50:110, 50:110]).mean()
    border = np.abs(real[:12].astype(int) - fake[:12]).mean()
    assert centre > border
    assert _quant_table_sum(fake_bytes) > 0
