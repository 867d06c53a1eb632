"""The torch reference loop: every task, seeding, super-resolution, bad input; weights on disk."""

import numpy as np
import pytest
import torch

from vp.models import load, save
from vp.models.reference import generate
from vp.runtime.request import NO_TEXT
from vp.runtime.vocab import Task

GREEDY = dict(temperature=0.0, top_p=1.0)


def test_text_to_video_gives_17_frames_and_2_125_seconds_of_audio(tiny_models):
    result = generate(tiny_models, task="t2v", prompt="a red fox runs through snow", seed=0)
    assert result.frames.shape == (17, 64, 64, 3) and result.frames.dtype == np.uint8
    assert result.audio.shape == (34000,) and result.audio.dtype == np.float32
    assert result.sample_rate == 16000 and len(result.audio) / result.sample_rate == 2.125
    assert len(result.tokens) == result.layout.output_len
    assert result.frames.std() > 0  # not a constant clip


@pytest.mark.parametrize("task", list(Task))
def test_every_task_runs(tiny_models, task_inputs, task):
    prompt = "" if task in NO_TEXT else "a red fox"
    result = generate(tiny_models, task=task, prompt=prompt, seed=1, **GREEDY, **task_inputs(task))
    assert result.layout.task is task
    frames = {Task.TEXT_TO_IMAGE: 1, Task.VIDEO_TO_AUDIO: 0}.get(task, 17)
    assert result.frames.shape == (frames, 64, 64, 3)
    has_audio = task in {Task.TEXT_TO_VIDEO, Task.UNCONDITIONAL, Task.VIDEO_TO_AUDIO, Task.AUDIO_VIDEO_CONTINUATION}
    assert result.audio.shape == ((34000,) if has_audio else (0,))
    # every sampled id lies in the range the layout asked for
    for token, (forced, low, high) in zip(result.tokens, result.layout.positions()):
        assert token == forced if forced >= 0 else low <= token < high


def test_continuation_keeps_the_given_frames(tiny_models, media):
    given = tiny_models.video_tokenizer.encode(
        torch.from_numpy(media["video"][:9]).permute(3, 0, 1, 2)[None].float() / 127.5 - 1)[0]
    result = generate(tiny_models, task="continue", prompt="", seed=0, video=media["video"][:9], **GREEDY)
    vocab = tiny_models.preset.vocab
    video_ids = result.tokens[1:1 + 3 * 64] - vocab.visual_offset
    np.testing.assert_array_equal(video_ids, given.numpy().reshape(-1))


def test_seeded_sampling_is_reproducible(tiny_models):
    a = generate(tiny_models, task="t2i", prompt="a fox", seed=3)
    b = generate(tiny_models, task="t2i", prompt="a fox", seed=3)
    c = generate(tiny_models, task="t2i", prompt="a fox", seed=4)
    np.testing.assert_array_equal(a.tokens, b.tokens)
    assert not np.array_equal(a.tokens, c.tokens)


def test_greedy_ignores_the_seed_and_cfg_changes_tokens(tiny_models):
    a = generate(tiny_models, task="t2i", prompt="a fox", seed=3, **GREEDY)
    b = generate(tiny_models, task="t2i", prompt="a fox", seed=4, **GREEDY)
    c = generate(tiny_models, task="t2i", prompt="a fox", seed=3, cfg_scale=1.0, **GREEDY)
    np.testing.assert_array_equal(a.tokens, b.tokens)
    assert not np.array_equal(a.tokens, c.tokens)


def test_super_resolution_doubles_the_frame(tiny_models):
    result = generate(tiny_models, task="t2v", prompt="a fox", seed=0, sr=True, with_audio=False)
    assert result.frames.shape == (17, 128, 128, 3)


@pytest.mark.parametrize("kwargs,message", [
    (dict(task="i2v"), "needs an image"),
    (dict(task="stylize", video=np.zeros((16, 64, 64, 3), np.uint8)), r"1 \+ 4k"),
    (dict(task="continue", video=np.zeros((5, 64, 64, 3), np.float32)), "uint8"),
    (dict(task="continue", video=np.zeros((5, 64, 64, 4), np.uint8)), r"\[T, H, W, 3\]"),
    (dict(task="inpaint", video=np.zeros((17, 64, 64, 3), np.uint8)), "mask"),
    (dict(task="a2v", audio=np.zeros(34000, np.int16)), "float"),
    (dict(task="t2v", temperature=-1.0), "temperature"),
    (dict(task="dance"), "dance"),
    (dict(task="t2i", sr=True), "super-resolution"),
])
def test_bad_input_is_a_clear_value_error(tiny_models, kwargs, message):
    with pytest.raises(ValueError, match=message):
        generate(tiny_models, prompt="a fox", **kwargs)


def test_long_prompt_warns_and_still_generates(tiny_models):
    with pytest.warns(UserWarning, match="truncated to 64"):
        result = generate(tiny_models, task="t2i", prompt=" ".join(["fox"] * 100), seed=0, **GREEDY)
    assert result.layout.text_len == 64


def test_weights_round_trip_through_safetensors(tmp_path, tiny_models):
    save(tiny_models, tmp_path)
    assert sorted(p.name for p in tmp_path.iterdir()) == [
        "audio_tokenizer.safetensors", "llm.safetensors", "preset.json", "sr_fusion.safetensors",
        "superres_0.safetensors", "text_projection.safetensors", "video_tokenizer.safetensors"]
    other = load("tiny", seed=1)
    assert not torch.equal(other.llm.tok_embeddings.weight, tiny_models.llm.tok_embeddings.weight)
    loaded = load("tiny", weights=tmp_path, seed=1)
    for name, module in tiny_models.trained_components().items():
        got = loaded.trained_components()[name].state_dict()
        assert all(torch.equal(v, got[k]) for k, v in module.state_dict().items()), name
    (tmp_path / "sr_fusion.safetensors").unlink()  # a folder saved before the fusion existed
    with pytest.raises(ValueError, match=r"lacks sr_fusion.safetensors; .* train it with vp-train sr-fusion"):
        load("tiny", weights=tmp_path)


def test_mismatched_weights_are_listed(tmp_path, tiny_models):
    from safetensors.torch import save_file

    save(tiny_models, tmp_path)
    state = {k: v.contiguous() for k, v in tiny_models.llm.state_dict().items()}
    state["tok_embeddings.weight"] = torch.zeros(10, 128)
    del state["norm.weight"]
    save_file(state, str(tmp_path / "llm.safetensors"))
    (tmp_path / "audio_tokenizer.safetensors").unlink()
    with pytest.raises(ValueError, match="lacks audio_tokenizer.safetensors"):
        load("tiny", weights=tmp_path)
    save(tiny_models, tmp_path / "again")
    (tmp_path / "again" / "llm.safetensors").write_bytes((tmp_path / "llm.safetensors").read_bytes())
    with pytest.raises(ValueError) as error:
        load("tiny", weights=tmp_path / "again")
    assert "llm: missing norm.weight" in str(error.value)
    assert "tok_embeddings.weight has shape (10, 128), the preset needs (2304, 128)" in str(error.value)
