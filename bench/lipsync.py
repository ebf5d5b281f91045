"""Wav2Lip cost: the generator per batch size, and the whole sync path with the face
geometry given (our pipeline) and with S3FD on every frame (the official way).

Deterministic weights in the official layout, current device, 512 px frames of the demo.

    python -m bench.lipsync [--frames 64] [--batches 1,16,128] [--no-write]
"""

from __future__ import annotations

import argparse
import tempfile
import time
from pathlib import Path

import numpy as np
import torch

from bench.common import append_markdown, count_flops, time_call
from talkinghead.services.common.audio import decode_audio_file
from talkinghead.services.common.device import resolve_device
from talkinghead.services.common.frames import VideoFrame
from talkinghead.services.lipsync import wav2lip_weights as ww
from talkinghead.services.lipsync.s3fd_detect import preprocess
from talkinghead.services.lipsync.wav2lip_engine import Wav2LipEngine


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--device", default="auto")
    parser.add_argument("--frames", type=int, default=64)
    parser.add_argument("--batches", default="1,16,128")
    parser.add_argument("--no-write", action="store_true")
    args = parser.parse_args()
    device = resolve_device(args.device)
    from importlib import resources

    import cv2

    demo = resources.files("talkinghead.assets.demo")
    photo = cv2.cvtColor(cv2.imread(str(demo / "face.jpg")), cv2.COLOR_BGR2RGB)
    audio = decode_audio_file(demo / "speech.wav")

    with tempfile.TemporaryDirectory() as tmp:
        ww.write_deterministic_checkpoints(Path(tmp), "talkinghead-a")
        engine = Wav2LipEngine(Path(tmp), device, batch_size=16)
    engine.warmup()
    net = engine.generator
    rows = []
    with torch.inference_mode():
        gen_flops = count_flops(lambda: net(torch.zeros(1, 1, 80, 16), torch.zeros(1, 6, 96, 96)))
        for batch in (int(b) for b in args.batches.split(",")):
            mel = torch.rand(batch, 1, 80, 16, device=device)
            faces = torch.rand(batch, 6, 96, 96, device=device)
            seconds = time_call(lambda m=mel, f=faces: net(m, f), repeats=3)
            rows.append((f"generator, batch {batch}", gen_flops / 1e9, batch / seconds))
        det_flops = count_flops(lambda: engine.detector(preprocess(photo, "rgb")))

    from talkinghead.services.common.face_detection import largest_face

    face = largest_face(photo)
    n = args.frames
    with_geometry = [VideoFrame(i, photo, face) for i in range(n)]
    start = time.perf_counter()
    list(engine.sync(with_geometry, audio, 25.0))
    rows.append(("sync path, face geometry given (ours)", gen_flops / 1e9,
                 n / (time.perf_counter() - start)))
    sync_seconds = 1.0 / rows[-1][2]
    # The official way adds S3FD on every frame. Deterministic weights give arbitrary boxes,
    # so detection is timed on its own (distinct pixels per frame: the memo cannot help)
    # and added to the per-frame cost of the path above.
    k = max(2, n // 8)
    jittered = [np.ascontiguousarray(np.roll(photo, i, axis=1)) for i in range(k)]
    start = time.perf_counter()
    for image in jittered:
        engine._detect(image)
    detect_seconds = (time.perf_counter() - start) / k
    rows.append((f"S3FD alone ({photo.shape[1]}x{photo.shape[0]})", det_flops / 1e9,
                 1.0 / detect_seconds))
    rows.append(("sync path, S3FD on every frame (official way)",
                 (gen_flops + det_flops) / 1e9, 1.0 / (sync_seconds + detect_seconds)))

    table = ["| work | GFLOPs / frame | frames / s |", "|---|---:|---:|"]
    table += [f"| {name} | {gflops:.2f} | {fps:.2f} |" for name, gflops, fps in rows]
    print("\n".join(table))
    if not args.no_write:
        append_markdown("bench.lipsync", "Wav2Lip: generator and sync path", table, device,
                        ["S3FD post-processing on deterministic weights keeps nearly every "
                         "anchor as a candidate, so the detection rows are upper bounds.",
                         f"Frames per sync call: {n}; audio: the demo speech."])


if __name__ == "__main__":
    main()
