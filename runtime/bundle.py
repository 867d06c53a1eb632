"""A bundle folder as the runtime sees it: manifest, vocabulary, clip geometry, tokenizer."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from vp.engines.manifest import Manifest
from vp.runtime.conditioning import MediaSpec
from vp.runtime.sampling import SamplingDefaults
from vp.runtime.text_tokenizer import TextTokenizer
from vp.runtime.layout import ClipGeometry, SequenceBuilder
from vp.runtime.vocab import Vocabulary


@dataclass
class Bundle:
    """Everything the runtime reads from a bundle (vp-export writes it)."""

    path: Path
    manifest: Manifest
    vocab: Vocabulary
    geometry: ClipGeometry
    media: MediaSpec
    sampling: SamplingDefaults
    tokenizer: TextTokenizer

    @classmethod
    def open(cls, path: str | Path, verify: bool = True, expect_digest: str | None = None) -> Bundle:
        """Read `path`; with verify, check every file's fingerprint first (a few ms per MB). With
        expect_digest (`vp info --sha256`), refuse a bundle whose manifest digest differs (this
        implies verify: the digest covers the files through their fingerprints)."""
        path = Path(path)
        if not path.is_dir():
            raise ValueError(f"bundle folder {path} does not exist (make one with vp-export)")
        manifest = Manifest.read(path)
        if expect_digest is not None and manifest.digest() != expect_digest.strip().lower():
            raise ValueError(f"bundle {path} has digest {manifest.digest()}, not the expected {expect_digest}")
        if verify or expect_digest is not None:
            manifest.verify(path)
        try:
            clip = manifest.clip
            portrait = clip["portrait_grid"]
            bundle = cls(
                path=path,
                manifest=manifest,
                vocab=Vocabulary(**manifest.vocabulary),
                geometry=ClipGeometry(video_grid=tuple(clip["video_grid"]),
                                      portrait_grid=tuple(portrait) if portrait else None,
                                      audio_frames=clip["audio_frames"]),
                media=MediaSpec(fps=clip["fps"], sample_rate=clip["sample_rate"],
                                audio_samples=clip["audio_samples"], frames=clip["frames"],
                                temporal_factor=2 ** manifest.preset["video_tokenizer"]["temporal_downsamples"]),
                sampling=_sampling(path, manifest.sampling),
                tokenizer=TextTokenizer(manifest.tokenizer_path(path), clip["text_tokens"], clip["text_vocab"]),
            )
        except (KeyError, TypeError) as error:
            raise ValueError(f"{path / 'manifest.json'}: malformed clip or vocabulary ({error!r}); "
                             f"re-export the bundle") from None
        bundle._check_against_contracts()
        return bundle

    def _check_against_contracts(self) -> None:
        """The manifest's config agrees with the graphs' contracts (sizes the runtime reads from both)."""
        where = self.path / "manifest.json"
        checks = []
        if "llm" in self.manifest.components:
            io = {s.name: s for s in (*self.manifest.components["llm"].contract.inputs,
                                      *self.manifest.components["llm"].contract.outputs)}
            checks += [("preset.llm.d_model", self.manifest.preset["llm"]["d_model"], io["input_embeds"].shape[-1]),
                       ("vocabulary (widest output head)", self.vocab.head_width, io["logits"].shape[-1])]
        if "text_encoder" in self.manifest.components:
            out = self.manifest.components["text_encoder"].contract.outputs[0]
            checks.append(("preset.llm.d_model", self.manifest.preset["llm"]["d_model"], out.shape[-1]))
        for field, value, graph in checks:
            if value != graph:
                raise ValueError(f"{where}: {field} is {value}, but the graphs were exported for {graph}; "
                                 f"re-export the bundle")

    @property
    def name(self) -> str:
        return self.manifest.preset["name"]

    @property
    def frame_size(self) -> tuple[int, int]:
        """(height, width) of a clip's frames."""
        return self.manifest.clip["height"], self.manifest.clip["width"]

    @property
    def superres_stages(self) -> list[str]:
        return sorted(c for c in self.manifest.components if c.startswith("superres_"))

    @property
    def fuses_superres(self) -> bool:
        """Whether the preset fuses the SR output with the clip's decode (an sr_fusion graph,
        vp.models.sr_fusion); False: the SR codes are decoded alone, as in the paper."""
        return bool(self.manifest.preset.get("sr_fusion"))

    def layouts(self) -> SequenceBuilder:
        return SequenceBuilder(self.vocab, self.geometry)


def _sampling(path: Path, values: dict) -> SamplingDefaults:
    """The manifest's sampling defaults (the one section users may edit), checked."""
    try:
        return SamplingDefaults.from_dict(values)
    except ValueError as error:
        raise ValueError(f"{path / 'manifest.json'}: sampling: {error}") from None
