"""Task layouts against PAPER.md."""

import itertools

import numpy as np
import pytest

from vp.runtime.layout import ClipGeometry, Forced, SequenceBuilder
from vp.runtime.vocab import SPECIAL_TOKENS, TASK_IDS, Special, Task, Vocabulary

VOCAB = Vocabulary(visual_codes=1024, audio_levels=4, audio_codes=256)
GEOMETRY = ClipGeometry(video_grid=(5, 4, 4), portrait_grid=(5, 7, 4), audio_frames=6)
BUILDER = SequenceBuilder(VOCAB, GEOMETRY)
NAMES = {int(v): k for k, v in SPECIAL_TOKENS.items() if k != "<task>"}
NAMES.update({v: f"<task:{t.value}>" for t, v in TASK_IDS.items()})
NAMES[Special.TEXT_SLOT] = "text"


def name(i: int) -> str:
    if i in NAMES:
        return NAMES[i]
    if VOCAB.visual_range()[0] <= i < VOCAB.visual_range()[1]:
        return "v"
    for level in range(VOCAB.audio_levels):
        low, high = VOCAB.audio_range(level)
        if low <= i < high:
            return f"a{level}"
    raise AssertionError(f"id {i} in no range")


def collapse(words: list[str]) -> str:
    return " ".join(w if n == 1 else f"{w}*{n}" for w, n in ((w, len(list(g))) for w, g in itertools.groupby(words)))


def skeleton(layout) -> str:
    """'prefix | output' with runs collapsed; sampled positions end in '?', given content in '!'."""
    prefix = collapse([name(int(i)) for i in layout.prefix])
    out = []
    for forced, low, _ in layout.positions():
        if forced >= 0:
            w = name(forced)
            out.append(w if w.startswith("<") else w + "!")
        else:
            out.append(name(low) + "?")
    return f"{prefix} | {collapse(out)}"


VIDEO1 = np.arange(16).reshape(1, 4, 4)      # one latent frame (an image)
VIDEO2 = np.arange(32).reshape(2, 4, 4)      # two latent frames (1 s of conditioning... in a 5x4x4 clip)
VIDEO5 = np.arange(80).reshape(5, 4, 4) % 1024
AUDIO6 = np.arange(24).reshape(6, 4) % 256
AUDIO2 = AUDIO6[:2]

# One line per task of PAPER.md: the layout vp builds, written out by hand.
EXPECTED = [
    (Task.TEXT_TO_VIDEO, dict(text_len=3, with_audio=True),
     "<bos> <task:t2v> <bot_i> text*3 <eot_i> | <bov_o> v?*80 <eov_o> <boa_o> a0?*6 a1?*6 a2?*6 a3?*6 <eoa_o> <eos>"),
    (Task.TEXT_TO_VIDEO, dict(text_len=3),
     "<bos> <task:t2v> <bot_i> text*3 <eot_i> | <bov_o> v?*80 <eov_o> <eos>"),
    (Task.TEXT_TO_VIDEO, dict(text_len=2, portrait=True),
     "<bos> <task:t2v> <bot_i> text*2 <eot_i> <res> | <bov_o> v?*140 <eov_o> <eos>"),
    (Task.TEXT_TO_IMAGE, dict(text_len=2),
     "<bos> <task:t2i> <bot_i> text*2 <eot_i> | <bov_o> v?*16"),
    (Task.IMAGE_TO_VIDEO, dict(text_len=2, video=VIDEO1),
     "<bos> <task:i2v> <bot_i> text*2 <eot_i> <bov_i> v*16 <eov_i> | <bov_o> v!*16 v?*64 <eov_o> <eos>"),
    (Task.UNCONDITIONAL, dict(with_audio=True),
     "<bos> <task:uncond> | <bov_o> v?*80 <eov_o> <boa_o> a0?*6 a1?*6 a2?*6 a3?*6 <eoa_o> <eos>"),
    (Task.CONTINUATION, dict(video=VIDEO2),
     "<bos> <task:continue> <bov_i> v*32 <eov_i> | <bov_o> v!*32 v?*48 <eov_o> <eos>"),
    (Task.LONG_VIDEO, dict(text_len=1, video=VIDEO2),
     "<bos> <task:long> <bot_i> text <eot_i> <bov_i> v*32 <eov_i> | <bov_o> v!*32 v?*48 <eov_o> <eos>"),
    (Task.INPAINT, dict(text_len=1, video=VIDEO5),
     "<bos> <task:inpaint> <bot_i> text <eot_i> <bov_i> v*80 <eov_i> | <bov_o> v?*80 <eov_o> <eos>"),
    (Task.OUTPAINT, dict(video=VIDEO5),
     "<bos> <task:outpaint> <bov_i> v*80 <eov_i> | <bov_o> v?*80 <eov_o> <eos>"),
    (Task.VIDEO_TO_AUDIO, dict(video=VIDEO5),
     "<bos> <task:v2a> <bov_i> v*80 <eov_i> | <boa_o> a0?*6 a1?*6 a2?*6 a3?*6 <eoa_o> <eos>"),
    (Task.AUDIO_TO_VIDEO, dict(text_len=2, audio=AUDIO6),
     "<bos> <task:a2v> <bot_i> text*2 <eot_i> <boa_i> a0*6 a1*6 a2*6 a3*6 <eoa_i> | <bov_o> v?*80 <eov_o> <eos>"),
    (Task.AUDIO_VIDEO_CONTINUATION, dict(video=VIDEO1, audio=AUDIO2),
     "<bos> <task:av-continue> <bov_i> v*16 <eov_i> <boa_i> a0*2 a1*2 a2*2 a3*2 <eoa_i> | "
     "<bov_o> v!*16 v?*64 <eov_o> <boa_o> a0!*2 a0?*4 a1!*2 a1?*4 a2!*2 a2?*4 a3!*2 a3?*4 <eoa_o> <eos>"),
    (Task.STYLIZATION, dict(text_len=2, video=VIDEO5),
     "<bos> <task:stylize> <bot_i> text*2 <eot_i> <bov_i> v*80 <eov_i> | <bov_o> v?*80 <eov_o> <eos>"),
]


@pytest.mark.parametrize("task, inputs, expected", EXPECTED, ids=[f"{t.value}-{i}" for i, (t, _, _) in enumerate(EXPECTED)])
def test_layout_matches_paper(task, inputs, expected):
    layout = BUILDER.build(task, **inputs)
    assert skeleton(layout) == expected
    assert layout.output_len == len(layout.positions())
    assert layout.text_mask().sum() == layout.text_len


def test_every_task_has_a_layout_test():
    assert {t for t, _, _ in EXPECTED} == set(Task)


def test_split_output_recovers_codes():
    layout = BUILDER.build(Task.AUDIO_VIDEO_CONTINUATION, video=VIDEO1, audio=AUDIO2)
    video = np.arange(80).reshape(5, 4, 4)
    audio = AUDIO6
    stream = iter([*VOCAB.video_ids(video)])
    astream = iter(VOCAB.audio_ids(audio))
    out = []
    for forced, low, _ in layout.positions():
        if forced >= 0 and not (low >= 256):
            out.append(forced)
        elif low < VOCAB.audio_offset(0):
            out.append(next(stream))
        else:
            out.append(next(astream))
    v, a = layout.split_output(np.array(out), VOCAB)
    np.testing.assert_array_equal(v, video)
    np.testing.assert_array_equal(a, audio)


def test_cfg_branch_drops_the_text_block():
    cond = BUILDER.build(Task.TEXT_TO_VIDEO, text_len=5)
    uncond = BUILDER.build(Task.TEXT_TO_VIDEO, text_len=0)
    assert cond.prefix_len - uncond.prefix_len == 7
    assert cond.positions() == uncond.positions()


@pytest.mark.parametrize("task, inputs, message", [
    (Task.IMAGE_TO_VIDEO, {}, "needs input video"),
    (Task.AUDIO_TO_VIDEO, {}, "needs input audio"),
    (Task.IMAGE_TO_VIDEO, dict(video=VIDEO2), "expected 1 latent frame"),
    (Task.CONTINUATION, dict(video=VIDEO5), "nothing to continue"),
    (Task.INPAINT, dict(video=VIDEO2), "expected 5 latent frames"),
    (Task.CONTINUATION, dict(video=np.zeros((2, 3, 4), int)), "latent grid of 4x4"),
    (Task.CONTINUATION, dict(video=VIDEO2 + 2000), r"values must lie in \[0, 1024\)"),
    (Task.CONTINUATION, dict(video=VIDEO2.astype(float)), "integer"),
    (Task.AUDIO_TO_VIDEO, dict(audio=AUDIO2), "expected 6 latent audio frames"),
    (Task.TEXT_TO_VIDEO, dict(text_len=65), "at most 64"),
    ("dance", {}, "dance"),
])
def test_bad_layout_inputs(task, inputs, message):
    with pytest.raises(ValueError, match=message):
        BUILDER.build(task, **inputs)


def test_forced_steps_hold_the_given_frames():
    layout = BUILDER.build(Task.CONTINUATION, video=VIDEO2)
    forced = [s for s in layout.output if isinstance(s, Forced) and len(s.ids) > 1]
    assert list(forced[0].ids) == list(VOCAB.video_ids(VIDEO2))
