"""The example in docs/runtime.md runs as written."""

import re
from pathlib import Path

DOC = Path(__file__).parents[2] / "docs" / "runtime.md"


def test_runtime_doc_example_runs(tiny_bundle, tmp_path, capsys):
    code = re.search(r"```python\n(.*?)```", DOC.read_text(), re.S).group(1)
    exec(compile(code, str(DOC), "exec"), {"BUNDLE": tiny_bundle, "OUT": tmp_path})
    assert (tmp_path / "fox.mp4").stat().st_size > 0
    out = capsys.readouterr().out
    assert "latent frame 4 -> 4 frames" in out and "blocks saved by sharing" in out
