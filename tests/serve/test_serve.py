"""vp serve on a real local Ray instance (no mocks), one replica of the tiny bundle: media that PyAV
reads back, the stream, 4xx errors with the CLI's message, health and info."""

import base64
import io
import json
import socket
import urllib.request

import numpy as np
import pytest

pytest.importorskip("ray.serve", reason="needs the serve extra: pip install 'vp[serve]'")

from vp.serve.client import ServeClient, ServeError  # noqa: E402
from vp.serve.replica import parse_body  # noqa: E402


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture(scope="module")
def client(tiny_bundle):
    from vp.serve.app import ServeConfig, start, stop

    # room for two requests (one running, one queued): the backpressure test fills it
    url = start(ServeConfig(bundle=str(tiny_bundle), replicas=1, threads=1, port=_free_port(), backend="ort",
                            queue=1, max_ongoing=1))
    try:
        yield ServeClient(url, timeout=120)
    finally:
        stop()


def test_t2v_returns_an_mp4_with_17_frames(client):
    import av

    data = client.generate(task="t2v", prompt="a red circle moving left", seed=1)
    with av.open(io.BytesIO(data)) as container:
        frames = [f.to_ndarray(format="rgb24") for f in container.decode(video=0)]
        assert container.streams.audio  # t2v carries its sound
    assert len(frames) == 17 and frames[0].shape == (64, 64, 3)


def test_media_inputs_and_other_outputs(client, media, tmp_path):
    from vp.runtime.media import read_audio, write_mp4

    clip = tmp_path / "clip.mp4"
    write_mp4(clip, media["video"], 8)
    wav = client.generate(task="v2a", video=clip, seed=0)
    assert read_audio_bytes(wav, tmp_path, read_audio).shape == (34000,)
    png = client.generate(task="t2i", prompt="a fox")
    assert png[:8] == b"\x89PNG\r\n\x1a\n"


def read_audio_bytes(data, folder, read_audio):
    path = folder / "out.wav"
    path.write_bytes(data)
    return read_audio(path, 16000)


def test_stream_sends_each_latent_frame(client):
    chunks = list(client.stream(task="t2v", prompt="a red circle moving left", seed=1, num_samples=1, sr=False))
    assert [c.latent_frame for c in chunks] == [0, 1, 2, 3, 4]
    assert sum(len(c.frames) for c in chunks) == 17 and chunks[0].frames.dtype == np.uint8


@pytest.mark.parametrize("fields, status, message", [
    (dict(task="t2v"), 400, "task t2v needs a prompt (task uncond generates without text)"),
    (dict(task="t2v", prompt="a fox", seed=-1), 400, "seed must lie in [0, 9223372036854775807], got -1"),
    (dict(task="dance", prompt="a fox"), 400, "'dance' is not a valid Task"),
    (dict(task="t2v", prompt="a fox", colour="red"), 400, "unknown field(s) ['colour']"),
    (dict(task="v2a", video="%%%"), 400, "field 'video' is not base64"),
    (dict(task="t2v", prompt="a fox", seconds=3), 400, "--seconds sets the length of a long video"),
])
def test_bad_requests_are_4xx_with_the_clis_message(client, fields, status, message):
    with pytest.raises(ServeError) as error:
        client.generate(**fields)
    assert error.value.status == status and message in error.value.message


def test_a_stream_refuses_what_it_cannot_do(client):
    with pytest.raises(ServeError, match="a stream is one sample without super-resolution; remove num_samples"):
        next(client.stream(task="t2v", prompt="a fox", num_samples=2))
    with pytest.raises(ServeError, match="task t2i cannot stream"):
        next(client.stream(task="t2i", prompt="a fox"))


def test_a_client_that_leaves_a_stream_leaves_the_replica_serving(client):
    """Closing the connection after the first latent frame cancels the stream on the replica, which
    must close it cleanly (a step still running is waited for) and serve the next request."""
    stream = client.stream(task="t2v", prompt="a fox", seed=3)
    assert next(stream).latent_frame == 0
    stream.close()
    assert client.generate(task="t2i", prompt="a fox")[:4] == b"\x89PNG"


def test_a_body_that_is_not_json(client):
    request = urllib.request.Request(client.url + "/v1/generate", data=b"{not json", method="POST")
    with pytest.raises(urllib.error.HTTPError) as error:
        urllib.request.urlopen(request, timeout=30)
    assert error.value.code == 400 and "not JSON" in json.loads(error.value.read())["error"]


def test_a_full_queue_answers_503_with_retry_after(client):
    from concurrent.futures import ThreadPoolExecutor

    def attempt(seed):
        try:
            client.generate(task="t2v", prompt="a fox", seed=seed)  # 1-2 s: the six overlap
            return "ok"
        except ServeError as error:
            return error.status, error.message, error.retry_after

    with ThreadPoolExecutor(6) as pool:
        answers = list(pool.map(attempt, range(6)))
    busy = [a for a in answers if a != "ok"]
    assert 1 <= answers.count("ok") <= 5 and busy  # some served, the rest refused at once, none lost
    assert set(busy) == {(503, "every replica is busy and the queue is full; retry later", 1.0)}


def test_health_and_info(client, tiny_bundle):
    from vp.runtime.bundle import Bundle

    assert client.health() == {"status": "ok", "replicas": 1, "wanted": 1}
    info = client.info()
    assert info["preset"] == "tiny" and info["backend"] == "ort"
    assert info["digest"] == Bundle.open(tiny_bundle).manifest.digest()


def test_parse_body_names_the_field():
    with pytest.raises(ValueError, match="must be a JSON object"):
        parse_body([1, 2])
    with pytest.raises(ValueError, match="field 'sr' must be true or false, got int"):
        parse_body({"sr": 1})
    with pytest.raises(ValueError, match="field 'seed' must be a whole number, got bool"):
        parse_body({"seed": True})
    with pytest.raises(ValueError, match=r"field 'box' must be \[x0, y0, x1, y1\]"):
        parse_body({"box": [1, 2, 3]})
    assert parse_body({"image": base64.b64encode(b"x").decode(), "top_p": 1}) is not None
    assert parse_body({"task": "t2v", "sampling": {"temperature": 0}}) == {"task": "t2v", "temperature": 0}
    with pytest.raises(ValueError, match=r"unknown sampling field\(s\) \['temp'\]"):
        parse_body({"sampling": {"temp": 0}})
    with pytest.raises(ValueError, match="top_k given both in 'sampling' and at the top level"):
        parse_body({"sampling": {"top_k": 1}, "top_k": 2})


def test_serving_doc_client_example_runs(client, media, tmp_path, monkeypatch, capsys):
    import re
    from pathlib import Path

    from vp.runtime.media import write_mp4

    doc = Path(__file__).parents[2] / "docs" / "serving.md"
    code = re.search(r"```python\n(.*?)```", doc.read_text(), re.S).group(1)
    write_mp4(tmp_path / "circle.mp4", media["video"], 8)
    monkeypatch.chdir(tmp_path)
    exec(compile(code.replace("http://127.0.0.1:8000", client.url), str(doc), "exec"), {})
    out = capsys.readouterr().out
    assert "4 (4, 64, 64, 3)" in out and "400 task t2v needs a prompt" in out


def test_cli_refuses_bad_options_before_starting_ray(tmp_path):
    from click.testing import CliRunner

    from vp.runtime.cli import main

    result = CliRunner().invoke(main, ["serve", "--bundle", str(tmp_path)])
    assert result.exit_code == 1 and "has no manifest.json (make one with vp-export)" in result.output
    result = CliRunner().invoke(main, ["serve", "--bundle", str(tmp_path), "--replicas", "0"])
    assert result.exit_code == 1 and "replicas, threads and queue must be positive" in result.output
