"""Thresholds chosen by error rates: the choice, its intervals, the genuine-photo set, the CLI."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
from click.testing import CliRunner
from hypothesis import given, settings
from hypothesis import strategies as st
from PIL import Image
from scipy.stats import binomtest

from moderation import contract
from moderation.cli import main
from tests.fixtures.integration import unavailable
from training.genuine import CATALOGUE, Source, build, dep5_licence, find_photos, package_version
from training.thresholds import (
    choose_flag_at,
    choose_pass_below,
    choose_thresholds,
    clopper_pearson,
)

CHECKPOINT = Path(__file__).parents[2] / "model_repository" / contract.MODEL_NAME / "1"

scores = st.lists(st.floats(0, 1, allow_nan=False), min_size=1, max_size=300)
targets = st.floats(0, 0.5)


@given(real=scores, target=targets)
def test_flag_at_meets_the_false_positive_target_and_is_the_lowest_that_does(real, target):
    real_p = np.array(real)
    flag_at = choose_flag_at(real_p, target)
    flagged = real_p[real_p >= flag_at]
    # p(fake) is at most 1: genuine photos scored exactly 1.0 cannot be kept below any threshold.
    assert len(flagged) / len(real_p) <= target + 1e-12 or (flag_at == 1.0 and min(flagged) == 1.0)
    lower = real_p[real_p < flag_at]
    if len(lower):  # the next genuine score down would flag one photo too many
        assert np.mean(real_p >= lower.max()) > target


@given(fake=scores, recall=st.floats(0.5, 1.0))
def test_pass_below_keeps_the_recall_target_and_is_the_highest_that_does(fake, recall):
    fake_p = np.array(fake)
    pass_below = choose_pass_below(fake_p, recall)
    assert np.mean(fake_p < pass_below) <= 1 - recall + 1e-12
    higher = fake_p[fake_p > pass_below]
    if len(higher):
        assert np.mean(fake_p < higher.min()) > 1 - recall


@settings(max_examples=50)
@given(trials=st.integers(1, 500), data=st.data())
def test_clopper_pearson_is_the_exact_interval(trials, data):
    successes = data.draw(st.integers(0, trials))
    expected = binomtest(successes, trials).proportion_ci(method="exact")
    assert clopper_pearson(successes, trials) == pytest.approx([expected.low, expected.high])


def test_chosen_on_one_split_reported_on_the_other():
    rng = np.random.default_rng(0)
    real_val, real_test = rng.beta(2, 5, 500), rng.beta(2, 5, 400)
    fake_val, fake_test = rng.beta(5, 2, 300), rng.beta(5, 2, 200)
    result = choose_thresholds(
        choose=(real_val, fake_val), report=(real_test, fake_test), target_fpr=0.01
    )
    assert result["chosen"]["false_positive_rate"]["rate"] <= 0.01
    reported = result["reported"]["false_positive_rate"]
    assert reported["of"] == 400 and reported["count"] == int(
        (real_test >= result["flag_at"]).sum()
    )
    low, high = reported["ci95"]
    assert low <= reported["rate"] <= high
    assert result["pass_below"] <= result["flag_at"]


def test_a_recall_threshold_above_flag_at_empties_the_review_band_and_says_so():
    real, fake = np.array([0.1, 0.2, 0.3]), np.array([0.5, 0.6, 0.7])
    result = choose_thresholds(choose=(real, fake), report=(real, fake), target_recall=1.0)
    assert result["pass_below"] == result["flag_at"] and result["notes"]


def test_dep5_licence_takes_the_last_matching_stanza(tmp_path):
    copyright_file = tmp_path / "copyright"
    copyright_file.write_text(
        "Format: https://www.debian.org/doc/packaging-manuals/copyright-format/1.0/\n\n"
        "Files: *\nCopyright: 2020 Everyone\nLicense: GPL-2+\n\n"
        "Files: nature/Aqua.jpg\n       nature/Dune.jpg\nCopyright: 2008, A Photographer\n"
        "License: CC-BY-SA-3.0\n Some text.\n"
    )
    assert dep5_licence(copyright_file, "nature/Dune.jpg") == (
        "2008, A Photographer",
        "CC-BY-SA-3.0",
    )
    assert dep5_licence(copyright_file, "abstract/Flow.png") == ("2020 Everyone", "GPL-2+")


def _fake_package_tree(root: Path) -> tuple[Source, ...]:
    rng = np.random.default_rng(1)
    folder = root / "usr/share/backgrounds/test/nature"
    folder.mkdir(parents=True)
    for name in ("a", "b", "c", "d"):
        Image.fromarray(rng.integers(0, 255, (300, 400, 3), dtype=np.uint8)).save(
            folder / f"{name}.jpg"
        )
    doc = root / "usr/share/doc/test-backgrounds"
    doc.mkdir(parents=True)
    (doc / "copyright").write_text("Files: nature/*\nCopyright: 2001 Someone\nLicense: CC0-1.0\n")
    return (Source("test-backgrounds", ("/usr/share/backgrounds/test/nature/*.jpg",)),)


def test_every_crop_of_a_photograph_shares_its_split(tmp_path):
    catalogue = _fake_package_tree(tmp_path / "root")
    photos = find_photos(tmp_path / "root", catalogue)
    assert [p.licence for p in photos] == ["CC0-1.0"] * 4
    manifest = build(tmp_path / "set", photos=photos, crops_per_photo=5, size=96)
    rows = manifest.read_text().splitlines()[1:]
    assert len(rows) == 20
    split_of: dict[str, set[str]] = {}
    for row in rows:
        _, _, split, photo = row.split(",")
        split_of.setdefault(photo, set()).add(split)
    assert all(len(s) == 1 for s in split_of.values())
    for path in (tmp_path / "set" / "real").iterdir():
        assert max(Image.open(path).size) == 96
    sources = (tmp_path / "set" / "sources.csv").read_text()
    assert "test-backgrounds" in sources and "CC0-1.0" in sources


def test_the_installed_packages_photographs_carry_their_licences():
    if package_version(CATALOGUE[0].package) is None:
        unavailable(f"Debian package {CATALOGUE[0].package} is not installed")
    photos = find_photos()
    assert len({p.photo_id for p in photos}) == len(photos) >= 12
    for photo in photos:
        assert photo.licence not in ("", "unknown"), photo
        assert photo.version and photo.path.is_file()


def _invoke(*args: str) -> str:
    result = CliRunner().invoke(main, list(args), catch_exceptions=False)
    assert result.exit_code == 0, result.output
    return result.output


@pytest.mark.slow
def test_evaluate_chooses_thresholds_and_export_stores_them(tmp_path):
    demo, genuine = tmp_path / "demo", tmp_path / "genuine"
    _invoke("demo-data", "--out", str(demo), "--per-class", "20", "--size", "128")
    photos = find_photos(tmp_path / "root", _fake_package_tree(tmp_path / "root"))
    build(genuine, photos=photos, crops_per_photo=10, size=160, eval_fraction=0.5, seed=3)
    output = _invoke(
        "evaluate",
        "--checkpoint",
        str(CHECKPOINT / "checkpoint.pt"),
        "--data",
        str(demo),
        "--genuine",
        str(genuine / "manifest.csv"),
        "--target-fpr",
        "0.05",
        "--out",
        str(tmp_path / "report"),
    )
    assert "false positives" in output
    report = json.loads((tmp_path / "report" / "report.json").read_text())
    chosen = report["thresholds"]
    assert chosen["chosen"]["false_positive_rate"]["rate"] <= 0.05
    assert chosen["reported_on"]["genuine"] + chosen["chosen_on"]["genuine"] == 40

    repo = tmp_path / "repo"
    _invoke(
        "export",
        "--checkpoint",
        str(CHECKPOINT / "checkpoint.pt"),
        "--report",
        str(tmp_path / "report" / "report.json"),
        "--repository",
        str(repo),
        "--data",
        str(demo),
        "--artifacts",
        str(tmp_path / "artifacts"),
        "--no-int8",
        "--no-torchscript",
    )
    meta = contract.ModelMetadata.read(repo / contract.MODEL_NAME / "1")
    assert (meta.flag_at, meta.pass_below) == (chosen["flag_at"], chosen["pass_below"])
    stored = meta.extra["thresholds"]
    assert (
        stored["reported"]["false_positive_rate"]["ci95"]
        == (chosen["reported"]["false_positive_rate"]["ci95"])
    )
    assert stored["used"] == {"pass_below": meta.pass_below, "flag_at": meta.flag_at}


def test_explicit_thresholds_win_over_the_report(tmp_path):
    from training.release import ExportRequest, thresholds_for

    report = {"thresholds": {"flag_at": 0.99, "pass_below": 0.1}}
    req = ExportRequest(checkpoint=tmp_path, repository=tmp_path, flag_at=0.9)
    assert thresholds_for(req, report) == (0.1, 0.9)
    assert thresholds_for(ExportRequest(checkpoint=tmp_path, repository=tmp_path), None) == (
        0.3,
        0.8,
    )
