"""The one writer of version folders (``moderation.version_folders``): complete or absent."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import pytest

from moderation import contract
from moderation.version_folders import next_version, version_numbers, write_version


def _files(payload: bytes, *, version: int = 0) -> Callable[[Path], contract.ModelMetadata]:
    def fill(folder: Path) -> contract.ModelMetadata:
        (folder / contract.ONNX_FILENAME).write_bytes(payload)
        return contract.ModelMetadata(version=version, trained_on="test")

    return fill


def test_numbers_count_numbered_folders_only(tmp_path: Path) -> None:
    assert version_numbers(tmp_path / "absent") == [] and next_version(tmp_path / "absent") == 1
    for name in ("1", "3", ".4.staging", ".2.failed", "notes"):
        (tmp_path / name).mkdir()
    (tmp_path / "7").write_text("a file, not a version")
    assert version_numbers(tmp_path) == [1, 3]
    assert next_version(tmp_path) == 4


def test_a_version_appears_whole_with_its_number_in_the_metadata(tmp_path: Path) -> None:
    model_dir = tmp_path / "m"
    target = write_version(model_dir, 2, _files(b"weights"), config='name: "m"\n')
    assert target == model_dir / "2"
    assert (target / contract.ONNX_FILENAME).read_bytes() == b"weights"
    meta = contract.ModelMetadata.read(target)
    assert meta.version == 2 and meta.trained_on == "test"
    assert (model_dir / "config.pbtxt").read_text() == 'name: "m"\n'
    assert sorted(p.name for p in model_dir.iterdir()) == ["2", "config.pbtxt"]


def test_a_failure_leaves_the_repository_as_it_was(tmp_path: Path) -> None:
    write_version(tmp_path, 1, _files(b"one"))

    def broken(folder: Path) -> contract.ModelMetadata:
        (folder / contract.ONNX_FILENAME).write_bytes(b"half")
        raise RuntimeError("export failed")

    with pytest.raises(RuntimeError, match="export failed"):
        write_version(tmp_path, 2, broken, config="never written")
    assert sorted(p.name for p in tmp_path.iterdir()) == ["1"]


def test_an_existing_version_is_replaced_only_when_asked(tmp_path: Path) -> None:
    write_version(tmp_path, 1, _files(b"old"))
    with pytest.raises(FileExistsError, match="already exists"):
        write_version(tmp_path, 1, _files(b"new"))
    assert (tmp_path / "1" / contract.ONNX_FILENAME).read_bytes() == b"old"
    write_version(tmp_path, 1, _files(b"new"), overwrite=True)
    assert (tmp_path / "1" / contract.ONNX_FILENAME).read_bytes() == b"new"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["1"]
