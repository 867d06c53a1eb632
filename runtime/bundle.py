"""A bundle folder as the runtime sees it: manifest, vocabulary, clip geometry, tokenizer."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from vp.engines.manifest import Manifest
from vp.runtime.conditioning import MediaSpec
from vp.runtime.sampling import SamplingConfig
from vp.runtime.text_tokenizer import TextTokenizer
from vp.runtime.vocab import ClipGeometry, SequenceBuilder, Vocabulary


@dataclass
class Bundle:
    """Everything the runtime reads from a bundle (vp-export writes it)."""

    path: Path
    manifest: Manifest
    vocab: Vocabulary
    geometry: ClipGeometry
    media: MediaSpec
    sampling: SamplingConfig
    tokenizer: TextTokenizer

    @classmethod
    def open(cls, path: str | Path, verify: bool = True) -> Bundle:
        """Read `path`; with verify, check every file's fingerprint first (a few ms per MB)."""
        path = Path(path)
        if not path.is_dir():
            raise ValueError(f"bundle folder {path} does not exist (make one with vp-export)")
        manifest = Manifest.read(path)
        if verify:
            manifest.verify(path)
        clip = manifest.clip
        portrait = clip["portrait_grid"]
        return cls(
            path=path,
            manifest=manifest,
            vocab=Vocabulary(**manifest.vocabulary),
            geometry=ClipGeometry(video_grid=tuple(clip["video_grid"]),
                                  portrait_grid=tuple(portrait) if portrait else None,
                                  audio_frames=clip["audio_frames"]),
            media=MediaSpec(fps=clip["fps"], sample_rate=clip["sample_rate"], audio_samples=clip["audio_samples"]),
            sampling=SamplingConfig(**manifest.sampling),
            tokenizer=TextTokenizer(path / "tokenizer.json", clip["text_tokens"]),
        )

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

    def layouts(self) -> SequenceBuilder:
        return SequenceBuilder(self.vocab, self.geometry)
