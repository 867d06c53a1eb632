"""The vocabulary's special tokens and id ranges."""

import numpy as np
import pytest

from vp.runtime.vocab import SPECIAL_TOKENS, TASK_IDS, Special, Vocabulary

VOCAB = Vocabulary(visual_codes=1024, audio_levels=4, audio_codes=256)
AUDIO6 = np.arange(24).reshape(6, 4) % 256


def test_fifteen_special_tokens_with_distinct_ids():
    assert len(SPECIAL_TOKENS) == 15
    assert len(set(SPECIAL_TOKENS.values())) == 15
    assert all(0 <= i < 256 for i in [*SPECIAL_TOKENS.values(), *TASK_IDS.values()])
    assert len(set(TASK_IDS.values()) | {int(s) for s in Special}) == len(TASK_IDS) + len(Special)


def test_paper_vocabulary_is_about_300k():
    vocab = Vocabulary(visual_codes=2**18, audio_levels=4, audio_codes=1024, text_words=32768)
    assert vocab.visual_range() == (256, 256 + 2**18)
    assert vocab.audio_range(0) == (256 + 2**18, 256 + 2**18 + 1024)
    assert vocab.audio_range(3)[1] == vocab.text_offset == 256 + 2**18 + 4096
    assert vocab.size == 299_264


def test_audio_ids_are_level_major_and_round_trip():
    ids = VOCAB.audio_ids(AUDIO6)
    levels = [next(level for level in range(4) if VOCAB.audio_range(level)[0] <= i < VOCAB.audio_range(level)[1])
              for i in ids]
    assert levels == [0] * 6 + [1] * 6 + [2] * 6 + [3] * 6
    np.testing.assert_array_equal(ids[:6], AUDIO6[:, 0] + VOCAB.audio_offset(0))
    np.testing.assert_array_equal(VOCAB.audio_codes_from_ids(ids, 6), AUDIO6)


def test_output_heads_cover_every_sampled_range_and_nothing_else():
    """Two heads: the visual codes, the audio codes of all levels; specials and text words in none."""
    vocab = Vocabulary(visual_codes=2**18, audio_levels=4, audio_codes=1024, text_words=32768)
    assert vocab.heads() == ((256, 256 + 2**18), (256 + 2**18, 256 + 2**18 + 4096))
    assert vocab.head_width == 2**18
    assert vocab.head_of(*vocab.visual_range()) == 0
    assert [vocab.head_of(*vocab.audio_range(level)) for level in range(4)] == [1] * 4
    for outside in ((0, 256), (vocab.text_offset, vocab.size), (200, 300)):
        with pytest.raises(ValueError, match="no output head holds ids"):
            vocab.head_of(*outside)
    silent = Vocabulary(visual_codes=1024, audio_levels=0, audio_codes=0)
    assert silent.heads() == ((256, 1280),) and silent.head_width == 1024
