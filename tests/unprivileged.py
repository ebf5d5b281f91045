"""Checks that need a user the system refuses, run as one even under root.

Root may write anywhere, so "this folder is not writable" is only proven by a user who is
refused, and CI runs as root. Under root such a check runs as nobody (uid and gid 65534,
no supplementary groups, no capabilities), started by setpriv; under a plain user it runs
as that user. Files the check reads must be readable by nobody: pytest's tmp_path lies
under a folder only its owner may enter, so use ``shared_dir``.
"""

from __future__ import annotations

import os
import pickle
import shutil
import subprocess
import sys
import tempfile
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any, TypeVar

import pytest

NOBODY = 65534
T = TypeVar("T")


def is_root() -> bool:
    return os.name == "posix" and os.geteuid() == 0


def command(cmd: list[str]) -> list[str]:
    """``cmd`` as nobody when we are root, else unchanged.

    setpriv, not subprocess's ``user=``: setpriv keeps root's right to reach the program
    until it is executed (the interpreter may sit under /root, e.g. pyenv), and the program
    itself then runs with no privilege at all.
    """
    if not is_root():
        return cmd
    if shutil.which("setpriv") is None:
        pytest.skip("running as root without setpriv (util-linux): no way here to run the "
                    "check as a user who is refused")
    return ["setpriv", f"--reuid={NOBODY}", f"--regid={NOBODY}", "--clear-groups",
            "--inh-caps=-all", *cmd]


@contextmanager
def shared_dir(prefix: str = "th-unprivileged-") -> Iterator[Path]:
    """A temporary folder in /tmp that nobody may enter and read, but not write."""
    path = Path(tempfile.mkdtemp(prefix=prefix, dir="/tmp"))
    path.chmod(0o755)
    try:
        yield path
    finally:
        for folder in (path, *(p for p in path.rglob("*") if p.is_dir())):
            folder.chmod(0o755)  # locked folders inside, so rmtree can empty them
        shutil.rmtree(path, ignore_errors=True)


# Runs in the unprivileged interpreter: (fn, args, kwargs) pickled on stdin, the outcome
# pickled on the original stdout; anything else written to fd 1 (ffmpeg) goes to stderr.
_RUNNER = """
import os, pickle, sys
answer = os.fdopen(os.dup(1), "wb")
os.dup2(2, 1)
fn, args, kwargs = pickle.load(sys.stdin.buffer)
try:
    outcome = ("returned", fn(*args, **kwargs))
except BaseException as exc:
    outcome = ("raised", exc)
try:
    data = pickle.dumps(outcome)
except Exception:
    data = pickle.dumps(("raised", RuntimeError(f"{outcome[0]} (unpicklable): {outcome[1]!r}")))
answer.write(data)
answer.close()
"""


def call(fn: Callable[..., T], /, *args: Any, timeout: float = 120.0, **kwargs: Any) -> T:
    """``fn(*args, **kwargs)`` as an unprivileged user: its value, or its exception raised.

    Under root, ``fn`` and its arguments must pickle (a library function, paths, models):
    they run in a fresh interpreter started as nobody, not in a fork that drops privileges
    (a lazy import from a root-only stdlib would then fail for a reason not under test).
    """
    if not is_root():
        return fn(*args, **kwargs)
    proc = subprocess.run(
        command([sys.executable, "-c", _RUNNER]), input=pickle.dumps((fn, args, kwargs)),
        capture_output=True, timeout=timeout, cwd="/",
    )
    stderr = proc.stderr.decode(errors="replace")
    if proc.returncode != 0 and stderr.startswith("setpriv:"):  # e.g. no CAP_SETUID here
        pytest.skip(f"root here cannot become uid {NOBODY} ({stderr.strip()}), and this "
                    "check needs a user who is refused")
    if proc.returncode != 0 or not proc.stdout:
        raise RuntimeError(f"{fn.__qualname__} as uid {NOBODY} exited {proc.returncode}: "
                           f"{stderr[-2000:]}")
    kind, value = pickle.loads(proc.stdout)
    if kind == "raised":
        raise value
    return value
