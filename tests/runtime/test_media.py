"""Media through PyAV: files a real decoder reads back, the resize/resample rules, clear errors."""

import av
import numpy as np
import pytest

from vp.runtime import media


@pytest.fixture(scope="module")
def clip(tmp_path_factory):
    folder = tmp_path_factory.mktemp("media")
    rng = np.random.default_rng(0)
    frames = np.repeat(rng.integers(0, 255, (17, 1, 1, 3), dtype=np.uint8), 64, 1).repeat(96, 2)  # flat colours
    wave = (0.5 * np.sin(np.arange(34000) / 16000 * 2 * np.pi * 440)).astype(np.float32)
    path = media.write_mp4(folder / "clip.mp4", frames, 8, wave, 16000)
    return path, frames, wave


def test_mp4_has_h264_and_aac_with_the_right_length(clip):
    path, frames, _ = clip
    with av.open(str(path)) as container:
        video, audio = container.streams.video[0], container.streams.audio[0]
        assert video.codec_context.name == "h264" and video.codec_context.pix_fmt == "yuv420p"
        assert audio.codec_context.name == "aac" and audio.codec_context.sample_rate == 16000
        assert video.average_rate == 8
        decoded = [f.to_ndarray(format="rgb24") for f in container.decode(video=0)]
    assert len(decoded) == 17
    assert np.abs(decoded[5].astype(int) - frames[5]).mean() < 8  # lossy, but the same picture


def test_read_video_samples_at_fps_and_crops_the_centre(clip):
    path, frames, _ = clip
    video = media.read_video(path, (64, 64), fps=8)
    assert video.shape == (17, 64, 64, 3) and video.dtype == np.uint8
    assert np.abs(video[3].astype(int) - frames[3, :, 16:80]).mean() < 8
    assert media.read_video(path, (64, 64), fps=4).shape == (9, 64, 64, 3)  # every other frame
    assert media.read_video(path, (32, 32), fps=8, max_frames=7).shape == (5, 32, 32, 3)  # 1 + 4k


def test_read_audio_resamples_to_mono(clip):
    path, _, wave = clip
    got = media.read_audio(path, 16000)
    assert abs(len(got) - 34000) <= 1024  # AAC adds encoder priming
    assert 0.4 < np.abs(got).max() < 0.6
    assert abs(len(media.read_audio(path, 8000)) - 17000) <= 512
    assert len(media.read_audio(path, 16000, max_seconds=1.0)) == 16000


def test_wav_and_png_round_trip(tmp_path):
    wave = np.linspace(-1, 1, 1600, dtype=np.float32)
    path = media.write_wav(tmp_path / "a.wav", wave, 16000)
    np.testing.assert_allclose(media.read_audio(path, 16000), wave, atol=1e-4)
    frame = np.random.default_rng(1).integers(0, 255, (32, 48, 3), dtype=np.uint8)
    path = media.write_png(tmp_path / "a.png", frame)
    np.testing.assert_array_equal(media.read_image(path, (32, 48)), frame)  # lossless, no resize
    np.testing.assert_array_equal(media.read_image(path, (32, 32)), frame[:, 8:40])


def test_unreadable_missing_and_empty_files_are_named(tmp_path):
    (tmp_path / "bad.mp4").write_text("not a video")
    with pytest.raises(ValueError, match="bad.mp4: cannot read it as media"):
        media.read_video(tmp_path / "bad.mp4", (64, 64), 8)
    with pytest.raises(ValueError, match="nothing.png: no such file"):
        media.read_image(tmp_path / "nothing.png", (64, 64))
    path = media.write_wav(tmp_path / "a.wav", np.zeros(100, np.float32), 16000)
    with pytest.raises(ValueError, match="a.wav: has no video stream"):
        media.read_video(path, (64, 64), 8)
    png = media.write_png(tmp_path / "a.png", np.zeros((8, 8, 3), np.uint8))
    with pytest.raises(ValueError, match="a.png: has no audio stream"):
        media.read_audio(png, 16000)


def test_failed_write_leaves_nothing(tmp_path):
    with pytest.raises(ValueError, match="even height"):
        media.write_mp4(tmp_path / "odd.mp4", np.zeros((3, 63, 64, 3), np.uint8), 8)
    with pytest.raises(ValueError, match="uint8"):
        media.write_mp4(tmp_path / "x.mp4", np.zeros((3, 64, 64, 3), np.float32), 8)
    assert list(tmp_path.iterdir()) == []
    with pytest.raises(ValueError, match="does not exist"):
        media.write_wav(tmp_path / "no" / "a.wav", np.zeros(10, np.float32), 16000)


def test_written_files_get_the_usual_permissions(tmp_path):
    import os

    mask = os.umask(0)
    os.umask(mask)
    path = media.write_wav(tmp_path / "a.wav", np.zeros(10, np.float32), 16000)
    assert path.stat().st_mode & 0o777 == 0o666 & ~mask


def test_identical_clips_give_identical_bytes(tmp_path):
    """H.264 + AAC output is byte-reproducible (x264 on one thread), also when written concurrently."""
    from concurrent.futures import ThreadPoolExecutor

    rng = np.random.default_rng(1)
    frames = rng.integers(0, 256, (17, 128, 128, 3), dtype=np.uint8)
    audio = rng.uniform(-0.3, 0.3, 34000).astype(np.float32)
    paths = [tmp_path / f"{i}.mp4" for i in range(4)]
    with ThreadPoolExecutor(4) as pool:
        list(pool.map(lambda p: media.write_mp4(p, frames, 8, audio, 16000), paths))
    assert len({p.read_bytes() for p in paths}) == 1
