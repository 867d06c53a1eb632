"""manifest.json: what a bundle holds, and the fingerprints that guard it.

    bundle/
      manifest.json     this file's Manifest
      onnx/*.onnx       (+ external weight files for graphs over 2 GB; quantized bundles add
                        onnx/*.cpu.onnx, the graphs ONNX Runtime's CPU provider loads)
      engines/*.engine  when a TensorRT builder was available
      timing.cache      full TensorRT's timing cache, reused by the next export (--force)
      tokenizer.json    the text tokenizer

The runtime reads only the bundle, never vp.models: the preset config, the
vocabulary layout and the sampling defaults are copied in here.

What the fingerprints guard (docs/reliability.md): every file the runtime
opens (graphs, external weights by size, engines, tokenizer.json) has its
sha256 here, and the manifest carries a digest of its own content except the
sampling defaults (which users may tune, and which are validated on read), so
an accidental or deliberate edit of one file, or of the manifest's config,
is refused at load. An attacker who can rewrite the manifest can recompute
all of it; apps that need more pin `Manifest.digest()` (`vp info --sha256`,
`Pipeline.load(..., expect_digest=...)`). Every path the manifest names must
resolve inside the bundle (no absolute paths, no `..`, no symlinks out), and
the path that is hashed is the path that is opened.
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import asdict, dataclass, field
from pathlib import Path

from vp.engines.builder import EngineRecord, sha256_of
from vp.engines.contract import Contract

FORMAT_VERSION = 7  # 7: the KV pool as one input per layer and K/V, read in place; 6: the LLM computes one output head per call (input `head`); 5: video_decoder_first + _step
TOKENIZER = "tokenizer.json"
UNSIGNED = ("sampling", "config_sha256")  # what the manifest's own digest leaves out


@dataclass(frozen=True)
class ComponentRecord:
    """One exported component: its ONNX file, fingerprint, precision (vp.engines.precision) and
    contract; a quantized bundle adds cpu_onnx, the graph ONNX Runtime's CPU provider loads, and
    for int8-wo cpu_kernel_block: the block along K of the integer kernel (MatMulNBits) ONNX
    Runtime fuses from that graph's DequantizeLinear + MatMul, the block its accuracy gate was run
    with (None: ONNX Runtime's default, 32; vp.runtime.backends.ort)."""

    onnx: str
    sha256: str
    bytes: int
    precision: str
    contract: Contract
    external_data: tuple[str, ...] = ()
    parity: dict = field(default_factory=dict)
    cpu_onnx: str | None = None
    cpu_sha256: str = ""
    cpu_kernel_block: int | None = None

    def to_dict(self) -> dict:
        d = asdict(self)
        d["contract"] = self.contract.to_dict()
        return d

    @classmethod
    def from_dict(cls, d: dict) -> ComponentRecord:
        return cls(**{**d, "contract": Contract.from_dict(d["contract"]),
                      "external_data": tuple(d.get("external_data", ()))})


@dataclass
class Manifest:
    preset: dict
    vocabulary: dict
    sampling: dict
    clip: dict
    components: dict[str, ComponentRecord] = field(default_factory=dict)
    engines: dict[str, EngineRecord] = field(default_factory=dict)
    engines_note: str = ""
    weights: str | None = None  # the safetensors folder exported, None for the preset's seeded init (seed 0)
    tokenizer_sha256: str = ""
    calibration: dict | None = None  # a quantized bundle's vp.calibration.record.CalibrationRecord
    format_version: int = FORMAT_VERSION

    def body(self) -> dict:
        """The JSON object of manifest.json (without its own digest)."""
        return {
            "format_version": self.format_version,
            "preset": self.preset,
            "vocabulary": self.vocabulary,
            "sampling": self.sampling,
            "clip": self.clip,
            "components": {k: v.to_dict() for k, v in self.components.items()},
            "engines": {k: v.to_dict() for k, v in self.engines.items()},
            "engines_note": self.engines_note,
            "weights": self.weights,
            "tokenizer_sha256": self.tokenizer_sha256,
            "calibration": self.calibration,
        }

    def write(self, bundle: Path) -> Path:
        path = Path(bundle) / "manifest.json"
        body = self.body()
        path.write_text(json.dumps({**body, "config_sha256": _config_digest(body)}, indent=2))
        return path

    def digest(self) -> str:
        """sha256 of the whole manifest's content, sampling defaults included: it names every file's
        fingerprint, so one digest pins the whole bundle (`vp info --sha256`)."""
        return hashlib.sha256(json.dumps(self.body(), sort_keys=True).encode()).hexdigest()

    @classmethod
    def read(cls, bundle: str | Path) -> Manifest:
        """The manifest of `bundle`; ValueError naming the file and the field for anything malformed
        or edited after export (its own digest; the sampling defaults are checked by the runtime)."""
        path = Path(bundle) / "manifest.json"
        if not path.is_file():
            raise ValueError(f"{bundle} is not a vp bundle: manifest.json is missing (make one with vp-export)")
        try:
            body = json.loads(path.read_text(encoding="utf-8"))
        except (json.JSONDecodeError, UnicodeDecodeError) as error:
            raise ValueError(f"{path} is not valid JSON ({error}); re-export the bundle") from None
        if not isinstance(body, dict):
            raise ValueError(f"{path}: expected a JSON object, got a {type(body).__name__}; re-export the bundle")
        if body.get("format_version") != FORMAT_VERSION:
            raise ValueError(f"{path} has format version {body.get('format_version')}, this vp reads "
                             f"{FORMAT_VERSION}; re-export the bundle with this vp-export")
        _check_fields(path, body)
        if body["config_sha256"] != _config_digest({k: v for k, v in body.items() if k != "config_sha256"}):
            raise ValueError(f"{path} was edited after export (its config digest differs; only `sampling` may be "
                             f"edited); re-export the bundle")
        try:
            components = {k: ComponentRecord.from_dict(v) for k, v in body["components"].items()}
            engines = {k: EngineRecord(**{**v, "compute_capabilities": tuple(v["compute_capabilities"]),
                                          "profiles": tuple(v["profiles"])}) for k, v in body["engines"].items()}
        except (KeyError, TypeError, AttributeError) as error:
            raise ValueError(f"{path}: a component or engine record is malformed ({error!r})") from None
        return cls(preset=body["preset"], vocabulary=body["vocabulary"], sampling=body["sampling"],
                   clip=body["clip"], components=components, engines=engines, engines_note=body["engines_note"],
                   weights=body["weights"], tokenizer_sha256=body["tokenizer_sha256"],
                   calibration=body["calibration"])

    # -- the files the runtime opens: each resolves inside the bundle, and is the file verify() hashes --

    def onnx_path(self, bundle: str | Path, component: str, cpu: bool = False) -> Path:
        """The component's graph; cpu: the one for ONNX Runtime's CPU provider (cpu_onnx where the
        bundle has one)."""
        record = self.components[component]
        if cpu and record.cpu_onnx is not None:
            return inside(bundle, "onnx", record.cpu_onnx, field=f"components.{component}.cpu_onnx")
        return inside(bundle, "onnx", record.onnx, field=f"components.{component}.onnx")

    def external_paths(self, bundle: str | Path, component: str) -> list[Path]:
        return [inside(bundle, "onnx", name, field=f"components.{component}.external_data")
                for name in self.components[component].external_data]

    def engine_path(self, bundle: str | Path, component: str) -> Path:
        return inside(bundle, "engines", self.engines[component].path, field=f"engines.{component}.path")

    def tokenizer_path(self, bundle: str | Path) -> Path:
        return inside(bundle, TOKENIZER, field="tokenizer")

    def verify(self, bundle: str | Path) -> None:
        """Raise ValueError naming every file that is missing or was edited since export."""
        bundle = Path(bundle)
        problems = []
        files = [(self.onnx_path(bundle, k), c.sha256) for k, c in self.components.items()]
        files += [(self.onnx_path(bundle, k, cpu=True), c.cpu_sha256) for k, c in self.components.items()
                  if c.cpu_onnx is not None]
        files += [(self.engine_path(bundle, k), e.sha256) for k, e in self.engines.items()]
        files.append((self.tokenizer_path(bundle), self.tokenizer_sha256))
        for path, digest in files:
            rel = path.relative_to(bundle.resolve())
            if not path.is_file():
                problems.append(f"{rel} is missing")
            elif sha256_of(path) != digest:
                problems.append(f"{rel} was changed after export (sha256 differs)")
        # external weights (graphs over 2 GB) are checked by size: hashing gigabytes at every load is too slow
        for name, c in self.components.items():
            paths = [self.onnx_path(bundle, name), *self.external_paths(bundle, name)]
            missing = [p for p in paths[1:] if not p.is_file()]
            problems += [f"{p.relative_to(bundle.resolve())} is missing" for p in missing]
            if c.external_data and not missing and paths[0].is_file() and \
                    sum(p.stat().st_size for p in paths) != c.bytes:
                problems.append(f"onnx/{c.external_data[0]} does not have the size recorded at export")
        if problems:
            raise ValueError(f"bundle {bundle} fails its fingerprints: {'; '.join(problems)}; "
                             f"rebuild it with vp-export --preset {self.preset.get('name', '?')}")


def inside(bundle: str | Path, *parts: str, field: str) -> Path:
    """bundle/parts resolved (symlinks followed); ValueError when a manifest path is absolute or
    leaves the bundle folder."""
    root = Path(bundle).resolve()
    if not all(isinstance(p, str) and p for p in parts):
        raise ValueError(f"{root / 'manifest.json'}: {field} must be a file name, got {parts[-1]!r}")
    rel = Path(*parts)
    path = (root / rel).resolve()
    if rel.is_absolute() or ".." in rel.parts or not path.is_relative_to(root):
        raise ValueError(f"{root / 'manifest.json'}: {field} {parts[-1]!r} leaves the bundle folder; every file "
                         f"a bundle names must be inside it")
    return path


_FIELDS = {"format_version": int, "preset": dict, "vocabulary": dict, "sampling": dict, "clip": dict,
           "components": dict, "engines": dict, "engines_note": str, "weights": (str, type(None)),
           "tokenizer_sha256": str, "calibration": (dict, type(None)), "config_sha256": str}


def _check_fields(path: Path, body: dict) -> None:
    missing = [k for k in _FIELDS if k not in body]
    unknown = [k for k in body if k not in _FIELDS]
    if missing or unknown:
        what = "; ".join(([f"missing fields {missing}"] if missing else []) +
                         ([f"unknown fields {unknown}"] if unknown else []))
        raise ValueError(f"{path}: {what}; re-export the bundle")
    for key, kind in _FIELDS.items():
        if not isinstance(body[key], kind):
            raise ValueError(f"{path}: field {key!r} has the wrong type ({type(body[key]).__name__}); "
                             f"re-export the bundle")


def _config_digest(body: dict) -> str:
    return hashlib.sha256(json.dumps({k: v for k, v in body.items() if k not in UNSIGNED},
                                     sort_keys=True).encode()).hexdigest()
