"""The local launcher survives losing a picked port to another process before the server binds
it (CI once failed on exactly this: an ephemeral port picked for lipsync was taken by then)."""

from __future__ import annotations

import contextlib
import socket

from talkinghead import local_stack
from talkinghead.local_stack import LocalStack


def test_a_server_whose_port_was_taken_starts_again_on_another(tmp_path, monkeypatch):
    with contextlib.closing(socket.socket(socket.AF_INET, socket.SOCK_STREAM)) as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        taken_port = taken.getsockname()[1]
        real_free_port = local_stack.free_port
        picked: list[int] = []

        def pick() -> int:  # the first pick is a port another process holds
            picked.append(taken_port if not picked else real_free_port())
            return picked[-1]

        monkeypatch.setattr(local_stack, "free_port", pick)
        stack = LocalStack(tmp_path, engine="lite")
        try:
            proc = stack.start_server("restore", 0, "restore-moved")
            assert picked[0] == taken_port and len(picked) == 2  # lost the port, picked again
            assert proc.port == picked[1]
            assert proc.popen.poll() is None
            assert "listening on" in proc.log_text()
            assert stack.processes == [proc]  # the failed start is not kept
        finally:
            stack.stop()
