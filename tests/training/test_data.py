"""Data discovery, manifests, the stratified split, scanning and the transforms."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from moderation.preprocess import ImageLimits, load_image
from moderation.settings import load_settings
from tests.fixtures.media import image_bytes
from training.data import (
    DataError,
    ImageDataset,
    Sample,
    TrainAugment,
    balance_summary,
    discover,
    eval_array,
    read_manifest,
    scan,
    stratified_split,
)


def _png(path: Path, colour: tuple[int, int, int], size: tuple[int, int] = (40, 30)) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.new("RGB", size, colour).save(path)
    return path


def _folders(root: Path, real: int = 3, fake: int = 2) -> Path:
    for i in range(real):
        _png(root / "real" / f"r{i}.png", (i * 10, 100, 50))
    for i in range(fake):
        _png(root / "fake" / "sub" / f"f{i}.png", (200, i * 10, 50))
    return root


def test_discover_folders_labels_and_recurses(tmp_path: Path) -> None:
    samples = discover(_folders(tmp_path))
    assert [s.label for s in samples] == [0, 0, 0, 1, 1]
    assert samples[-1].path.parent.name == "sub"


def test_missing_folder_is_a_clear_error(tmp_path: Path) -> None:
    _png(tmp_path / "real" / "a.png", (1, 2, 3))
    with pytest.raises(DataError, match=r"fake is missing; expected .*real/ and .*fake/"):
        discover(tmp_path)


def test_empty_class_is_a_clear_error(tmp_path: Path) -> None:
    _png(tmp_path / "real" / "a.png", (1, 2, 3))
    (tmp_path / "fake").mkdir()
    (tmp_path / "fake" / "notes.txt").write_text("no images")
    with pytest.raises(DataError, match="holds no images"):
        discover(tmp_path)


def test_manifest_with_words_numbers_and_splits(tmp_path: Path) -> None:
    _folders(tmp_path)
    (tmp_path / "m.csv").write_text(
        "path,label,split\nreal/r0.png,real,test\nreal/r1.png,0,\nfake/sub/f0.png,FAKE,\n"
        f"{tmp_path / 'fake/sub/f1.png'},1,val\n"
    )
    samples = discover(tmp_path / "m.csv")
    assert [(s.label, s.split) for s in samples] == [(0, "test"), (0, None), (1, None), (1, "val")]
    assert samples[0].path == tmp_path / "real/r0.png"
    splits = stratified_split(samples, val_fraction=0.0, test_fraction=0.0)
    assert [s.path.name for s in splits["test"]] == ["r0.png"]
    assert [s.path.name for s in splits["val"]] == ["f1.png"]


@pytest.mark.parametrize(
    ("body", "message"),
    [
        ("file,label\na.png,1\n", "header with 'path' and 'label'"),
        ("path,label\na.png,maybe\n", "expected 0, 1, real or fake"),
        ("path,label,split\na.png,1,holdout\n", "expected one of train, val, test"),
        ("path,label\n", "lists no images"),
        ("path,label\na.png,1\n", "no real images"),
    ],
)
def test_manifest_errors(tmp_path: Path, body: str, message: str) -> None:
    (tmp_path / "m.csv").write_text(body)
    with pytest.raises(DataError, match=message):
        discover(tmp_path / "m.csv")


def test_split_is_deterministic_stratified_and_disjoint() -> None:
    samples = [
        Sample(Path(f"/d/{c}/{i}.png"), label)
        for label, c in enumerate("rf")
        for i in range(100 if label == 0 else 40)
    ]
    first = stratified_split(samples, val_fraction=0.2, test_fraction=0.1, seed=3)
    again = stratified_split(list(reversed(samples)), val_fraction=0.2, test_fraction=0.1, seed=3)
    other = stratified_split(samples, val_fraction=0.2, test_fraction=0.1, seed=4)
    assert {k: [s.path for s in v] for k, v in first.items()} == {
        k: [s.path for s in v] for k, v in again.items()
    }
    assert [s.path for s in first["val"]] != [s.path for s in other["val"]]
    assert sum(s.label == 0 for s in first["val"]) == 20 and sum(s.label for s in first["val"]) == 8
    assert (
        sum(s.label == 0 for s in first["test"]) == 10 and sum(s.label for s in first["test"]) == 4
    )
    paths = [s.path for v in first.values() for s in v]
    assert len(paths) == len(set(paths)) == 140
    assert "fake %" in balance_summary(first) and "train" in balance_summary(first)


def test_unreadable_files_are_skipped_and_counted(tmp_path: Path, caplog) -> None:
    root = _folders(tmp_path)
    (root / "real" / "broken.jpg").write_bytes(b"\xff\xd8\xff\xe0 truncated")
    (root / "fake" / "text.png").write_text("not an image")
    scanned = scan(discover(root))
    assert len(scanned.samples) == 5
    assert scanned.arrays is not None and scanned.arrays.shape == (5, 224, 224, 3)
    assert sorted(p.name for p, _ in scanned.skipped) == ["broken.jpg", "text.png"]
    assert "broken.jpg" in caplog.text and "skipped 2 unreadable of 7" in caplog.text


def test_eval_transform_is_the_worker_preprocessing(tmp_path: Path) -> None:
    data = image_bytes((517, 333), fmt="JPEG", seed=0, quality=87)
    path = tmp_path / "real" / "x.jpg"
    path.parent.mkdir()
    path.write_bytes(data)
    worker = load_image(data, ImageLimits.from_settings(load_settings()))
    dataset = ImageDataset(scan([Sample(path, 0)]))
    lazy = ImageDataset(scan([Sample(path, 0)], cache=False))
    np.testing.assert_array_equal(eval_array(data), worker)
    np.testing.assert_array_equal(dataset[0][0].numpy(), worker)
    np.testing.assert_array_equal(lazy[0][0].numpy(), worker)
    assert dataset[0][1].item() == 0.0


def test_train_augment_keeps_shape_and_is_seeded() -> None:
    rng = np.random.default_rng(1)
    array = rng.integers(0, 256, (224, 224, 3), dtype=np.uint8)
    augment = TrainAugment(flip=0.5, jpeg=1.0, blur=1.0, resize=1.0, color=1.0)
    a = augment(array, np.random.default_rng(5))
    b = augment(array, np.random.default_rng(5))
    assert a.shape == (224, 224, 3) and a.dtype == np.uint8
    np.testing.assert_array_equal(a, b)
    assert not np.array_equal(a, array)
    flip_only = TrainAugment(flip=1.0, jpeg=0.0, blur=0.0, resize=0.0, color=0.0)
    np.testing.assert_array_equal(flip_only(array, np.random.default_rng(0)), array[:, ::-1])


def test_manifest_reader_resolves_relative_paths(tmp_path: Path) -> None:
    (tmp_path / "sub").mkdir()
    (tmp_path / "sub" / "m.csv").write_text("path,label\nimgs/a.png,1\n")
    assert read_manifest(tmp_path / "sub" / "m.csv")[0].path == tmp_path / "sub" / "imgs" / "a.png"
