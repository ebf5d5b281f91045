"""Where the warm path spends time that is not network compute.

The warm path (a presenter whose motion clip is cached) is lipsync → restore → compose,
per output frame. For each part, the same demo frames run in this process under cProfile,
with the profiler paused inside every network's forward pass (hooks on the engine's
top-level networks), so the profile holds only what surrounds the networks: crops,
alignment, colour conversion, masks, paste-back, the news frame and the encoder, and the
message (de)serialisation every frame pays twice per served stage. The part ``profile``
of ``python -m bench``.
"""

from __future__ import annotations

import contextlib
import cProfile
import pstats
import tempfile
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path

from talkinghead.services.common.frames import VideoFrame
from talkinghead.services.common.network_time import NetworkSeconds, networks_of

NOTE = ("cProfile paused inside every network's forward pass; demo frames (512x512) with "
        "face geometry, as the pipeline sends them. 'The rest' = wall time minus network "
        "seconds; the largest own times name where it goes.")


@dataclass
class PartProfile:
    part: str
    frames: int
    wall_s: float
    network_s: float
    top: list[tuple[str, float]]  # (function, own seconds), largest first

    @property
    def other_ms_per_frame(self) -> float:
        return (self.wall_s - self.network_s) / self.frames * 1000


@contextlib.contextmanager
def paused_inside(profiler: cProfile.Profile, engine: object) -> Iterator[None]:
    """Pause ``profiler`` during every forward pass of the engine's networks."""
    handles = []
    for net in networks_of(engine):
        handles.append(net.register_forward_pre_hook(lambda *_: profiler.disable()))
        handles.append(net.register_forward_hook(lambda *_: profiler.enable()))
    try:
        yield
    finally:
        for handle in handles:
            handle.remove()


def profile_part(part: str, frames: int, run: Callable[[], object], engine: object | None,
                 top: int) -> PartProfile:
    profiler = cProfile.Profile()
    with NetworkSeconds(engine) as network, paused_inside(profiler, engine):
        start = time.perf_counter()
        profiler.enable()
        run()
        profiler.disable()
        wall = time.perf_counter() - start
    stats = pstats.Stats(profiler)
    rows = sorted(stats.stats.items(), key=lambda item: item[1][2], reverse=True)  # own time
    named = [(_name(func), own) for func, (_, _, own, _, _) in rows[:top]]
    return PartProfile(part, frames, wall, network.seconds, named)


def _name(func: tuple[str, int, str]) -> str:
    filename, line, name = func
    if filename == "~":
        return name.strip("<>")
    short = "/".join(Path(filename).parts[-2:])
    return f"{short}:{line} {name}"


def profile_warm_path(weights: Path | None, device: str, frames: int, top: int,
                      engine: str = "neural", cheap_frames: int = 100) -> list[PartProfile]:
    """Lipsync and restore on ``frames`` demo frames; wire (de)serialisation and compose on
    ``cheap_frames`` (enough for the encoder's start and flush to be spread thin)."""
    from bench.common import NEURAL_ENGINE, build_engine
    from bench.served_stages import demo_inputs
    from talkinghead.compositor import NewsFrameRenderer, NewsLayout, NewsScene, VideoEncoder
    from talkinghead.services.common.wire import frame_from_proto, frame_to_proto
    from talkinghead.v1 import lipsync_pb2

    photo, _, face, audio, _ = demo_inputs(2)
    with_face = [VideoFrame(i, photo, face) for i in range(frames)]
    many = [VideoFrame(i, photo, face) for i in range(cheap_frames)]
    parts = []
    for stage, run in (("lipsync", lambda e: list(e.sync(with_face, audio, 25.0))),
                       ("restore", lambda e: e.restore(with_face, 0.5))):
        name = NEURAL_ENGINE[stage] if engine == "neural" else engine
        built = build_engine(stage, name, weights, device, {"lipsync": 16, "restore": 1}[stage])
        parts.append(profile_part(f"{stage} engine ({name})", frames,
                                  lambda e=built, r=run: r(e), built, top))

    def wire_round_trip() -> None:
        # one hop: sender builds and serialises, receiver parses and decodes (x2 per stage)
        for frame in many:
            data = lipsync_pb2.SyncRequest(frames=[frame_to_proto(frame)]).SerializeToString()
            frame_from_proto(lipsync_pb2.SyncRequest.FromString(data).frames[0])

    parts.append(profile_part("one gRPC hop, (de)serialisation", cheap_frames, wire_round_trip,
                              None, top))

    scene = NewsScene(title="Senior Backend Engineer", company="Northwind Logistics",
                      location="Berlin", skills=["Python", "gRPC"], channel_name="BENCH")
    with tempfile.TemporaryDirectory() as tmp:
        renderer = NewsFrameRenderer(scene, NewsLayout(), 25.0)
        renderer.lock_crop(photo.shape, face.box)

        def compose() -> None:
            with VideoEncoder(Path(tmp) / "bench.mp4", 25.0) as encoder:
                for frame in many:
                    encoder.write(renderer.render(frame.image, frame.index))

        parts.append(profile_part("compose + encode (1080p H.264)", cheap_frames, compose, None,
                                  top))
    return parts


def table(parts: list[PartProfile]) -> list[str]:
    lines = ["| part | frames | ms / frame, all | ms / frame, network | ms / frame, the rest | "
             "largest own times in the rest (ms / frame) |", "|---|---:|---:|---:|---:|---|"]
    for p in parts:
        top = "; ".join(f"`{name}` {own / p.frames * 1000:.1f}" for name, own in p.top)
        lines.append(f"| {p.part} | {p.frames} | {p.wall_s / p.frames * 1000:.1f} | "
                     f"{p.network_s / p.frames * 1000:.1f} | {p.other_ms_per_frame:.1f} | {top} |")
    return lines
