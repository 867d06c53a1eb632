"""One export per output folder at a time, and no leftovers of exports that died.

A lock file `.NAME.lock` beside the output folder holds the exporting
process's pid (created exclusively). An export that finds it held by a live
process refuses; one that finds it held by a dead process (killed, out of
power) takes it over. Partial folders `.NAME.partial-PID` and replaced
bundles `.NAME.old-PID` of dead processes are removed when the lock is taken.
"""

from __future__ import annotations

import os
import re
import shutil
import sys
from pathlib import Path


class OutputLock:
    """with OutputLock(out): ... -- ValueError when another live process exports to `out`."""

    def __init__(self, out: Path):
        self.out = Path(out).resolve()
        self.path = self.out.parent / f".{self.out.name}.lock"

    def __enter__(self) -> OutputLock:
        for _ in range(2):  # a second try after removing a dead process's lock
            try:
                fd = os.open(self.path, os.O_CREAT | os.O_EXCL | os.O_WRONLY, 0o644)
            except FileExistsError:
                holder = _pid_in(self.path)
                if holder is not None and pid_alive(holder):
                    raise ValueError(f"another export to {self.out} is running (pid {holder}); wait for it to end, "
                                     f"or export elsewhere") from None
                self.path.unlink(missing_ok=True)
                continue
            except OSError as error:
                raise ValueError(f"cannot write into {self.out.parent}: {error.strerror}") from None
            with os.fdopen(fd, "w") as f:
                f.write(str(os.getpid()))
            self._remove_leftovers()
            return self
        raise ValueError(f"cannot take the export lock {self.path}; remove it if no export is running")

    def __exit__(self, *exc) -> None:
        self.path.unlink(missing_ok=True)

    def _remove_leftovers(self) -> None:
        pattern = re.compile(rf"^\.{re.escape(self.out.name)}\.(partial|old)-(\d+)$")
        for entry in self.out.parent.iterdir():
            match = pattern.match(entry.name)
            if match and int(match.group(2)) != os.getpid() and not pid_alive(int(match.group(2))):
                shutil.rmtree(entry, ignore_errors=True)


def _pid_in(path: Path) -> int | None:
    try:
        return int(path.read_text().strip())
    except (OSError, ValueError):
        return None


def pid_alive(pid: int) -> bool:
    """Whether process `pid` exists (on Windows without os.kill, which would terminate it)."""
    if sys.platform == "win32":
        import ctypes

        kernel32 = ctypes.windll.kernel32
        handle = kernel32.OpenProcess(0x1000, False, pid)  # PROCESS_QUERY_LIMITED_INFORMATION
        if not handle:
            return False
        code = ctypes.c_ulong()
        kernel32.GetExitCodeProcess(handle, ctypes.byref(code))
        kernel32.CloseHandle(handle)
        return code.value == 259  # STILL_ACTIVE
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True  # exists, owned by another user
    return True
