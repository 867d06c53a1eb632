"""One serving replica: a Pipeline over the bundle, answering generation requests.

A request is the JSON body of `POST /v1/generate` (docs/serving.md): the
fields of `vp generate` / `Pipeline.generate` by name, input media as base64
of their file's bytes. The replica writes the media to a scratch folder, runs
the same FileRequest as `vp generate` (so it checks and reads inputs, and
writes outputs, the same way), and answers with the output file's bytes.
Every user error comes back as {"status": 400, "error": the CLI's message}.
"""

from __future__ import annotations

import asyncio
import base64
import binascii
import io
import os
import socket
import tempfile
import zipfile
from pathlib import Path

import numpy as np

from vp.runtime.file_request import FileRequest, read_inputs, run_request
from vp.runtime.pipeline import Pipeline
from vp.runtime.vocab import Task

MEDIA_FIELDS = ("image", "video", "audio", "mask")
SAMPLING_FIELDS = ("temperature", "top_k", "top_p", "cfg_scale")
FIELDS = ("task", "prompt", "seed", "num_samples", "seconds", "portrait", "sr", "box", "sampling", *MEDIA_FIELDS,
          *SAMPLING_FIELDS)
CONTENT_TYPES = {".mp4": "video/mp4", ".png": "image/png", ".wav": "audio/wav"}
_TYPES = {"task": str, "prompt": str, "seed": int, "num_samples": int, "seconds": (int, float), "portrait": bool,
          "sr": bool, "box": list, "temperature": (int, float), "top_k": int, "top_p": (int, float),
          "cfg_scale": (int, float), "sampling": dict, **dict.fromkeys(MEDIA_FIELDS, str)}


def parse_body(body) -> dict:
    """The request's fields, checked for names and JSON types (ValueError naming the field). The
    sampling overrides may also come as one object, "sampling": {"temperature": 0, ...}."""
    if not isinstance(body, dict):
        raise ValueError("the request body must be a JSON object of generation fields")
    nested = body.get("sampling")
    if isinstance(nested, dict):
        unknown = sorted(set(nested) - set(SAMPLING_FIELDS))
        if unknown:
            raise ValueError(f"unknown sampling field(s) {unknown}; sampling: {', '.join(SAMPLING_FIELDS)}")
        twice = sorted(set(nested) & set(body))
        if twice:
            raise ValueError(f"{', '.join(twice)} given both in 'sampling' and at the top level")
        body = {**{k: v for k, v in body.items() if k != "sampling"}, **nested}
    unknown = sorted(set(body) - set(FIELDS))
    if unknown:
        raise ValueError(f"unknown field(s) {unknown}; fields: {', '.join(FIELDS)}")
    for name, value in body.items():
        types = _TYPES[name]
        if value is not None and (not isinstance(value, types) or (types is not bool and isinstance(value, bool))):
            raise ValueError(f"field {name!r} must be {_type_name(types)}, got {type(value).__name__}")
    box = body.get("box")
    if box is not None and (len(box) != 4 or not all(isinstance(v, int) and not isinstance(v, bool) for v in box)):
        raise ValueError("field 'box' must be [x0, y0, x1, y1] whole pixels")
    return body


def _type_name(types) -> str:
    names = {str: "a string", int: "a whole number", float: "a number", bool: "true or false", list: "a list",
             dict: "an object"}
    return " or ".join(names[t] for t in (types if isinstance(types, tuple) else (types,)) if t in names)


def output_suffix(task: str) -> str:
    return {"t2i": ".png", "v2a": ".wav"}.get(task, ".mp4")


class Replica:
    """The Pipeline of one replica and the requests it answers (the Ray deployment wraps this)."""

    def __init__(self, bundle: str, backend: str = "auto", threads: int | None = None):
        if threads:
            os.environ["VP_THREADS"] = str(threads)  # ONNX Runtime's intra-op threads for this replica
        self.pipeline = Pipeline.load(bundle, backend=backend)
        self.name = f"{socket.gethostname()}:{os.getpid()}"

    def generate(self, body) -> dict:
        """{"status": 200, "content_type", "body": bytes} or {"status": 400, "error": message}."""
        try:
            fields = parse_body(body)
            with tempfile.TemporaryDirectory(prefix="vp-serve-") as scratch:
                request = self._file_request(fields, Path(scratch))
                request.check()
                _, paths = run_request(self.pipeline, request)
                if len(paths) == 1:
                    return {"status": 200, "content_type": CONTENT_TYPES[paths[0].suffix],
                            "body": paths[0].read_bytes(), "replica": self.name}
                archive = io.BytesIO()
                with zipfile.ZipFile(archive, "w") as z:
                    for i, path in enumerate(paths):
                        z.writestr(f"sample-{i}{path.suffix}", path.read_bytes())
                return {"status": 200, "content_type": "application/zip", "body": archive.getvalue(),
                        "replica": self.name}
        except ValueError as error:
            return {"status": 400, "error": str(error), "replica": self.name}

    async def stream(self, body):
        """Yields {"status": 200} then one {"latent_frame", "frames", "height", "width", "rgb": base64
        of the frames' uint8 RGB bytes} per latent frame, then {"done": true}; or a single
        {"status": 400, "error"} when the request is refused before its first step.

        Asynchronous, each step in a worker thread: when the client goes away, Ray cancels this
        generator between steps, and the stream is closed (its KV blocks released) instead of
        generating the rest of the clip for nobody."""
        loop = asyncio.get_running_loop()
        opened = await loop.run_in_executor(None, self._open_stream, body)
        if isinstance(opened, dict):
            yield opened
            return
        chunks, chunk = opened
        step = None
        try:
            yield {"status": 200, "replica": self.name}
            while chunk is not None:
                frames = np.ascontiguousarray(chunk.frames)
                yield {"latent_frame": chunk.latent_frame, "frames": len(frames), "height": frames.shape[1],
                       "width": frames.shape[2], "rgb": base64.b64encode(frames.tobytes()).decode()}
                step = loop.run_in_executor(None, next, chunks, None)
                chunk = await asyncio.shield(step)  # a cancel must not abandon a step that is running
                step = None
            yield {"done": True}
        finally:
            if step is not None:
                await asyncio.wait([step])  # the step in flight ends before the stream is closed
            chunks.close()

    def _open_stream(self, body):
        """(the pipeline's stream, its first FrameChunk), or the 400 answer."""
        try:
            fields = parse_body(body)
            task = fields.get("task") or "t2v"
            if task not in {"t2v", "uncond", "i2v", "a2v", "continue", "inpaint", "outpaint", "stylize",
                            "av-continue"}:
                raise ValueError(f"task {task} cannot stream (it makes no video, or several clips)")
            extra = [name for name, default in (("num_samples", 1), ("sr", False), ("seconds", None))
                     if fields.get(name, default) not in (default, None)]
            if extra:
                raise ValueError(f"a stream is one sample without super-resolution; remove {', '.join(extra)}")
            with tempfile.TemporaryDirectory(prefix="vp-serve-") as scratch:
                request = self._file_request(fields, Path(scratch))
                request.check()
                inputs = read_inputs(self.pipeline, request)
            chunks = self.pipeline.stream(task=task, prompt=request.prompt, seed=request.seed,
                                          portrait=request.portrait, **inputs, **request.sampling)
            return chunks, next(chunks)
        except ValueError as error:
            return {"status": 400, "error": str(error), "replica": self.name}

    def info(self) -> dict:
        """The bundle's manifest summary."""
        b = self.pipeline.bundle
        m = b.manifest
        return {"preset": b.name, "format_version": m.format_version, "digest": m.digest(),
                "backend": self.pipeline.backend.name, "backend_reason": self.pipeline.backend_reason,
                "components": {name: c.precision for name, c in m.components.items()},
                "engines": {name: e.flavour for name, e in m.engines.items()},
                "clip": {k: m.clip[k] for k in ("frames", "height", "width", "fps", "sample_rate")},
                "sampling": m.sampling, "tasks": sorted(t.value for t in Task), "replica": self.name}

    def close(self) -> None:
        self.pipeline.close()

    def _file_request(self, fields: dict, scratch: Path) -> FileRequest:
        task = fields.get("task") or "t2v"
        files = {}
        for name in MEDIA_FIELDS:
            if fields.get(name) is None:
                continue
            try:
                data = base64.b64decode(fields[name], validate=True)
            except (binascii.Error, ValueError):
                raise ValueError(f"field {name!r} is not base64 (send the file's bytes base64-encoded)") from None
            files[name] = scratch / f"input-{name}"
            files[name].write_bytes(data)
        sampling = {k: fields[k] for k in SAMPLING_FIELDS if fields.get(k) is not None}
        box = tuple(fields["box"]) if fields.get("box") is not None else None
        return FileRequest(task=task, prompt=fields.get("prompt") or "", output=scratch / f"out{output_suffix(task)}",
                           box=box, seed=fields.get("seed", 0), samples=fields.get("num_samples", 1),
                           seconds=fields.get("seconds"), portrait=bool(fields.get("portrait")),
                           sr=bool(fields.get("sr")), sampling=sampling, **files)
