import numpy as np
import pytest

from vp.models.presets import get_preset
from vp.runtime.layout import SequenceBuilder
from vp.runtime.vocab import Task
from vp.training.llm import CONTRAST_AUDIO_TOKENS, TASK_MIX, make_example


@pytest.fixture(scope="module")
def setup():
    preset = get_preset("demo")
    g, vocab = preset.geometry, preset.vocab
    rng = np.random.default_rng(0)
    n = 4
    grid, audio = g.video_grid, (g.audio_frames, vocab.audio_levels)
    data = {
        "video": rng.integers(0, vocab.visual_codes, (n, *grid)),
        "structure": rng.integers(0, vocab.visual_codes, (n, *grid)),
        "audio": rng.integers(0, vocab.audio_codes, (n, *audio)),
        "long_video": rng.integers(0, vocab.visual_codes, (n, *grid)),
        "long_audio": rng.integers(0, vocab.audio_codes, (n, *audio)),
        "inpaint": rng.integers(0, vocab.visual_codes, (n, *grid)),
        "outpaint": rng.integers(0, vocab.visual_codes, (n, *grid)),
        "attributes": np.array([[0, 0, 0, 1, 1]] * n),  # circle, red, small, right, fast
    }
    return SequenceBuilder(vocab, g), data


@pytest.mark.parametrize("task", list(TASK_MIX))
def test_examples_hold_the_true_clip_in_the_runtime_layout(setup, task):
    builder, data = setup
    e = make_example(task, 1, data, builder, np.random.default_rng(1), 0.0, lambda caption: len(caption.split()))
    lay = e.layout
    assert np.array_equal(e.ids[:lay.prefix_len], lay.prefix)
    video, audio = lay.split_output(e.ids[lay.prefix_len:], builder.vocab)
    truth = data["long_video"][1] if task is Task.LONG_VIDEO else data["video"][1]
    if task is Task.TEXT_TO_IMAGE:
        truth = truth[:1]
    if task is Task.VIDEO_TO_AUDIO:
        assert video is None
    else:
        assert np.array_equal(video, truth)
    if audio is not None:
        assert np.array_equal(audio, data["audio"][1])
    # the loss is taken exactly at the positions the runtime samples, over their ranges
    sampled = [(lo, hi) for forced, lo, hi in lay.positions() if forced < 0]
    taken = e.high > 0
    assert list(zip(e.low[taken], e.high[taken])) == sampled
    assert ((e.ids[taken] >= e.low[taken]) & (e.ids[taken] < e.high[taken])).all()
    assert (e.caption is None) == (task in {Task.UNCONDITIONAL, Task.VIDEO_TO_AUDIO})
    if e.caption:
        assert "red" in e.caption and "right" in e.caption


def test_losses_of_a_one_task_batch_are_finite_and_reach_the_projection(setup):
    import torch

    from vp.models.prefix_lm import PrefixLM
    from vp.training.llm import DemoLM, losses

    builder, data = setup
    preset = get_preset("demo")
    torch.manual_seed(0)
    model = DemoLM(PrefixLM(preset.llm), torch.nn.Linear(384, preset.llm.d_model))
    text = lambda caption: torch.randn(len(caption.split()), 384)  # noqa: E731 (the frozen encoder's place)
    rng = np.random.default_rng(2)
    batch = [make_example(Task.IMAGE_TO_VIDEO, row, data, builder, rng, 0.0, lambda c: len(c.split()))
             for row in (0, 1)]
    out = losses(model, batch, text)
    assert set(out) == {"loss", "video"}  # i2v has no audio positions: no NaN entry
    assert torch.isfinite(out["loss"]) and abs(out["loss"].item() - np.log(preset.vocab.visual_codes)) < 1.0
    out["loss"].backward()
    assert model.text_projection.weight.grad.abs().sum() > 0


@pytest.fixture(scope="module")
def shapes(setup):
    """The setup's clips with shapes circle, circle, square, triangle (a v2a counterpart needs another)."""
    builder, data = setup
    attributes = data["attributes"].copy()
    attributes[:, 0] = [0, 0, 1, 2]
    return builder, {**data, "attributes": attributes}


def test_a_text_to_video_counterpart_swaps_the_direction_word_and_compares_latent_frames_1_and_2(shapes):
    builder, data = shapes
    text_len = lambda caption: len(caption.split())  # noqa: E731
    plain = make_example(Task.TEXT_TO_VIDEO, 1, data, builder, np.random.default_rng(3), 0.0, text_len)
    e = make_example(Task.TEXT_TO_VIDEO, 1, data, builder, np.random.default_rng(3), 0.0, text_len,
                     np.random.default_rng(4))
    assert plain.counterpart is None and e.caption == plain.caption and np.array_equal(e.ids, plain.ids)
    others = {e.caption.replace("right", d) for d in ("left", "up", "down")}  # the same phrasing, another way
    assert e.counterpart.caption in others
    out = e.ids[e.layout.prefix_len:]
    assert np.array_equal(e.counterpart.ids[e.counterpart.layout.prefix_len:], out)
    frame = int(np.prod(builder.geometry.video_grid[1:]))
    video_ids = builder.vocab.video_ids(data["video"][1])
    np.testing.assert_array_equal(out[e.compared], video_ids[frame:3 * frame])
    # text dropped: no counterpart (the unconditional branch has no word to swap)
    dropped = make_example(Task.TEXT_TO_VIDEO, 1, data, builder, np.random.default_rng(3), 1.0, text_len,
                           np.random.default_rng(4))
    assert dropped.caption is None and dropped.counterpart is None


def test_a_video_to_audio_counterpart_hears_another_shapes_video(shapes):
    builder, data = shapes
    for seed in range(5):
        e = make_example(Task.VIDEO_TO_AUDIO, 0, data, builder, np.random.default_rng(3), 0.0, None,
                         np.random.default_rng(seed))
        prefix = e.counterpart.ids[:e.counterpart.layout.prefix_len]
        other = [r for r in range(4) if np.isin(builder.vocab.video_ids(data["video"][r]), prefix).all()]
        assert other and all(data["attributes"][r, 0] != 0 for r in other)  # a square's or a triangle's clip
        np.testing.assert_array_equal(e.counterpart.ids[len(prefix):], e.ids[e.layout.prefix_len:])
        # the first audio tokens, where the tone is chosen
        np.testing.assert_array_equal(e.compared, np.arange(1, 1 + CONTRAST_AUDIO_TOKENS))


def test_the_contrast_hinge_is_the_gap_between_the_swapped_and_the_true_condition(shapes):
    import torch

    from vp.models.prefix_lm import PrefixLM
    from vp.training.llm import DemoLM, _token_losses, losses

    builder, data = shapes
    preset = get_preset("demo")
    torch.manual_seed(0)
    model = DemoLM(PrefixLM(preset.llm), torch.nn.Linear(384, preset.llm.d_model))
    vectors = {}
    text = lambda caption: vectors.setdefault(caption, torch.randn(len(caption.split()), 384))  # noqa: E731
    rng, contrast = np.random.default_rng(5), np.random.default_rng(6)
    batch = [make_example(Task.TEXT_TO_VIDEO, row, data, builder, rng, 0.0, lambda c: len(c.split()), contrast)
             for row in (0, 2)]
    with torch.no_grad():
        plain = losses(model, batch, text)
        out = losses(model, batch, text, contrast_weight=2.0, contrast_margin=50.0)
        gaps = []
        for e in batch:  # each pair scored alone: its summed loss over the compared tokens
            nll = _token_losses(model, [e, e.counterpart], text)[0]
            gaps.append(float(nll[1, e.counterpart.layout.prefix_len + e.compared - 1].sum()
                              - nll[0, e.layout.prefix_len + e.compared - 1].sum()))
    assert abs(out["gap_t2v"].item() - np.mean(gaps)) < 1e-3
    hinge = np.mean([max(0.0, 50.0 - g) / len(e.compared) for g, e in zip(gaps, batch)])
    assert abs(out["loss"].item() - (plain["loss"].item() + 2.0 * hinge)) < 1e-4
    assert "gap_t2v" not in plain and out["video"].item() == pytest.approx(plain["video"].item(), abs=1e-6)


def test_a_later_round_starts_from_the_shipped_llm_and_keeps_the_text_projection(setup, tmp_path):
    import shutil

    from click.testing import CliRunner
    from safetensors.numpy import load_file

    from vp.models.checkpoint import shipped_weights
    from vp.training.cli import main

    _, data = setup
    data = {**data, "long_video": np.full_like(data["long_video"], -1)}  # no sparse rows: any task draws a row
    data["long_video"][0] = setup[1]["long_video"][0]
    work, out = tmp_path / "work", tmp_path / "out"
    work.mkdir()
    np.savez(work / "tokens.npz", **{k: v.astype(np.int16) for k, v in data.items()})
    shipped = shipped_weights(get_preset("demo"))
    shutil.copytree(shipped, out)
    result = CliRunner().invoke(main, ["llm", "--round", "3", "--work", str(work), "--out", str(out), "--steps", "1"])
    assert result.exit_code == 0, result.output
    assert (work / "llm_round3" / "checkpoint.safetensors").is_file()
    before, after = load_file(str(shipped / "llm.safetensors")), load_file(str(out / "llm.safetensors"))
    moved = [np.abs(after[k].astype(np.float32) - before[k].astype(np.float32)).max() for k in before]
    # one warm-up step at lr 0.75e-3 / 100 moves each weight by at most ~1e-5 (Adam): the run started from
    # the shipped LLM, not from the seeded init (which differs by O(0.1)); fp16 rounding allows 1e-3
    assert max(moved) < 2e-3 and max(moved) > 0
    projection = load_file(str(out / "text_projection.safetensors"))
    for k, v in load_file(str(shipped / "text_projection.safetensors")).items():
        np.testing.assert_array_equal(projection[k], v)


def test_rounds_differ_by_seed_only_the_first_trains_the_projection_and_from_4_on_contrast():
    from vp.training.llm import round_folder, round_recipe

    recipes = [round_recipe(n) for n in (1, 2, 3, 4)]
    assert [r.seed for r in recipes] == [4, 5, 6, 7]
    assert [r.train_projection for r in recipes] == [True, False, False, False]
    assert [r.contrast_weight > 0 for r in recipes] == [False, False, False, True]
    assert [round_folder(n) for n in (1, 2, 3)] == ["llm", "llm_round2", "llm_round3"]


def test_round_is_refused_for_other_stages(tmp_path):
    from click.testing import CliRunner

    from vp.training.cli import main

    result = CliRunner().invoke(main, ["superres", "--round", "2", "--work", str(tmp_path)])
    assert result.exit_code == 1 and "--round applies to the llm stage only, not superres" in result.output
