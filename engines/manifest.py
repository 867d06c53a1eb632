"""manifest.json: what a bundle holds, and the fingerprints that guard it.

    bundle/
      manifest.json     this file's Manifest
      onnx/*.onnx       (+ external weight files for graphs over 2 GB)
      engines/*.engine  when a TensorRT builder was available
      timing.cache      full TensorRT's timing cache, reused by the next export (--force)
      tokenizer.json    the text tokenizer

The runtime reads only the bundle, never vp.models: the preset config, the
vocabulary layout and the sampling defaults are copied in here.
"""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass, field
from pathlib import Path

from vp.engines.builder import EngineRecord, sha256_of
from vp.engines.contract import Contract

FORMAT_VERSION = 1


@dataclass(frozen=True)
class ComponentRecord:
    """One exported graph: its ONNX file, fingerprint, precision and contract."""

    onnx: str
    sha256: str
    bytes: int
    precision: str
    contract: Contract
    external_data: tuple[str, ...] = ()
    parity: dict = field(default_factory=dict)

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
    format_version: int = FORMAT_VERSION

    def write(self, bundle: Path) -> Path:
        path = Path(bundle) / "manifest.json"
        body = {
            "format_version": self.format_version,
            "preset": self.preset,
            "vocabulary": self.vocabulary,
            "sampling": self.sampling,
            "clip": self.clip,
            "components": {k: v.to_dict() for k, v in self.components.items()},
            "engines": {k: v.to_dict() for k, v in self.engines.items()},
            "engines_note": self.engines_note,
            "weights": self.weights,
        }
        path.write_text(json.dumps(body, indent=2))
        return path

    @classmethod
    def read(cls, bundle: str | Path) -> Manifest:
        path = Path(bundle) / "manifest.json"
        if not path.is_file():
            raise ValueError(f"{bundle} is not a vp bundle: manifest.json is missing (make one with vp-export)")
        try:
            body = json.loads(path.read_text())
        except json.JSONDecodeError as error:
            raise ValueError(f"{path} is not valid JSON ({error}); re-export the bundle") from None
        if body.get("format_version") != FORMAT_VERSION:
            raise ValueError(f"{path} has format version {body.get('format_version')}, this vp reads "
                             f"{FORMAT_VERSION}; re-export the bundle with this vp-export")
        return cls(
            preset=body["preset"],
            vocabulary=body["vocabulary"],
            sampling=body["sampling"],
            clip=body["clip"],
            components={k: ComponentRecord.from_dict(v) for k, v in body["components"].items()},
            engines={k: EngineRecord(**{**v, "compute_capabilities": tuple(v["compute_capabilities"]),
                                        "profiles": tuple(v["profiles"])}) for k, v in body["engines"].items()},
            engines_note=body.get("engines_note", ""),
            weights=body.get("weights"),
        )

    def verify(self, bundle: str | Path) -> None:
        """Raise ValueError naming every file that is missing or was edited since export."""
        bundle = Path(bundle)
        problems = []
        files = [(f"onnx/{c.onnx}", c.sha256) for c in self.components.values()]
        files += [(f"engines/{e.path}", e.sha256) for e in self.engines.values()]
        for rel, digest in files:
            path = bundle / rel
            if not path.is_file():
                problems.append(f"{rel} is missing")
            elif sha256_of(path) != digest:
                problems.append(f"{rel} was changed after export (sha256 differs)")
        # external weights (graphs over 2 GB) are checked by size: hashing gigabytes at every load is too slow
        for c in self.components.values():
            paths = [bundle / "onnx" / c.onnx, *(bundle / "onnx" / e for e in c.external_data)]
            if c.external_data and all(p.is_file() for p in paths) and sum(p.stat().st_size for p in paths) != c.bytes:
                problems.append(f"onnx/{c.external_data[0]} does not have the size recorded at export")
            problems += [f"onnx/{e} is missing" for e in c.external_data if not (bundle / "onnx" / e).is_file()]
        if problems:
            raise ValueError(f"bundle {bundle} fails its fingerprints: {'; '.join(problems)}; "
                             f"rebuild it with vp-export --preset {self.preset.get('name', '?')}")
