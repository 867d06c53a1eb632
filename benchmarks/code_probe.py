"""How well a small network reads a clip attribute from its video codes: what the tokens carry.

    python benchmarks/code_probe.py WORK/tokens.npz [--attribute shape] [--first-frame] [--steps 1000]

The token dataset's clips (`vp-train tokens`): the codes of each clip [t, h, w]
become their LFQ bits (+-1, [bits, t, h, w]); two 3x3x3 convolutions (64 wide,
GELU), a max over positions (so the probe does not care where the object is)
and a linear layer predict the attribute. Trained on the first 5000 clips
(Adam 2e-3, batches of 64, 1 thread, seed 0), scored on the rest; prints the
held-out accuracy overall and by object size.

It bounds what an LLM conditioned on these codes can read: v2a must tell the
shape from the input's codes (docs/training.md: the probe reads it, the LLM
does not yet). `--first-frame` keeps latent frame 0 alone (what the first frame
says about, e.g., the direction).
"""

from __future__ import annotations

import argparse
from pathlib import Path

import numpy as np
import torch

from vp.training.tokens import ATTRIBUTE_NAMES, load

TRAIN_CLIPS = 5000


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("tokens")
    parser.add_argument("--attribute", choices=list(ATTRIBUTE_NAMES), default="shape")
    parser.add_argument("--first-frame", action="store_true")
    parser.add_argument("--steps", type=int, default=1000)
    args = parser.parse_args()
    torch.set_num_threads(1)
    torch.manual_seed(0)
    data = load(Path(args.tokens))
    codes = torch.from_numpy(data["video"])  # [N, t, h, w]
    if args.first_frame:
        codes = codes[:, :1]
    bits = int(codes.max()).bit_length()
    x = ((codes[..., None] >> torch.arange(bits)) & 1).float().permute(0, 4, 1, 2, 3) * 2 - 1
    names = list(ATTRIBUTE_NAMES)
    y = torch.from_numpy(data["attributes"][:, names.index(args.attribute)].astype(np.int64))
    size = data["attributes"][:, names.index("size")]
    classes = len(ATTRIBUTE_NAMES[args.attribute])
    net = torch.nn.Sequential(
        torch.nn.Conv3d(bits, 64, 3, padding=1), torch.nn.GELU(), torch.nn.Conv3d(64, 64, 3, padding=1),
        torch.nn.GELU(), torch.nn.AdaptiveMaxPool3d(1), torch.nn.Flatten(), torch.nn.Linear(64, classes))
    optimizer = torch.optim.Adam(net.parameters(), 2e-3)
    for _ in range(args.steps):
        batch = torch.randint(0, TRAIN_CLIPS, (64,))
        loss = torch.nn.functional.cross_entropy(net(x[batch]), y[batch])
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
    with torch.no_grad():
        right = (net(x[TRAIN_CLIPS:]).argmax(1) == y[TRAIN_CLIPS:]).numpy()
    held = size[TRAIN_CLIPS:]
    print(f"{args.attribute} from {'latent frame 0' if args.first_frame else 'all latent frames'}: "
          f"{right.mean():.1%} of {right.size} held-out clips (chance {1 / classes:.0%}); "
          + ", ".join(f"{name} {right[held == i].mean():.1%}" for i, name in enumerate(ATTRIBUTE_NAMES["size"])))


if __name__ == "__main__":
    main()
