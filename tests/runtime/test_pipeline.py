"""The runtime pipeline (ONNX Runtime, tiny bundle) against the torch reference:
identical tokens for every task, greedy and seeded; samples, streaming, timings, KV statistics."""

import numpy as np
import pytest

from vp.models import reference
from vp.models.reference import generate as reference_generate
from vp.runtime import token_generator
from vp.runtime.pipeline import Pipeline
from vp.runtime.request import NO_TEXT
from vp.runtime.sampling import sample_guided
from vp.runtime.vocab import Task

GREEDY = dict(temperature=0.0)
SEEDED = dict(temperature=1.0, top_p=0.9, top_k=0)
# fp32 graphs vs fp32 torch: decoded pixels may round differently by one level
PIXEL_ATOL = 2
AUDIO_ATOL = 1e-4


@pytest.fixture(scope="module")
def pipeline(tiny_bundle):
    with Pipeline.load(tiny_bundle, backend="ort") as p:
        yield p


# the logits each draw sees, runtime vs torch (fp32 both)
LOGITS_ATOL = 1e-5


def _recording_draws(monkeypatch, module) -> list[tuple[np.ndarray, dict]]:
    """Every draw of one sample made through `module`.sample_guided: its logits (cond and uncond
    rows, stacked) and its generator's state before it."""
    seen = []

    def record(cond, uncond, **kwargs):
        (rng,) = kwargs["rngs"]
        seen.append((np.stack([cond[0], cond[0] if uncond is None else uncond[0]]), rng.bit_generator.state))
        return sample_guided(cond, uncond, **kwargs)

    monkeypatch.setattr(module, "sample_guided", record)
    return seen


@pytest.mark.parametrize("mode", ["greedy", "seeded"])
@pytest.mark.parametrize("task", list(Task))
def test_tokens_equal_the_reference(task, mode, pipeline, tiny_models, task_inputs, monkeypatch):
    """Identical tokens, with one tolerance: a seeded draw is an inverse CDF of the logits, and a
    uniform number that lands within float32 rounding of a step of it (about 1e-6 apart: ORT vs
    torch, or a prefix reused from an earlier test's cache) may pick the neighbouring id. Where the
    tokens part, the draw there must have seen the same logits (LOGITS_ATOL) and the same generator
    state on both sides, and every draw before it too."""
    kwargs = dict(task=task, prompt="" if task in NO_TEXT else "a red fox in the snow", seed=7, **task_inputs(task),
                  **(GREEDY if mode == "greedy" else SEEDED))
    want_logits = _recording_draws(monkeypatch, reference)
    got_logits = _recording_draws(monkeypatch, token_generator)
    want = reference_generate(tiny_models, **kwargs)
    got = pipeline.generate(**kwargs)
    parted = np.flatnonzero(got.tokens != want.tokens)
    if mode == "seeded" and parted.size:
        sampled = [(i, low, high) for i, (forced, low, high) in enumerate(want.layout.positions()) if forced < 0]
        draw = [i for i, _, _ in sampled].index(int(parted[0]))  # forced ids follow from the ids before them
        for (got_draw, got_state), (want_draw, want_state), (_, low, high) in zip(
                got_logits[:draw + 1], want_logits[:draw + 1], sampled):
            assert got_state == want_state
            # the runtime may hand the sampler the drawn id range [low, high) alone, torch the whole vocabulary
            got_row, want_row = (row if row.shape[1] == high - low else row[:, low:high] for row in (got_draw, want_draw))
            np.testing.assert_allclose(got_row, want_row, rtol=0, atol=LOGITS_ATOL)
        return  # the pixels of two different token sequences are not compared
    np.testing.assert_array_equal(got.tokens, want.tokens)
    assert got.frames.shape == want.frames.shape
    assert np.abs(got.frames.astype(int) - want.frames).max(initial=0) <= PIXEL_ATOL
    np.testing.assert_allclose(got.audio, want.audio, rtol=0, atol=AUDIO_ATOL)


def test_super_resolution_equals_the_reference(pipeline, tiny_models):
    kwargs = dict(task="t2v", prompt="a fox", seed=2, sr=True, with_audio=False)
    want = reference_generate(tiny_models, **kwargs)
    got = pipeline.generate(**kwargs)
    assert got.frames.shape == (17, 128, 128, 3)
    assert np.abs(got.frames.astype(int) - want.frames).max(initial=0) <= PIXEL_ATOL


def test_upscale_and_reconstruct_equal_the_reference(pipeline, tiny_models, media):
    from vp.models.reference import reconstruct, upscale

    video = media["video"]
    got = pipeline.upscale(video, prompt="a fox", seed=3)
    want = upscale(tiny_models, video, prompt="a fox", seed=3)
    assert got.shape == (17, 128, 128, 3)
    assert np.abs(got.astype(int) - want).max() <= PIXEL_ATOL
    got = pipeline.reconstruct(video)
    assert got.shape == video.shape
    assert np.abs(got.astype(int) - reconstruct(tiny_models, video)).max() <= PIXEL_ATOL
    with pytest.raises(ValueError, match=r"upscale: a clip of 17x64x64 \(frames x H x W\) is needed, got 5x64x64"):
        pipeline.upscale(video[:5])
    with pytest.raises(ValueError, match=r"upscale: a clip of 17x64x64 \(frames x H x W\) is needed, got 5x64x64"):
        upscale(tiny_models, video[:5])


def test_upscaled_frames_fuse_both_decodes_and_check_their_codes(pipeline, tiny_models, monkeypatch):
    """Through the tiny bundle's sr_fusion graph as the reference fuses them; codes that are not a clip
    and its SR grid, or a fusing preset's bundle without the graph, are clear errors."""
    from vp.models.reference import upscaled_frames

    rng = np.random.default_rng(5)
    low, high = rng.integers(0, 1024, (5, 8, 8)), rng.integers(0, 1024, (5, 16, 16))
    got = pipeline.upscaled_frames(low, high)
    assert got.shape == (17, 128, 128, 3)
    assert np.abs(got.astype(int) - upscaled_frames(tiny_models, low, high)).max() <= PIXEL_ATOL
    assert np.abs(got.astype(int) - pipeline.decode_video(high)).max() > 16  # not the SR decode alone
    with pytest.raises(ValueError, match=r"high video codes \(5, 12, 12\) are not an SR grid of the low codes"):
        pipeline.upscaled_frames(low, high[:, :12, :12])
    with pytest.raises(ValueError, match=r"low video codes: expected \[t, h, w\] integers, got float64"):
        pipeline.upscaled_frames(low.astype(float), high)
    monkeypatch.delitem(pipeline.bundle.manifest.components, "sr_fusion")
    with pytest.raises(ValueError, match="its preset fuses the super-resolution output, but the bundle has no "
                                         "sr_fusion graph"):
        pipeline.upscaled_frames(low, high)


def test_same_seed_same_tokens(pipeline):
    a = pipeline.generate(task="t2i", prompt="a fox", seed=11)
    b = pipeline.generate(task="t2i", prompt="a fox", seed=11)
    np.testing.assert_array_equal(a.tokens, b.tokens)


def test_the_pool_follows_each_run(pipeline, tiny_models):
    """A decode step reads the whole pool it is given, so on the CPU the pool holds the blocks in use:
    a short run after a long one starts from a shrunk pool (PagedLLM.fit) and grows it again, and
    both runs draw the reference's tokens."""
    prompt = " ".join(["a small green square drifting slowly to the right over a dark floor"] * 2)
    long_run = pipeline.generate(task="t2v", prompt=prompt, seed=5)
    held = pipeline._kv.llm.pool.shape[3]
    short_run = pipeline.generate(task="t2i", prompt=prompt, seed=5)
    assert pipeline._kv.llm.pool.shape[3] < held
    for task, result in (("t2v", long_run), ("t2i", short_run)):
        np.testing.assert_array_equal(result.tokens,
                                      reference_generate(tiny_models, task=task, prompt=prompt, seed=5).tokens)


def test_samples_share_their_prefix_and_follow_their_seeds(pipeline, tiny_models):
    """4 samples with CFG: sample i draws as the reference with seed + i; prefix blocks are shared."""
    prompt = " ".join(["a red fox running through deep snow under a pale winter sky"] * 3)
    result = pipeline.generate(task="t2i", prompt=prompt, seed=20, num_samples=4)
    assert len(result.samples) == 4
    for i, sample in enumerate(result.samples):
        want = reference_generate(tiny_models, task="t2i", prompt=prompt, seed=20 + i)
        np.testing.assert_array_equal(sample.tokens, want.tokens)
    stats = result.kv_stats
    assert stats.saved_blocks > 0 and stats.shared_blocks > 0
    assert 0 <= stats.waste < 0.25


def test_timings_cover_every_stage(pipeline):
    result = pipeline.generate(task="t2v", prompt="a fox", seed=0)
    for stage in ("text_encoder", "llm_prefill", "llm_decode", "video_decoder", "audio_decoder", "total"):
        assert result.timings[stage] > 0, stage
    assert result.timings["decode_steps"] > 300


def test_stream_yields_each_latent_frame_as_it_is_made(pipeline):
    chunks = list(pipeline.stream(task="t2v", prompt="a fox", seed=3, with_audio=False))
    assert [c.latent_frame for c in chunks] == [0, 1, 2, 3, 4]
    assert [len(c.frames) for c in chunks] == [1, 4, 4, 4, 4]
    whole = pipeline.generate(task="t2v", prompt="a fox", seed=3, with_audio=False).frames
    streamed = np.concatenate([c.frames for c in chunks])
    assert np.abs(streamed.astype(int) - whole).max() <= PIXEL_ATOL


def test_runtime_never_imports_torch(tiny_bundle):
    import subprocess
    import sys

    code = ("import sys\nfrom vp.runtime.pipeline import Pipeline\n"
            f"r = Pipeline.load({str(tiny_bundle)!r}).generate(task='t2i', prompt='a fox', seed=0)\n"
            "assert r.frames.shape == (1, 64, 64, 3)\n"
            "assert 'torch' not in sys.modules, 'torch was imported'\n")
    subprocess.run([sys.executable, "-c", code], check=True)


@pytest.mark.parametrize("kwargs,message", [
    (dict(task="i2v"), "needs an image"),
    (dict(task="dance"), "dance"),
    (dict(task="continue", video=np.zeros((9, 32, 32, 3), np.uint8)), "64x64"),
    (dict(task="v2a", prompt="", video=np.zeros((16, 64, 64, 3), np.uint8)), r"1 \+ 4k|latent"),
    (dict(task="continue", video=np.zeros((0, 64, 64, 3), np.uint8)), r"1 \+ 4k"),
    (dict(task="a2v", audio=np.zeros(100, np.float32)), "at least 320 samples"),
    (dict(task="t2v", num_samples=0), "num_samples"),
    (dict(task="t2v", top_p=0.0), "top_p"),
    (dict(task="t2i", sr=True), "super-resolution"),
    (dict(task="t2v", prompt=b"\xff\xfe a fox"), r"the prompt is not UTF-8 text \(byte 0\)"),
    (dict(task="t2v", prompt="a fox \udcff"), r"the prompt is not valid UTF-8 text"),
    (dict(task="t2v", prompt=""), r"task t2v needs a prompt \(task uncond generates without text\)"),
    (dict(task="stylize", prompt="  ", video=np.zeros((17, 64, 64, 3), np.uint8)), "task stylize needs a prompt"),
    (dict(task="uncond", prompt="a fox"), "task uncond takes no prompt"),
    (dict(task="t2v", video=np.zeros((17, 64, 64, 3), np.uint8)), "task t2v does not use video"),
    (dict(task="i2v", image=np.zeros((64, 64, 3), np.uint8), audio=np.zeros(9, np.float32)),
     r"task i2v does not use audio \(it takes image\)"),
    (dict(task="av-continue", video=np.zeros((9, 64, 64, 3), np.uint8)), "task av-continue needs audio"),
    (dict(task="a2v", audio=np.full(34000, np.nan, np.float32)), "audio holds NaN or infinite samples"),
    (dict(task="t2v", seed="x"), r"seed must be a whole number, got 'x'"),
    (dict(task="t2v", seed=-1), r"seed must lie in \[0, 9223372036854775807\], got -1"),
    (dict(task="t2v", seed=1.5), "seed must be a whole number, got 1.5"),
    (dict(task="t2v", seed=True), "seed must be a whole number, got True"),
    (dict(task="t2v", num_samples=2.0), "num_samples must be a whole number"),
    (dict(task="t2v", top_k=2.5), r"top_k must be a whole number \(0 = off\), got 2.5"),
    (dict(task="t2v", cfg_scale=float("inf")), "cfg_scale must be a finite number, got inf"),
    (dict(task="t2v", temperature=float("nan")), "temperature must be a finite number, got nan"),
    (dict(task="t2v", topk=5), r"unknown argument\(s\) \['topk'\]; sampling overrides: cfg_scale, temperature"),
    (dict(task="t2v", num_samples=10000),
     r"10000 sample\(s\) need \d+ KV blocks \([\d.]+ GB\); the LLM's engine profile holds 1024 blocks \(about \d+ "
     r"samples\): lower num_samples \(--samples\)"),
    (dict(task="t2v", num_samples=12), r"the LLM's engine profile holds 1024 blocks"),
])
def test_bad_input(pipeline, kwargs, message):
    kwargs = {"prompt": "a fox", **kwargs}
    with pytest.raises(ValueError, match=message):
        pipeline.generate(**kwargs)


def test_numpy_integers_are_accepted(pipeline):
    a = pipeline.generate(task="t2i", prompt="a fox", seed=np.int64(4), num_samples=np.int32(1), top_k=np.int64(5))
    b = pipeline.generate(task="t2i", prompt="a fox", seed=4, top_k=5)
    np.testing.assert_array_equal(a.tokens, b.tokens)


def test_missing_bundle(tmp_path):
    with pytest.raises(ValueError, match="does not exist"):
        Pipeline.load(tmp_path / "nothing")
    (tmp_path / "empty").mkdir()
    with pytest.raises(ValueError, match="manifest.json is missing"):
        Pipeline.load(tmp_path / "empty")


def test_unknown_backend_and_trt_without_engines(tiny_bundle):
    with pytest.raises(ValueError, match="unknown backend"):
        Pipeline.load(tiny_bundle, backend="tpu")
    with pytest.raises(ValueError, match="--backend trt is not possible: the bundle has no engines"):
        Pipeline.load(tiny_bundle, backend="trt")


def test_engines_of_another_tensorrt_version_are_refused(tiny_bundle, tmp_path, monkeypatch):
    """A bundle's engines name the TensorRT that built them; another version is not loaded."""
    pytest.importorskip("tensorrt_rtx")
    from vp.engines.builder import EngineRecord
    from vp.engines.manifest import Manifest
    from vp.runtime.backends.trt import trt_unavailable

    manifest = Manifest.read(tiny_bundle)
    fake = EngineRecord(path="llm.engine", flavour="rtx", version="0.0.1", compute_capabilities=(89,),
                        profiles=("prefill", "decode"), sha256="0" * 64, bytes=1, build_seconds=1.0, peak_rss_mb=1.0)
    manifest.engines = {name: fake for name in manifest.components}
    assert "built with tensorrt_rtx 0.0.1" in trt_unavailable(manifest)


def test_full_tensorrt_engines_of_another_gpu_fall_back_to_onnx_runtime(tiny_bundle, monkeypatch):
    """Full TensorRT engines record the GPU they were built on; on another GPU, auto picks ONNX Runtime
    and says why (tensorrt itself and the GPU are stood in for: neither is on a CPU machine)."""
    import types

    import vp.runtime.backends.trt as trt_backend
    from vp.engines.builder import EngineRecord
    from vp.runtime.backends import open_backend
    from vp.runtime.bundle import Bundle

    bundle = Bundle.open(tiny_bundle)
    record = EngineRecord(path="llm.engine", flavour="trt", version="10.0", compute_capabilities=(80,),
                          profiles=("prefill", "decode"), sha256="0" * 64, bytes=1, build_seconds=1.0, peak_rss_mb=1.0)
    bundle.manifest.engines = {name: record for name in bundle.manifest.components}
    monkeypatch.setattr(trt_backend, "import_tensorrt", lambda flavour: types.SimpleNamespace(__version__="10.0"))
    monkeypatch.setattr(trt_backend, "probe_gpu", lambda: (89, "GPU 0 is SM89"))
    backend, why = open_backend("auto", bundle)
    assert backend.name == "ort"
    assert "built on an SM80 GPU" in why and "this GPU is SM89" in why
    with pytest.raises(ValueError, match="--backend trt is not possible: the engines were built on an SM80 GPU"):
        open_backend("trt", bundle)
    monkeypatch.setattr(trt_backend, "probe_gpu", lambda: (80, "GPU 0 is SM80"))
    assert trt_backend.trt_unavailable(bundle.manifest) is None


def test_rtx_engines_on_a_gpu_tensorrt_rtx_does_not_run_on_name_the_alternatives(tiny_bundle, monkeypatch):
    """TensorRT-RTX has no Hopper target: on an H100 (SM90), RTX engines are refused with what to use
    instead, not with "re-export with --sm 90", which its builder would refuse (the real
    tensorrt_rtx's targets; the GPU is stood in for)."""
    import vp.runtime.backends.trt as trt_backend
    from vp.engines.builder import EngineRecord, import_tensorrt
    from vp.engines.manifest import Manifest

    trt = import_tensorrt("rtx")
    manifest = Manifest.read(tiny_bundle)
    record = EngineRecord(path="llm.engine", flavour="rtx", version=trt.__version__, compute_capabilities=(86, 89),
                          profiles=("prefill", "decode"), sha256="0" * 64, bytes=1, build_seconds=1.0, peak_rss_mb=1.0)
    manifest.engines = {name: record for name in manifest.components}
    monkeypatch.setattr(trt_backend, "probe_gpu", lambda: (90, "GPU 0 is SM90"))
    why = trt_backend.trt_unavailable(manifest)
    assert why.startswith("TensorRT-RTX does not run on this GPU (SM90; it runs on SM 75, 80, 86, 89")
    assert "--engines trt" in why and "--backend ort with onnxruntime-gpu" in why
    monkeypatch.setattr(trt_backend, "probe_gpu", lambda: (120, "GPU 0 is SM120"))
    assert trt_backend.trt_unavailable(manifest) == "the engines target SM (86, 89), this GPU is SM120 (re-export with --sm 120)"
    monkeypatch.setattr(trt_backend, "probe_gpu", lambda: (None, "no NVIDIA driver (cuda-python found no GPU)"))
    assert trt_backend.trt_unavailable(manifest) == "no NVIDIA driver (cuda-python found no GPU)"


def test_inputs_are_trimmed_by_the_pipeline_as_by_the_cli(pipeline, media):
    """Apps get the CLI's policy: a continuation keeps the last 13 frames (a clip less one latent
    frame), a whole-clip task the first clip; the tokens equal those of the trimmed input."""
    video, audio = media["video"], media["audio"]
    kwargs = dict(prompt="", seed=4, **GREEDY)
    whole = pipeline.generate(task="continue", video=video, **kwargs)
    np.testing.assert_array_equal(whole.tokens, pipeline.generate(task="continue", video=video[4:], **kwargs).tokens)
    uneven = pipeline.generate(task="continue", video=video[:12], **kwargs)  # 12 frames: the last 9 (1 + 4k)
    np.testing.assert_array_equal(uneven.tokens, pipeline.generate(task="continue", video=video[3:12], **kwargs).tokens)
    longer = np.concatenate([video, video[::-1]])  # 34 frames
    np.testing.assert_array_equal(pipeline.generate(task="v2a", video=longer, **kwargs).tokens,
                                  pipeline.generate(task="v2a", video=video, **kwargs).tokens)
    rate = pipeline.bundle.media.sample_rate
    av = pipeline.generate(task="av-continue", video=video, audio=audio, **kwargs)
    kept = pipeline.generate(task="av-continue", video=video[4:], audio=audio[4 * rate // 8:], **kwargs)
    np.testing.assert_array_equal(av.tokens, kept.tokens)
