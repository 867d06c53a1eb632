"""`vp-reference`: a real .mp4 that a decoder reads back; bad input exits 1 with a message."""

import av
from click.testing import CliRunner

from vp.models.cli import main


def test_writes_an_h264_aac_mp4(tmp_path):
    out = tmp_path / "fox.mp4"
    result = CliRunner().invoke(main, ["a red fox", "--preset", "tiny", "-o", str(out), "--temperature", "0"])
    assert result.exit_code == 0, result.output
    assert "17 frames, 2.125 s" in result.output
    with av.open(str(out)) as container:
        video, audio = container.streams.video[0], container.streams.audio[0]
        assert video.codec_context.name == "h264" and audio.codec_context.name == "aac"
        assert (video.width, video.height) == (64, 64)
        frames = [f for f in container.decode(video=0)]
    assert len(frames) == 17
    assert list(tmp_path.iterdir()) == [out]  # no temporary file left behind


def test_bad_input_exits_with_a_message(tmp_path):
    result = CliRunner().invoke(main, ["fox", "--preset", "huge"])
    assert result.exit_code == 2 and "huge" in result.output
    result = CliRunner().invoke(main, ["fox", "--temperature", "-1", "-o", str(tmp_path / "x.mp4")])
    assert result.exit_code == 1 and "temperature must be >= 0" in result.output
    assert not (tmp_path / "x.mp4").exists()
