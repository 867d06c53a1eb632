"""Training recipe of the demo audio tokenizer (SoundStream style, residual VQ).

Batches: crops of `frames` audio-token frames cut at random whole frames
from the sounds of demo clips (tones and bounce clicks). Loss: L1 on the
waveform plus a multi-resolution STFT loss (log and linear magnitude); the first steps without
quantization (an autoencoder learns the tones in ~60 steps; through a
randomly seeded residual VQ it learned silence), then residual VQ trained
with codebook and commitment terms (VQ-VAE), a straight-through estimator
past the quantizer, codebooks seeded from the trained encoder's outputs and
dead codes re-seeded from the batch's residuals (no adversarial loss: the world's
sounds are tones and clicks, and the target is their pitch).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch
import torch.nn.functional as F

from vp.models.audio_tokenizer import AudioTokenizer
from vp.training.measure import pitch
from vp.training.stage import Schedule, Stage
from vp.training.world import HELD_OUT_SEED, PITCH_HZ, World

STFT_SIZES = (128, 256, 512)


@dataclass(frozen=True, kw_only=True)
class AudioTokenizerRecipe:
    steps: int = 1200
    batch: int = 16
    frames: int = 16  # token frames per crop (16 x 320 samples = 0.64 s at 8 kHz)
    lr: float = 2e-3
    l1_weight: float = 1.0
    codebook_weight: float = 1.0
    commit_weight: float = 0.25
    stft_weight: float = 0.1  # at 1 its magnitude gradients drowned the waveform loss (measured)
    reseed_every: int = 50
    continuous_steps: int = 200  # the first steps train encoder and decoder without quantization
    seed: int = 2


def batch(recipe: AudioTokenizerRecipe, step: int, world: World, hop: int) -> torch.Tensor:
    """Crops of step `step`: [batch, frames * hop] float in [-1, 1]."""
    rng = np.random.Generator(np.random.PCG64([recipe.seed, step]))
    n = recipe.frames * hop
    crops = []
    for i in range(recipe.batch):
        seed = (recipe.seed * 10_000_000 + step * recipe.batch + i) % HELD_OUT_SEED
        wave = world.clip(seed).audio
        # frame-aligned, as a clip is encoded from its first sample: a code then always stands for
        # the same stretch of waveform (the tones hold whole periods per frame), and the waveform
        # loss has one answer instead of a phase-blind optimum at silence
        start = hop * rng.integers(0, (len(wave) - n) // hop + 1)
        crops.append(wave[start:start + n])
    return torch.from_numpy(np.stack(crops))


class _Quantizer:
    """Residual VQ with gradients: the module's codebooks, VQ-VAE losses, dead-code re-seeding."""

    def __init__(self, model: AudioTokenizer):
        self.books = model.quantizer.codebooks  # (levels, K, D)
        self.usage = torch.zeros(self.books.shape[:2])

    def __call__(self, z: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """z [B, F, D] -> (quantized z with straight-through gradient, codebook loss, commitment loss)."""
        residual = z
        total = torch.zeros_like(z)
        codebook = commit = z.new_zeros(())
        for level, book in enumerate(self.books):
            flat = residual.detach().reshape(-1, residual.shape[-1])  # (N, D)
            index = torch.cdist(flat, book.detach()).argmin(-1)  # (N,)
            self.usage[level] += torch.bincount(index, minlength=book.shape[0])
            chosen = book[index].view_as(residual)
            codebook = codebook + F.mse_loss(chosen, residual.detach())
            commit = commit + F.mse_loss(residual, chosen.detach())
            total = total + chosen.detach()
            residual = residual - chosen.detach()
        return z + (total - z).detach(), codebook, commit

    @torch.no_grad()
    def seed_codes(self, z: torch.Tensor, only_dead: bool) -> None:
        """Set (dead, or all) codes of each level to random residual vectors of the batch z [B, F, D]."""
        residual = z.reshape(-1, z.shape[-1])
        for level, book in enumerate(self.books):
            dead = self.usage[level] == 0 if only_dead else torch.ones(book.shape[0], dtype=torch.bool)
            count = int(dead.sum())
            if count:
                pick = torch.randint(len(residual), (count,))
                book[dead] = residual[pick] + 1e-3 * torch.randn(count, book.shape[1])
            index = torch.cdist(residual, book).argmin(-1)
            residual = residual - book[index]
        self.usage.zero_()


def _stft_loss(a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    loss = a.new_zeros(())
    for size in STFT_SIZES:
        window = torch.hann_window(size)
        sa = torch.stft(a, size, size // 4, window=window, return_complex=True).abs()
        sb = torch.stft(b, size, size // 4, window=window, return_complex=True).abs()
        loss = loss + F.l1_loss(torch.log(sa + 1e-2), torch.log(sb + 1e-2)) + F.l1_loss(sa, sb)
    return loss / len(STFT_SIZES)


def train(model: AudioTokenizer, recipe: AudioTokenizerRecipe, work, world: World) -> AudioTokenizer:
    quantizer = _Quantizer(model)
    hop = model.config.hop

    def step_fn(step: int) -> dict[str, torch.Tensor]:
        wave = batch(recipe, step, world, hop)
        z = model.encoder(wave[:, None]).transpose(1, 2).float()  # (B, F, D)
        if step < recipe.continuous_steps:
            zq, codebook, commit = z, z.new_zeros(()), z.new_zeros(())
        else:
            if step == recipe.continuous_steps:  # codebooks start on what the trained encoder says
                quantizer.seed_codes(z, only_dead=False)
            elif step % recipe.reseed_every == 0 and quantizer.usage.sum() > 0:  # not right after a resume
                quantizer.seed_codes(z, only_dead=True)
            zq, codebook, commit = quantizer(z)
        recon = model.decoder(zq.transpose(1, 2))[:, 0].float()  # (B, N)
        l1 = F.l1_loss(recon, wave)
        stft = _stft_loss(recon, wave)
        loss = recipe.l1_weight * l1 + recipe.stft_weight * stft + recipe.codebook_weight * codebook + recipe.commit_weight * commit
        return {"loss": loss, "l1": l1, "stft": stft, "commit": commit}

    stage = Stage("audio_tokenizer", model, Schedule(steps=recipe.steps, lr=recipe.lr), work)
    return stage.train(step_fn)


@torch.no_grad()
def held_out_pitch_errors(model: AudioTokenizer, world: World, clips: int = 60) -> list[float]:
    """Relative pitch error of each held-out clip's sound after encode and decode."""
    model.eval()
    held_out = [world.clip(HELD_OUT_SEED + i) for i in range(clips)]
    waves = torch.from_numpy(np.stack([clip.audio for clip in held_out]))
    decoded = model.decode(model.encode(waves), num_samples=waves.shape[1]).numpy()
    errors = []
    for clip, wave in zip(held_out, decoded):
        measured = pitch(wave, world.config.sample_rate)
        truth = PITCH_HZ[clip.attributes.shape]
        errors.append(float("inf") if measured is None else abs(measured - truth) / truth)
    return errors
