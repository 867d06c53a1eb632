"""Every non-LLM graph under ONNX Runtime (CPU) against torch, tiny preset, fp32.

Tolerances: float outputs within 1e-4 absolute (fp32 reassociation); codes
from the quantizers equal on at least 99.5% of positions (a latent sitting at
a decision boundary may flip under reassociation; in practice all agree).
"""

import numpy as np
import onnxruntime as ort
import pytest
import torch

FLOAT_ATOL = 1e-4
CODE_AGREEMENT = 0.995


def session(bundle, name):
    return ort.InferenceSession(str(bundle / "onnx" / f"{name}.onnx"), providers=["CPUExecutionProvider"])


def inputs_for(name, models):
    g = torch.Generator().manual_seed(3)
    p = models.preset
    if name == "text_encoder":
        ids = torch.randint(1000, 2000, (2, 9), generator=g)
        mask = torch.ones(2, 9, dtype=torch.bool)
        mask[1, 6:] = False
        return {"text_ids": ids, "text_mask": mask}
    if name == "video_encoder":
        return {"video": torch.rand(1, 3, 17, p.clip.height, p.clip.width, generator=g) * 2 - 1}
    if name == "video_decoder":
        return {"codes": torch.randint(0, 2**p.video_tokenizer.codebook_bits, (2, 2, 8, 8), generator=g)}
    if name == "audio_encoder":
        return {"wave": torch.rand(2, 40 * p.audio_tokenizer.hop, generator=g) * 2 - 1}
    if name == "audio_decoder":
        a = p.audio_tokenizer
        return {"audio_codes": torch.randint(0, a.codebook_size, (1, 30, a.levels), generator=g)}
    if name == "superres_0":
        sr = p.superres[0]
        n_hi, n_lo = int(np.prod(sr.high_res_grid)), int(np.prod(sr.low_res_grid))
        tokens = torch.randint(0, 2**sr.codebook_bits + 1, (3, n_hi), generator=g)
        text_mask = torch.ones(3, 5, dtype=torch.bool)
        text_mask[1] = False  # the no-text CFG branch
        low = torch.randint(0, 2**sr.codebook_bits, (3, n_lo), generator=g)
        low[2] = 2**sr.codebook_bits  # the no-low-res CFG branch
        return {"tokens": tokens, "low_res": low, "text": torch.randn(3, 5, sr.text_width, generator=g),
                "text_mask": text_mask}
    raise AssertionError(name)


@pytest.mark.parametrize("name", ["text_encoder", "video_encoder", "video_decoder", "audio_encoder",
                                  "audio_decoder", "superres_0"])
@torch.no_grad()
def test_graph_matches_torch(name, tiny_models, tiny_bundle):
    from vp.export.graphs import graph_for

    inputs = inputs_for(name, tiny_models)
    want = graph_for(name, tiny_models)(*inputs.values())
    (got,) = session(tiny_bundle, name).run(None, {k: v.numpy() for k, v in inputs.items()})
    want = want.numpy()
    assert got.shape == want.shape
    if np.issubdtype(want.dtype, np.integer):
        assert np.mean(got == want) >= CODE_AGREEMENT
    else:
        np.testing.assert_allclose(got, want, rtol=0, atol=FLOAT_ATOL)
