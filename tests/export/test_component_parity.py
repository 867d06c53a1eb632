"""Every non-LLM graph under ONNX Runtime (CPU) against torch fp32, tiny preset.

Tolerances, fp32 graphs: float outputs within 1e-4 absolute (reassociation);
codes from the quantizers equal on at least 99.5% of positions (a latent at a
decision boundary may flip; in practice all agree).
fp16 graphs (fp32 islands for norms, softmax, logits): float outputs within
1e-2 absolute (measured <= 2.9e-3 on outputs of magnitude ~1); codes equal on
at least 98% of positions (measured 99.7%: fp16 moves latents near 0 across
the LFQ sign boundary).
"""

import numpy as np
import onnxruntime as ort
import pytest
import torch

TOLERANCES = {"fp32": (1e-4, 0.995), "fp16": (1e-2, 0.98)}  # (float atol, code agreement)


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
    if name == "sr_fusion":
        s, c = p.sr_fusion.scale, p.clip
        low = torch.rand(2, 3, 17, c.height, c.width, generator=g) * 2 - 1
        return {"low": low, "high": torch.rand(2, 3, 17, s * c.height, s * c.width, generator=g) * 2 - 1}
    raise AssertionError(name)


@pytest.mark.parametrize("precision", ["fp32", "fp16"])
@pytest.mark.parametrize("name", ["text_encoder", "video_encoder", "video_decoder", "audio_encoder",
                                  "audio_decoder", "superres_0", "sr_fusion"])
@torch.no_grad()
def test_graph_matches_torch(name, precision, tiny_models, request):
    from vp.export.graphs import graph_for

    bundle = request.getfixturevalue("tiny_bundle" if precision == "fp32" else "tiny_bundle_fp16")
    atol, agreement = TOLERANCES[precision]
    inputs = inputs_for(name, tiny_models)
    want = graph_for(name, tiny_models)(*inputs.values()).numpy()
    half = precision == "fp16"
    feeds = {k: (v.half() if half and v.is_floating_point() else v).numpy() for k, v in inputs.items()}
    (got,) = session(bundle, name).run(None, feeds)
    assert got.shape == want.shape
    if np.issubdtype(want.dtype, np.integer):
        assert np.mean(got == want) >= agreement
    else:
        assert got.dtype == (np.float16 if half and name != "superres_0" else np.float32)
        np.testing.assert_allclose(got.astype(np.float32), want, rtol=0, atol=atol)


@pytest.mark.parametrize("precision", ["fp32", "fp16"])
@torch.no_grad()
def test_decoder_step_graph_streams_the_whole_clip_decode(precision, tiny_models, request):
    """video_decoder_first then video_decoder_step under ONNX Runtime, one latent frame per call with
    its state carried by the runtime's VideoDecodeStream, give the frames of torch's whole-clip decode."""
    from vp.runtime.backends import open_backend
    from vp.runtime.bundle import Bundle
    from vp.runtime.conditioning import frames_from_model
    from vp.runtime.video_stream import VideoDecodeStream

    bundle = request.getfixturevalue("tiny_bundle" if precision == "fp32" else "tiny_bundle_fp16")
    codes = torch.randint(0, 2**tiny_models.preset.video_tokenizer.codebook_bits, (1, 5, 8, 8),
                          generator=torch.Generator().manual_seed(4))
    want = frames_from_model(tiny_models.video_tokenizer.decode(codes)[0].numpy())
    backend, _ = open_backend("ort", Bundle.open(bundle))
    stream = VideoDecodeStream(backend.session("video_decoder_first"), backend.session("video_decoder_step"), 8, 8)
    got = np.concatenate([stream.push(codes[0, t].numpy()) for t in range(5)])
    assert got.shape == want.shape == (17, 64, 64, 3)
    pixel_atol = 1 if precision == "fp32" else 3  # uint8 frames: TOLERANCES' float atol of [-1, 1] in pixel steps
    assert np.abs(got.astype(int) - want).max() <= pixel_atol
    with pytest.raises(ValueError, match=r"expected \(8, 8\) integers"):
        stream.push(np.zeros((4, 8), np.int64))
