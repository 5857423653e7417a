"""Every file of the generated bad-media corpus ends in an array or a known refusal.

``load_image`` is the one place deciding what is an image (API uploads are accepted whatever their
bytes and the worker calls it), so a stray exception type here would become an unexplained task
failure. Also checks the specific outcome where one is certain (bombs refused as too large or
unreadable, non-images as unsupported, valid images of every mode decoded) and that EXIF rotation
is applied.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from moderation.models import FailureReason
from moderation.preprocess import REASONS, ImageLimits, MediaRejected, load_image
from moderation.redact import public_detail
from moderation.video import VideoLimits, is_video, load_video
from tests.reliability.input_corpus import ARRAY, Case, build_corpus, media_bombs

CORPUS = build_corpus()
LIMITS = ImageLimits(max_pixels=40_000_000)


def _outcome(case: Case) -> tuple[str, np.ndarray | None]:
    try:
        array = load_image(case.data, LIMITS)
    except MediaRejected as exc:
        assert exc.reason in REASONS, f"{case.name}: unknown reason {exc.reason!r}"
        assert exc.detail, f"{case.name}: a refusal without detail"
        return exc.reason, None
    return ARRAY, array


def test_corpus_is_large_and_varied() -> None:
    assert len(CORPUS) >= 300
    assert len({c.name for c in CORPUS}) == len(CORPUS)
    prefixes = {c.name.split("_")[0] for c in CORPUS}
    assert {
        "valid",
        "bomb",
        "foreign",
        "polyglot",
        "mislabelled",
        "truncated",
        "flipped",
    } <= prefixes


def test_every_case_ends_in_an_array_or_a_known_refusal() -> None:
    wrong: list[str] = []
    outcomes: dict[str, int] = {}
    for case in CORPUS:
        try:
            outcome, array = _outcome(case)
        except Exception as exc:  # the point of the test: name every stray exception
            wrong.append(f"{case.name}: {type(exc).__name__}: {exc}")
            continue
        outcomes[outcome] = outcomes.get(outcome, 0) + 1
        if array is not None:
            assert array.shape == (224, 224, 3) and array.dtype == np.uint8, case.name
            assert array.flags.c_contiguous, case.name
        if case.expect == ARRAY and outcome != ARRAY:
            wrong.append(f"{case.name}: expected an array, got {outcome}")
        elif isinstance(case.expect, frozenset) and outcome not in case.expect:
            wrong.append(f"{case.name}: expected {sorted(case.expect)}, got {outcome}")
    assert not wrong, "\n".join(wrong)
    # Both sides are exercised: the corpus is not all refusals nor all decodable.
    assert outcomes.get(ARRAY, 0) >= 50 and sum(outcomes.values()) - outcomes[ARRAY] >= 100


@pytest.mark.parametrize("fmt", ["jpeg", "heic", "avif"])
@pytest.mark.parametrize("orientation", [3, 6, 8])
def test_exif_orientation_is_applied(orientation: int, fmt: str) -> None:
    """The stored image is red on the left, blue on the right; EXIF says how to display it
    (HEIC and AVIF, the phones' formats, turned exactly as JPEG)."""
    case = next(c for c in CORPUS if c.name == f"valid_{fmt}_exif_orientation_{orientation}")
    array = load_image(case.data, LIMITS).astype(int)
    red_minus_blue = array[..., 0] - array[..., 2]
    if orientation == 3:  # rotated 180: red on the right
        assert red_minus_blue[:, -20:].mean() > 100 > -100 > red_minus_blue[:, :20].mean()
    elif orientation == 6:  # rotated 90 clockwise: the left edge becomes the top
        assert red_minus_blue[:20].mean() > 100 > -100 > red_minus_blue[-20:].mean()
    else:  # rotated 90 counter-clockwise: the left edge becomes the bottom
        assert red_minus_blue[-20:].mean() > 100 > -100 > red_minus_blue[:20].mean()


def test_bombs_are_refused_before_decoding() -> None:
    """A tiny file declaring 65535x65535 pixels is refused as too large, not decoded."""
    bombs = [c for c in CORPUS if c.name.startswith("bomb_") and "65535x65535" in c.name]
    assert len(bombs) >= 4
    for case in bombs:
        with pytest.raises(MediaRejected) as info:
            load_image(case.data, LIMITS)
        assert info.value.reason in ("too_large", "unreadable_media"), case.name
        assert len(case.data) < 4096


@pytest.mark.parametrize("case", list(media_bombs()), ids=lambda c: c.name)
def test_a_bomb_in_any_frame_of_an_animation_or_video_is_too_large(case: Case) -> None:
    """The worker's media path (video limits first, as ``worker.scoring`` decides) refuses it as
    ``too_large`` with a detail free of object representations and paths."""
    limits = VideoLimits()
    assert is_video(case.data, limits), case.name
    with pytest.raises(MediaRejected) as info:
        load_video(case.data, limits)
    assert info.value.reason in case.expect, f"{case.name}: {info.value.detail}"  # type: ignore[operator]
    assert public_detail(info.value.detail) == info.value.detail
    assert len(case.data) < 400_000


def test_refusal_details_carry_no_object_repr_or_path() -> None:
    """Pillow's messages name the BytesIO they read ("<_io.BytesIO object at 0x…>")."""
    leaks = []
    for case in CORPUS:
        try:
            load_image(case.data, LIMITS)
        except MediaRejected as exc:
            if " at 0x" in exc.detail or "/tmp/" in exc.detail or "/work/" in exc.detail:
                leaks.append(f"{case.name}: {exc.detail}")
    assert not leaks, "\n".join(leaks[:10])


def test_refusal_reasons_are_documented_failure_reasons() -> None:
    reasons = {v for k, v in vars(FailureReason).items() if k.isupper()}
    assert set(REASONS) <= reasons
    readme = (Path(__file__).parents[2] / "README.md").read_text()
    assert all(f"`{reason}`" in readme for reason in reasons), "README lists every reason"
