"""The vocabulary and task sequence layouts, as seen from vp.models.

The implementation lives in vp.runtime.vocab: it is numpy-only, and the lean
runtime must build exactly the sequences the reference builds without
importing anything from vp.models (which needs torch).
"""

from vp.runtime.vocab import (  # noqa: F401  (re-exported public names)
    SPECIAL_TOKENS, TASK_IDS, ClipGeometry, Forced, Sampled, SequenceBuilder, SequenceLayout, Special, Task,
    Vocabulary,
)
