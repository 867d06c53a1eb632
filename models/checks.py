"""Boundary checks for tensors entering the reference models.

Every public model entry point validates its inputs here, so that bad input
raises ValueError naming what was expected and what arrived, instead of an
error from deep inside torch.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch


def check_tensor(
    name: str,
    x: object,
    *,
    ndim: int,
    floating: bool | None = None,
    shape: Sequence[int | None] | None = None,
    layout: str = "",
) -> torch.Tensor:
    """Check that `x` is a tensor of `ndim` dims, float or integer, with `shape`.

    `shape` entries of None match any size. `layout` (e.g. "[B, 3, T, H, W]")
    is quoted in the error message. Returns `x` for chaining.
    """
    where = f"{name} {layout}".rstrip()
    if not isinstance(x, torch.Tensor):
        raise ValueError(f"{where}: expected a torch.Tensor, got {type(x).__name__}")
    if x.dim() != ndim:
        raise ValueError(f"{where}: expected {ndim} dims, got shape {tuple(x.shape)}")
    if floating is True and not x.is_floating_point():
        raise ValueError(f"{where}: expected a float tensor, got {x.dtype}")
    if floating is False and (x.is_floating_point() or x.is_complex() or x.dtype == torch.bool):
        raise ValueError(f"{where}: expected an integer tensor, got {x.dtype}")
    if shape is not None:
        for axis, (want, got) in enumerate(zip(shape, x.shape)):
            if want is not None and want != got:
                raise ValueError(
                    f"{where}: expected size {want} on axis {axis}, got shape {tuple(x.shape)}"
                )
    return x


def check_range(name: str, ids: torch.Tensor, low: int, high: int) -> torch.Tensor:
    """Check that every value of integer tensor `ids` lies in [low, high)."""
    if ids.numel() and ids.device.type != "meta" and not torch.jit.is_tracing() and not torch.compiler.is_compiling():
        lo, hi = int(ids.min()), int(ids.max())
        if lo < low or hi >= high:
            raise ValueError(f"{name}: values must lie in [{low}, {high}), got [{lo}, {hi}]")
    return ids
