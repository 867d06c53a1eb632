"""What a generation may be asked, checked before any work (the runtime and the torch reference).

Per task, the text and media it takes:

    task          prompt     image  video  audio  mask
    t2v, t2i      required   -      -      -      -
    stylize       required   -      req.   -      -
    i2v           optional   req.   -      -      -
    continue      optional   -      req.   -      -
    long          optional   -      req.   -      -
    inpaint       optional   -      req.   -      req.
    outpaint      optional   -      req.   -      req.
    a2v           optional   -      -      req.   -
    av-continue   optional   -      req.   req.   -
    v2a, uncond   none       -      v2a    -      -

Anything a task does not use is an error (never silently ignored), as are
prompts that are not text, seeds and sample counts that are not whole
numbers in range, and audio holding NaN or infinity. numpy integer types
are accepted wherever an int is.
"""

from __future__ import annotations

import numbers

import numpy as np

from vp.runtime.vocab import Task

TEXT_REQUIRED = frozenset({Task.TEXT_TO_VIDEO, Task.TEXT_TO_IMAGE, Task.STYLIZATION})
NO_TEXT = frozenset({Task.UNCONDITIONAL, Task.VIDEO_TO_AUDIO})
MEDIA: dict[Task, frozenset[str]] = {  # the media each task needs (and the only ones it takes)
    Task.TEXT_TO_VIDEO: frozenset(), Task.TEXT_TO_IMAGE: frozenset(), Task.UNCONDITIONAL: frozenset(),
    Task.IMAGE_TO_VIDEO: frozenset({"image"}), Task.CONTINUATION: frozenset({"video"}),
    Task.LONG_VIDEO: frozenset({"video"}), Task.INPAINT: frozenset({"video", "mask"}),
    Task.OUTPAINT: frozenset({"video", "mask"}), Task.VIDEO_TO_AUDIO: frozenset({"video"}),
    Task.AUDIO_TO_VIDEO: frozenset({"audio"}), Task.AUDIO_VIDEO_CONTINUATION: frozenset({"video", "audio"}),
    Task.STYLIZATION: frozenset({"video"}),
}
MAX_SEED = 2**63 - 1


def check_task(task) -> Task:
    try:
        return Task(task)
    except ValueError:
        raise ValueError(f"unknown task {task!r}; tasks: {', '.join(t.value for t in Task)}") from None


def check_prompt(task: Task, prompt) -> str:
    """The prompt as text; ValueError for bytes that are not UTF-8, a missing one where the task
    needs it, or one given to a task without text."""
    if prompt is None:
        prompt = ""
    if isinstance(prompt, bytes):
        try:
            prompt = prompt.decode("utf-8")
        except UnicodeDecodeError as error:
            raise ValueError(f"the prompt is not UTF-8 text (byte {error.start})") from None
    if not isinstance(prompt, str):
        raise ValueError(f"the prompt must be text, got {type(prompt).__name__}")
    try:
        prompt.encode("utf-8")
    except UnicodeEncodeError as error:  # e.g. undecodable command-line bytes (surrogate escapes)
        raise ValueError(f"the prompt is not valid UTF-8 text (character {error.start})") from None
    if task in TEXT_REQUIRED and not prompt.strip():
        raise ValueError(f"task {task.value} needs a prompt (task uncond generates without text)")
    if task in NO_TEXT and prompt.strip():
        raise ValueError(f"task {task.value} takes no prompt")
    return prompt


def check_count(name: str, value, low: int, high: int) -> int:
    """value as an int in [low, high]; ValueError for anything else (bools, 1.5, "x", ...)."""
    if isinstance(value, bool) or not isinstance(value, numbers.Integral):
        raise ValueError(f"{name} must be a whole number, got {value!r}")
    if not low <= int(value) <= high:
        raise ValueError(f"{name} must lie in [{low}, {high}], got {value}")
    return int(value)


def check_media(task: Task, **given) -> None:
    """ValueError when the task lacks media it needs, or is given media it does not use
    (given: name -> the value, None for absent)."""
    present = {k for k, v in given.items() if v is not None}
    need = MEDIA[task]
    if present - need:
        extra = ", ".join(sorted(present - need))
        raise ValueError(f"task {task.value} does not use {extra}" +
                         (f" (it takes {', '.join(sorted(need))})" if need else ""))
    if need - present:
        named = {"image": "an image", "video": "a video", "audio": "audio", "mask": "a mask"}
        raise ValueError(f"task {task.value} needs {' and '.join(named[k] for k in sorted(need - present))}")
    audio = given.get("audio")
    if audio is not None and np.issubdtype(np.asarray(audio).dtype, np.floating) \
            and not np.isfinite(np.asarray(audio)).all():
        raise ValueError("audio holds NaN or infinite samples")
