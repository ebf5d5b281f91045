"""The generated gRPC code matches the .proto files, and the contract has what DESIGN says."""

from __future__ import annotations

import importlib.util
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def load_generator():
    spec = importlib.util.spec_from_file_location("generate", ROOT / "protos" / "generate.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_committed_generated_code_is_fresh():
    stale = load_generator().stale_files()
    assert stale == [], f"run `python protos/generate.py`; stale: {stale}"


def test_staleness_is_detected(tmp_path, monkeypatch):
    generator = load_generator()
    # A copy of the package dir with one generated file altered must be reported.
    copy = tmp_path / "talkinghead" / "v1"
    copy.mkdir(parents=True)
    for p in generator.PACKAGE_DIR.iterdir():
        if p.is_file():
            (copy / p.name).write_bytes(p.read_bytes())
    (copy / "motion_pb2.py").write_text("# edited by hand\n")
    monkeypatch.setattr(generator, "PACKAGE_DIR", copy)
    monkeypatch.setattr(generator, "PROTO_ROOT", tmp_path)
    assert generator.stale_files() == ["motion_pb2.py"]


def test_services_and_streaming_shape():
    from talkinghead.v1 import lipsync_pb2, motion_pb2, restore_pb2

    animate = motion_pb2.DESCRIPTOR.services_by_name["MotionService"].methods_by_name["Animate"]
    assert animate.full_name == "talkinghead.v1.MotionService.Animate"
    assert not animate.client_streaming and animate.server_streaming
    for module, service, method in (
        (lipsync_pb2, "LipSyncService", "Sync"),
        (restore_pb2, "RestoreService", "Restore"),
    ):
        m = module.DESCRIPTOR.services_by_name[service].methods_by_name[method]
        assert m.client_streaming and m.server_streaming, m.full_name
        # one request and one response message per RPC, named after it
        assert m.input_type.name == f"{method}Request"
        assert m.output_type.name == f"{method}Response"
