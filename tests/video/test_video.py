"""Video sniffing, sampling, scene changes, limits, refusals and the aggregation rule."""

from __future__ import annotations

import io

import numpy as np
import pytest

from moderation.mediahash import video_hash
from moderation.preprocess import (
    TOO_LARGE,
    UNREADABLE_MEDIA,
    UNSUPPORTED_MEDIA,
    MediaRejected,
    image_to_input,
    load_image,
)
from moderation.settings import load_settings
from moderation.video import (
    Sampler,
    VideoLimits,
    aggregate,
    decode_video,
    is_video,
    load_video,
    sniff_video,
    top_k,
)
from tests.fixtures.media import encode as encode_image
from tests.fixtures.media import flat_image
from tests.video.media import animated, audio_only, colour_frames, encode

LIMITS = VideoLimits(max_frames=8)


@pytest.fixture(scope="module")
def clip() -> bytes:
    """2 s, 64x64, 10 fps, dark until frame 13 then bright: one scene change at 1.3 s."""
    return encode(colour_frames(20, change_at=13))


@pytest.mark.parametrize("fmt", ["mp4", "mov", "webm"])
def test_each_container_is_sniffed_and_sampled_uniformly(fmt: str) -> None:
    data = encode(colour_frames(20), fmt=fmt)
    assert sniff_video(data) is not None and is_video(data, LIMITS)
    frames = load_video(data, LIMITS)
    times = [f.timestamp for f in frames]
    # 8 frames cap: 6 uniform slots over 2 s, 2 slots for scene changes (none here).
    assert len(frames) == 6 and times == sorted(times) and times[0] == 0.0 and times[-1] < 2.0
    assert all(f.pixels.shape == (224, 224, 3) and f.pixels.dtype == np.uint8 for f in frames)
    assert not any(f.scene_change for f in frames)


def test_scene_change_adds_a_frame_at_the_cut(clip: bytes) -> None:
    frames = load_video(clip, LIMITS)
    cuts = [f.timestamp for f in frames if f.scene_change]
    assert cuts == [1.3]
    assert len(frames) == 7
    # The frame after the cut is bright, the first frame dark.
    assert frames[0].pixels.mean() < 80 < next(f for f in frames if f.scene_change).pixels.mean()


def test_frames_use_the_image_preprocessing_path(clip: bytes) -> None:
    first = load_video(clip, LIMITS)[0].pixels
    import av

    with av.open(io.BytesIO(clip), mode="r") as container:
        decoded = next(container.decode(video=0)).to_image()
    assert np.array_equal(first, image_to_input(decoded))
    assert np.array_equal(first, load_image(encode_image(decoded, "PNG")))


def test_per_video_cap_holds_for_a_long_clip() -> None:
    data = encode(colour_frames(60, size=32), fps=30)
    frames = load_video(data, VideoLimits(max_frames=4))
    assert len(frames) == 3  # 3 uniform + 1 scene slot unused


def test_sampler_reserves_a_quarter_for_scene_changes() -> None:
    sampler = Sampler(total=10.0, max_frames=8, threshold=10.0)
    dark, bright = np.zeros((4, 4), np.uint8), np.full((4, 4), 255, np.uint8)
    assert sampler.offer(0.0, dark) == (True, False)
    assert sampler.offer(0.5, dark) == (False, False)
    assert sampler.offer(0.6, bright) == (True, True)
    assert sampler.offer(0.7, dark) == (True, True)
    assert sampler.offer(0.8, bright) == (False, False)  # scene budget (2) spent
    assert sampler.offer(1.7, bright) == (True, False)  # next uniform slot at 10/6 s


def test_animated_gif_and_webp_are_video_single_frame_is_not() -> None:
    for fmt in ("GIF", "WEBP"):
        data = animated(colour_frames(12, change_at=7), fmt=fmt)
        assert is_video(data, LIMITS)
        frames = load_video(data, LIMITS)
        assert [f.timestamp for f in frames if f.scene_change] == [0.7]
        still = flat_image((8, 8), fmt=fmt, color=(0, 0, 0))
        assert not is_video(still, LIMITS)
    assert not is_video(animated(colour_frames(3)), VideoLimits(enabled=False))


def _reason(data: bytes, limits: VideoLimits = LIMITS) -> str:
    with pytest.raises(MediaRejected) as info:
        load_video(data, limits)
    return info.value.reason


def test_limits_end_too_large(clip: bytes) -> None:
    assert _reason(clip, VideoLimits(max_seconds=1.0)) == TOO_LARGE
    assert _reason(clip, VideoLimits(max_pixels=32 * 32)) == TOO_LARGE
    assert _reason(clip, VideoLimits(max_bytes=100)) == TOO_LARGE
    with_audio = encode(colour_frames(10), audio=True)
    assert len(load_video(with_audio, LIMITS)) >= 1
    assert _reason(with_audio, VideoLimits(max_streams=1)) == TOO_LARGE
    gif = animated(colour_frames(30), duration_ms=100)
    assert _reason(gif, VideoLimits(max_seconds=1.0)) == TOO_LARGE


def test_bad_input_is_refused_with_a_reason(clip: bytes) -> None:
    assert _reason(audio_only()) == UNSUPPORTED_MEDIA
    assert _reason(b"") == UNREADABLE_MEDIA
    fake = b"\x00\x00\x00\x18ftypisom" + b"not really a video" * 20
    assert _reason(fake) in (UNREADABLE_MEDIA, UNSUPPORTED_MEDIA)
    assert _reason(b"\x1a\x45\xdf\xa3" + bytes(200)) in (UNREADABLE_MEDIA, UNSUPPORTED_MEDIA)
    assert _reason(clip[: len(clip) // 2]) in (UNREADABLE_MEDIA, UNSUPPORTED_MEDIA)
    assert sniff_video(b"\x00\x00\x00\x18ftypheic" + bytes(16)) is None


def test_headers_without_frames_and_cut_webm_are_unreadable() -> None:
    webm = encode(colour_frames(20), fmt="webm")
    assert _reason(webm[:200]) == UNREADABLE_MEDIA  # EBML header only
    with pytest.raises(MediaRejected, match="no decodable video frame"):
        load_video(webm[: len(webm) // 3], LIMITS)  # stream header, no complete frame


def _six_seconds(fmt: str) -> bytes:
    """6 s at 10 fps with a cut at 0.5 s: with 4 frames at most, sampling spends its one scene
    slot at the cut and takes its last uniform frame at 4 s, so 4-6 s are decoded only to hash."""
    frames = colour_frames(60, change_at=5)
    return animated(frames) if fmt == "GIF" else encode(frames, fmt=fmt)


@pytest.mark.parametrize("fmt", ["mp4", "webm", "GIF"])
def test_one_decode_gives_the_frames_and_the_hashes_of_each_second(fmt: str) -> None:
    data, limits = _six_seconds(fmt), VideoLimits(max_frames=4)
    video = decode_video(data, limits, hash_seconds=True)
    alone = load_video(data, limits)
    assert [f.timestamp for f in video.frames] == [f.timestamp for f in alone]
    assert all(np.array_equal(a.pixels, b.pixels) for a, b in zip(video.frames, alone, strict=True))
    assert max(f.timestamp for f in video.frames) < 5.0  # sampling stopped before the end
    expected = video_hash(data, max_seconds=limits.max_seconds)
    assert expected is not None and video.media == expected
    assert [f.timestamp_s for f in expected.frames] == [0.0, 1.0, 2.0, 3.0, 4.0, 5.0]
    assert decode_video(data, limits).media is None  # hashes only when asked for


def test_a_frame_that_cannot_be_hashed_gives_up_the_hash_not_the_frames(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    import moderation.mediahash as mediahash

    data, limits = _six_seconds("mp4"), VideoLimits(max_frames=4)
    real, calls = mediahash.image_pdq, []

    def failing_after_two(image: object) -> object:
        calls.append(image)
        if len(calls) > 2:
            raise ValueError("a frame PDQ cannot read")
        return real(image)  # type: ignore[arg-type]

    monkeypatch.setattr(mediahash, "image_pdq", failing_after_two)
    video = decode_video(data, limits, hash_seconds=True)
    assert video.media is None
    assert [f.timestamp for f in video.frames] == [f.timestamp for f in load_video(data, limits)]


def test_aggregation_is_the_mean_of_the_top_quarter() -> None:
    assert [top_k(n) for n in (1, 4, 5, 8, 9, 32)] == [1, 1, 2, 2, 3, 8]
    assert aggregate([0.2]) == (0.2, [0])
    score, chosen = aggregate([0.1, 0.9, 0.1, 0.1, 0.7, 0.1, 0.1, 0.1])
    assert chosen == [1, 4] and score == pytest.approx(0.8)
    # One short fake segment in a long clean clip still dominates; ties keep time order.
    score, chosen = aggregate([0.05] * 9 + [0.95] * 3)
    assert chosen == [9, 10, 11] and score == pytest.approx(0.95)
    assert aggregate([0.5, 0.5, 0.5, 0.5, 0.5])[1] == [0, 1]
    with pytest.raises(ValueError):
        aggregate([])


def test_settings_build_the_limits() -> None:
    settings = load_settings({"DFMOD_MAX_VIDEO_FRAMES": "12", "DFMOD_VIDEO_ENABLED": "0"})
    limits = VideoLimits.from_settings(settings)
    assert limits.max_frames == 12 and not limits.enabled
    assert limits.max_bytes == settings.max_upload_bytes
