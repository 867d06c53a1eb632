"""The pictures of docs/training.md: loss curves, tokenizer reconstructions, generated frames,
super-resolution.

Needs matplotlib (`pip install 'vp[train]'`), which nothing else in vp uses.
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import numpy as np

from vp.training.stage import read_log

CURVES = {"video_tokenizer": ("mse",), "audio_tokenizer": ("l1", "stft"), "video_decoder": ("mse",),
          "llm": ("video", "audio", "gap_t2v", "gap_v2a"), "superres": ("loss",),
          "sr_fusion": ("loss", "bicubic_mse")}  # and llm_roundN: as llm


def _pyplot():
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        raise ValueError("the training figures need matplotlib: pip install 'vp[train]'") from None
    return plt


def loss_curves(work: Path, path: Path) -> Path:
    """One panel per trained stage in `work`: its losses against the step (moving average of 25)."""
    plt = _pyplot()
    names = [*CURVES, *sorted(p.name for p in work.glob("llm_round*"))]
    stages = [(name, read_log(work / name)) for name in names if (work / name / "log.jsonl").is_file()]
    if not stages:
        raise ValueError(f"no stage logs in {work}")
    fig, axes = plt.subplots(1, len(stages), figsize=(4 * len(stages), 3), squeeze=False)
    for ax, (name, records) in zip(axes[0], stages):
        for key in CURVES[name.split("_round")[0]]:
            kept = [r for r in records if np.isfinite(r.get(key, np.nan))]  # a step may not have every loss
            if not kept:
                continue
            steps = np.array([r["step"] for r in kept])
            values = np.array([r[key] for r in kept], np.float64)
            k = min(25, len(values))
            smooth = np.convolve(values, np.ones(k) / k, mode="valid")
            ax.plot(steps[k - 1:], smooth, label=key)
        ax.set_title(name.replace("_", " "))
        ax.set_xlabel("step")
        ax.set_yscale("log")
        ax.legend()
        ax.grid(alpha=0.3)
    fig.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=90)
    plt.close(fig)
    return path


def frame_grid(rows: list[tuple[str, np.ndarray]], path: Path, frames: tuple[int, ...] = (0, 4, 8, 12, 16),
               scale: int = 2) -> Path:
    """One labelled row per (label, clip [T, H, W, 3] uint8), showing the chosen frames."""
    plt = _pyplot()
    fig, axes = plt.subplots(len(rows), 1, figsize=(len(frames) * 1.1 * scale, 1.35 * scale * len(rows)),
                             squeeze=False)
    for ax, (label, clip) in zip(axes[:, 0], rows):
        strip = np.concatenate([np.pad(clip[t], ((2, 2), (2, 2), (0, 0)), constant_values=255) for t in frames], 1)
        ax.imshow(strip, interpolation="nearest")
        ax.set_title(label, fontsize=9, loc="left")
        ax.axis("off")
    fig.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=90)
    plt.close(fig)
    return path


def reconstructions(encode_decode: Callable[[np.ndarray], np.ndarray], clips: list[np.ndarray], path: Path) -> Path:
    """Each held-out clip above its trip through the video tokenizer."""
    from vp.training.measure import psnr

    rows = []
    for i, clip in enumerate(clips):
        recon = encode_decode(clip)
        rows += [(f"held-out clip {i}: input", clip), (f"reconstruction ({psnr(recon, clip):.1f} dB)", recon)]
    return frame_grid(rows, path)


def super_resolution(models, clip: np.ndarray, truth: np.ndarray, prompt: str, seed: int, path: Path) -> Path:
    """One held-out clip [T, H, W, 3] at 128x128: its render, the bicubic upscale of its decode, its SR
    tokens decoded alone, and the fused output (vp.models.sr_fusion), each with its PSNR to the render."""
    import torch

    from vp.models.reference import reconstruct, sr_codes, upscaled_frames
    from vp.runtime.conditioning import frames_from_model, video_to_model
    from vp.training.evaluator import bicubic
    from vp.training.measure import psnr

    with torch.no_grad():
        codes = models.video_tokenizer.encode(torch.from_numpy(video_to_model(clip)))[0].numpy()
        high = sr_codes(models, codes, prompt=prompt, seed=seed)
        alone = frames_from_model(models.video_tokenizer.decode(torch.from_numpy(high)[None])[0].numpy())
    outputs = [("bicubic upscale of the 64x64 decode", bicubic(reconstruct(models, clip), truth.shape[1:3])),
               ("SR tokens decoded alone", alone), ("fused (the output)", upscaled_frames(models, codes, high))]
    rows = [("128x128 render (the truth)", truth)]
    rows += [(f"{label}: {psnr(frames, truth):.2f} dB", frames) for label, frames in outputs]
    return frame_grid(rows, path, scale=3)
