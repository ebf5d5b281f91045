"""Per-frame cost of the lite engines and the compositor (no weights needed).

    python -m bench.lite_and_compositor [--frames 100] [--no-write]
"""

from __future__ import annotations

import argparse
import json
import time
from importlib import resources

import cv2
import numpy as np

from bench.common import append_markdown
from talkinghead.compositor import NewsFrameRenderer, NewsLayout, NewsScene
from talkinghead.services.common.audio import decode_audio_file
from talkinghead.services.common.frames import VideoFrame
from talkinghead.services.lipsync.lite_engine import LiteLipSyncEngine
from talkinghead.services.motion.lite_engine import LiteMotionEngine
from talkinghead.services.motion.options import MotionOptions
from talkinghead.services.motion.template import load_template
from talkinghead.services.restore.lite_engine import LiteRestoreEngine


def per_frame_ms(fn, frames: int) -> float:
    start = time.perf_counter()
    fn()
    return (time.perf_counter() - start) / frames * 1000


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--frames", type=int, default=100)
    parser.add_argument("--no-write", action="store_true")
    args = parser.parse_args()
    demo = resources.files("talkinghead.assets.demo")
    photo = cv2.cvtColor(cv2.imread(str(demo / "face.jpg")), cv2.COLOR_BGR2RGB)
    audio = decode_audio_file(demo / "speech.wav")
    card = json.loads((demo / "card.json").read_text())
    n = args.frames

    motion = LiteMotionEngine()
    motion.warmup()
    template = load_template("talking").resample(25.0)
    clip = []
    rows = [("lite motion (512 px)", per_frame_ms(
        lambda: clip.extend(motion.animate(photo, template, MotionOptions())), template.n_frames))]
    frames = [VideoFrame(i, clip[i % len(clip)].image, clip[i % len(clip)].face) for i in range(n)]
    lipsync = LiteLipSyncEngine()
    lipsync.warmup()
    rows.append(("lite lipsync (geometry given)",
                 per_frame_ms(lambda: list(lipsync.sync(frames, audio, 25.0)), n)))
    restore = LiteRestoreEngine()
    restore.warmup()
    rows.append(("lite restore (geometry given)", per_frame_ms(lambda: restore.restore(frames), n)))
    renderer = NewsFrameRenderer(NewsScene(**card), NewsLayout(), 25.0)
    rows.append(("compositor frame (1920x1080)", per_frame_ms(
        lambda: [renderer.render(f.image, f.index) for f in frames], n)))

    table = ["| work | ms / frame |", "|---|---:|"]
    table += [f"| {name} | {ms:.2f} |" for name, ms in rows]
    print("\n".join(table))
    if not args.no_write:
        append_markdown("bench.lite_and_compositor", "Lite engines and compositor, per frame",
                        table, "cpu")


if __name__ == "__main__":
    np.seterr(all="ignore")
    main()
