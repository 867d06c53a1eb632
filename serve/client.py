"""A Python client of `vp serve` (standard library only: an app needs nothing else to call it).

    client = ServeClient("http://127.0.0.1:8000")
    mp4 = client.generate(task="t2v", prompt="a red circle moving left", seed=0)   # bytes of the mp4
    for chunk in client.stream(task="t2v", prompt="a red circle moving left"):      # FrameChunk per latent frame
        show(chunk.frames)
    client.generate(task="v2a", video=Path("clip.mp4"))                          # media: a Path or bytes

Errors the service reports come back as ServeError(status, message): the
message is the one `vp generate` prints for the same request.
"""

from __future__ import annotations

import base64
import json
import urllib.error
import urllib.request
from collections.abc import Iterator
from pathlib import Path

import numpy as np

from vp.runtime.result import FrameChunk

_MEDIA = ("image", "video", "audio", "mask")


class ServeError(Exception):
    """status: the HTTP status (4xx: the request; 503: busy or a replica died, retry after
    `retry_after` seconds); message: the service's error."""

    def __init__(self, status: int, message: str, retry_after: float | None = None):
        super().__init__(f"{status}: {message}")
        self.status, self.message, self.retry_after = status, message, retry_after


class ServeClient:
    def __init__(self, url: str = "http://127.0.0.1:8000", timeout: float = 600.0):
        self.url = url.rstrip("/")
        self.timeout = timeout

    def generate(self, **fields) -> bytes:
        """The output file's bytes: video/mp4, image/png (t2i), audio/wav (v2a), or a zip of
        sample-i files when num_samples > 1."""
        with self._open("/v1/generate", _body(fields)) as response:
            return response.read()

    def stream(self, **fields) -> Iterator[FrameChunk]:
        """The frames of each latent frame as soon as the service has them."""
        with self._open("/v1/generate/stream", _body(fields)) as response:
            for line in response:
                item = json.loads(line)
                if "error" in item:
                    raise ServeError(200, item["error"])
                if item.get("done"):
                    return
                shape = (item["frames"], item["height"], item["width"], 3)
                frames = np.frombuffer(base64.b64decode(item["rgb"]), np.uint8).reshape(shape)
                yield FrameChunk(latent_frame=item["latent_frame"], frames=frames)

    def health(self) -> dict:
        """{"status": "ok", "replicas", "wanted"}; ServeError(503) while a replica is missing."""
        with self._open("/healthz") as response:
            return json.loads(response.read())

    def info(self) -> dict:
        with self._open("/v1/info") as response:
            return json.loads(response.read())

    def _open(self, path: str, body: bytes | None = None):
        request = urllib.request.Request(self.url + path, data=body,
                                         headers={"Content-Type": "application/json"} if body else {})
        try:
            return urllib.request.urlopen(request, timeout=self.timeout)
        except urllib.error.HTTPError as error:
            try:
                message = json.loads(error.read()).get("error", error.reason)
            except ValueError:
                message = str(error.reason)
            retry = error.headers.get("Retry-After")
            raise ServeError(error.code, message, float(retry) if retry else None) from None


def _body(fields: dict) -> bytes:
    """JSON of the fields; media given as a Path or bytes become base64 of the file's bytes (a str
    is sent as it is: base64 already)."""
    out = dict(fields)
    for name in _MEDIA:
        value = out.get(name)
        if isinstance(value, Path):
            value = value.read_bytes()
        if isinstance(value, bytes):
            out[name] = base64.b64encode(value).decode()
    return json.dumps(out).encode()
