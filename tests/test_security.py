"""Model servers locked down: a shared token (UNAUTHENTICATED without it) and TLS."""

from __future__ import annotations

import subprocess

import grpc
import numpy as np
import pytest
from grpc_health.v1 import health_pb2, health_pb2_grpc

from talkinghead.local_stack import LocalStack
from talkinghead.orchestrator.stage_clients import (
    MotionClient,
    StageFailed,
    open_channel,
    wait_for_serving,
)
from talkinghead.services.motion.options import MotionOptions


def test_token_required_except_for_health(tmp_path, demo_face, monkeypatch):
    monkeypatch.delenv("TALKINGHEAD_TOKEN", raising=False)
    token_file = tmp_path / "token"
    token_file.write_text("s3cret-token\n")
    stack = LocalStack(tmp_path / "logs", engine="lite")
    port = stack.start_server("motion", 0, "motion-token", "--token-file", str(token_file)).port
    target = f"127.0.0.1:{port}"
    try:
        channel = open_channel(target)
        wait_for_serving(channel, "motion", target, 60)  # health needs no token
        channel.close()
        client = MotionClient(target)
        with pytest.raises(StageFailed) as info:
            client.animate(demo_face.read_bytes(), "talking", MotionOptions(fps=25))
        assert info.value.code == grpc.StatusCode.UNAUTHENTICATED
        client.close()
        monkeypatch.setenv("TALKINGHEAD_TOKEN", "wrong")
        client = MotionClient(target)
        with pytest.raises(StageFailed) as info:
            client.engine_info()
        assert info.value.code == grpc.StatusCode.UNAUTHENTICATED
        client.close()
        monkeypatch.setenv("TALKINGHEAD_TOKEN", "s3cret-token")
        client = MotionClient(target)
        frames, _ = client.animate(demo_face.read_bytes(), "talking", MotionOptions(fps=25))
        client.close()
        assert len(frames) == 125
    finally:
        stack.stop()


def self_signed(tmp_path):
    cert, key = tmp_path / "cert.pem", tmp_path / "key.pem"
    subprocess.run(
        ["openssl", "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-keyout", str(key),
         "-out", str(cert), "-days", "1", "-subj", "/CN=localhost",
         "-addext", "subjectAltName=IP:127.0.0.1,DNS:localhost"],
        check=True, capture_output=True,
    )
    return cert, key


def test_tls_only(tmp_path, monkeypatch):
    monkeypatch.delenv("TALKINGHEAD_TOKEN", raising=False)
    monkeypatch.delenv("TALKINGHEAD_TLS_CA", raising=False)
    cert, key = self_signed(tmp_path)
    stack = LocalStack(tmp_path / "logs", engine="lite")
    port = stack.start_server("restore", 0, "restore-tls", "--tls-cert", str(cert),
                              "--tls-key", str(key)).port
    target = f"127.0.0.1:{port}"
    try:
        monkeypatch.setenv("TALKINGHEAD_TLS_CA", str(cert))
        channel = open_channel(target)
        wait_for_serving(channel, "restore", target, 60)
        channel.close()
        from talkinghead.orchestrator.stage_clients import RestoreClient
        from talkinghead.services.common.frames import VideoFrame

        client = RestoreClient(target)
        out = client.restore([VideoFrame(0, np.full((64, 64, 3), 100, np.uint8))])
        client.close()
        assert len(out) == 1
        plain = grpc.insecure_channel(target)
        with pytest.raises(grpc.RpcError) as info:
            health_pb2_grpc.HealthStub(plain).Check(health_pb2.HealthCheckRequest(), timeout=3)
        plain.close()
        assert info.value.code() == grpc.StatusCode.UNAVAILABLE
    finally:
        stack.stop()
