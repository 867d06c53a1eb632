"""One export per output folder; leftovers of dead exports removed."""

import subprocess
import sys

import pytest

from vp.export.bundle import ExportConfig, export_bundle
from vp.export.output_lock import OutputLock, pid_alive


@pytest.fixture
def live_pid():
    process = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(60)"])
    yield process.pid
    process.kill()
    process.wait()


def dead_pid():
    process = subprocess.Popen([sys.executable, "-c", "pass"])
    process.wait()
    return process.pid


def test_a_second_export_to_the_same_place_refuses(tmp_path, live_pid):
    (tmp_path / ".b.lock").write_text(str(live_pid))
    with pytest.raises(ValueError, match=rf"another export to .*b is running \(pid {live_pid}\)"):
        export_bundle(ExportConfig(preset="tiny", out=tmp_path / "b", engines="none", force=True))
    assert not (tmp_path / "b").exists() and (tmp_path / ".b.lock").read_text() == str(live_pid)


def test_a_dead_exports_lock_and_leftovers_are_cleared(tmp_path, live_pid):
    dead = dead_pid()
    assert pid_alive(live_pid) and not pid_alive(dead)
    (tmp_path / ".b.lock").write_text(str(dead))
    for name in (f".b.partial-{dead}", f".b.old-{dead}", f".b.partial-{live_pid}", f".c.partial-{dead}"):
        (tmp_path / name / "onnx").mkdir(parents=True)
    with OutputLock(tmp_path / "b") as lock:
        assert lock.path.read_text().strip().isdigit() and int(lock.path.read_text()) != dead
        assert not (tmp_path / f".b.partial-{dead}").exists() and not (tmp_path / f".b.old-{dead}").exists()
        assert (tmp_path / f".b.partial-{live_pid}").exists()  # a live export's work is left alone
        assert (tmp_path / f".c.partial-{dead}").exists()  # another output's too
        with pytest.raises(ValueError, match="another export"):
            OutputLock(tmp_path / "b").__enter__()
    assert not (tmp_path / ".b.lock").exists()


def test_the_lock_is_released_after_a_failed_export(tmp_path, monkeypatch):
    import vp.export.bundle as bundle

    def fail(*args, **kwargs):
        raise ValueError("boom")

    monkeypatch.setattr(bundle, "export_component", fail)
    with pytest.raises(ValueError, match="boom"):
        export_bundle(ExportConfig(preset="tiny", out=tmp_path / "b", engines="none"))
    assert sorted(p.name for p in tmp_path.iterdir()) == []
