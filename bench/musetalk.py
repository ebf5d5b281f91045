"""MuseTalk per output frame against Wav2Lip + GFPGAN + its parser (the part ``musetalk`` of
``python -m bench``).

FLOPs are counted with torch's FlopCounterMode on the meta device (no weights, no time), at
the sizes the pipeline feeds each network. Time is measured through the engines themselves
on deterministic weights: MuseTalk's ``sync`` on a second video of the same motion frames (its
presenter frames cached, so only UNet, decode and blend run), against Wav2Lip's ``sync``
followed by GFPGAN's ``restore`` with the presenter paste mask (the parser's mask cached the
same way), both per output frame.
"""

from __future__ import annotations

import time
from dataclasses import dataclass, replace
from pathlib import Path

import torch

from bench.common import count_flops

NOTE = ("FLOPs counted with torch's FlopCounterMode (multiply-add = 2) on the meta device. "
        "MuseTalk: the encodes and the parser run once per presenter (motion-clip) frame, the "
        "UNet and the decode every output frame; Wav2Lip's restore path: GFPGAN every output "
        "frame, its parser once per presenter frame with the presenter paste mask, every "
        "frame with the official one.")


@dataclass(frozen=True)
class FlopRow:
    part: str
    runs: str
    gflops: float


def flop_rows() -> list[FlopRow]:
    from talkinghead.services.lipsync.networks import musetalk as nets
    from talkinghead.services.lipsync.networks.bisenet import BiSeNet
    from talkinghead.services.lipsync.networks.wav2lip import Wav2Lip
    from talkinghead.services.restore.networks.gfpgan import GFPGANv1Clean
    from talkinghead.services.restore.networks.parsenet import ParseNet

    meta = torch.device("meta")
    unet, vae, whisper = nets.build_unet(), nets.build_vae(), nets.build_whisper().encoder
    with torch.device(meta):
        parser, wav2lip, gfpgan, parsenet = BiSeNet(), Wav2Lip(), GFPGANv1Clean(), ParseNet()
    for net in (unet, vae, whisper, parser, wav2lip, gfpgan, parsenet):
        net.eval()

    def g(fn) -> float:
        with torch.inference_mode():
            return count_flops(fn) / 1e9

    def z(*shape: int) -> torch.Tensor:
        return torch.zeros(*shape, device=meta)

    t = torch.zeros(1, dtype=torch.long, device=meta)
    return [
        FlopRow("MuseTalk VAE encode (256x256)", "twice per presenter frame",
                g(lambda: vae.encode(z(1, 3, 256, 256)))),
        FlopRow("MuseTalk face parser BiSeNet (512)", "once per presenter frame",
                g(lambda: parser(z(1, 3, 512, 512), aux=False))),
        FlopRow("MuseTalk UNet (8x32x32, 50 audio tokens)", "every output frame",
                g(lambda: unet(z(1, 8, 32, 32), t, encoder_hidden_states=z(1, 50, 384)))),
        FlopRow("MuseTalk VAE decode (to 256x256)", "every output frame",
                g(lambda: vae.decode(z(1, 4, 32, 32)))),
        FlopRow("whisper-tiny encoder (one 30 s window)", "once per request",
                g(lambda: whisper(z(1, 80, 3000)))),
        FlopRow("Wav2Lip generator (96x96)", "every output frame",
                g(lambda: wav2lip(z(1, 1, 80, 16), z(1, 6, 96, 96)))),
        FlopRow("GFPGANv1Clean (512)", "every output frame", g(lambda: gfpgan(z(1, 3, 512, 512)))),
        FlopRow("ParseNet (512)", "per presenter frame (presenter mask) or every frame",
                g(lambda: parsenet(z(1, 3, 512, 512)))),
    ]


def flop_table(rows: list[FlopRow]) -> list[str]:
    by = {r.part.split(" (")[0]: r.gflops for r in rows}
    out = ["| part | runs | GFLOPs |", "|---|---|---:|"]
    out += [f"| {r.part} | {r.runs} | {r.gflops:.1f} |" for r in rows]
    musetalk = by["MuseTalk UNet"] + by["MuseTalk VAE decode"]
    w2l = by["Wav2Lip generator"] + by["GFPGANv1Clean"]
    out += [f"| **MuseTalk per output frame, presenter cached** | | **{musetalk:.1f}** |",
            f"| **Wav2Lip + GFPGAN per output frame, presenter mask cached** | | **{w2l:.1f}** |",
            f"| **Wav2Lip + GFPGAN + ParseNet every frame (official mask)** | | "
            f"**{w2l + by['ParseNet']:.1f}** |"]
    return out


@dataclass(frozen=True)
class TimeRow:
    path: str
    ms_per_frame: float


def time_rows(weights: Path, device: str, frames: int = 6, batch: int = 4) -> list[TimeRow]:
    """ms per output frame through the engines, presenter work cached (a second video of the
    same three motion frames, each timed once; ``weights`` must hold MuseTalk's files too)."""
    from importlib import resources

    import cv2
    import numpy as np

    from talkinghead.services.common.frames import VideoFrame
    from talkinghead.services.lipsync.musetalk_engine import MuseTalkEngine
    from talkinghead.services.lipsync.wav2lip_engine import Wav2LipEngine
    from talkinghead.services.motion.lite_engine import LiteMotionEngine
    from talkinghead.services.motion.options import MotionOptions
    from talkinghead.services.motion.template import load_template
    from talkinghead.services.restore.gfpgan_engine import GFPGANEngine

    photo = cv2.cvtColor(cv2.imread(str(resources.files("talkinghead.assets.demo") / "face.jpg")),
                         cv2.COLOR_BGR2RGB)
    clip = LiteMotionEngine().animate(photo, load_template("talking").resample(25.0),
                                      MotionOptions(fps=25.0))
    motion = [next(clip) for _ in range(3)]
    video = [VideoFrame(i, motion[i % 3].image,
                        replace(motion[i % 3].face, clip_key="bench", clip_frame=i % 3))
             for i in range(frames)]
    audio = (0.1 * np.sin(np.arange(16000 * 2) / 16000 * 2 * np.pi * 220)).astype(np.float32)

    def timed(fn) -> float:
        fn()  # fills the presenter caches
        start = time.perf_counter()
        fn()
        return 1000 * (time.perf_counter() - start) / frames

    rows = []
    def musetalk_path() -> float:
        engine = MuseTalkEngine(weights, device, batch_size=batch)
        engine.warmup()
        return timed(lambda: list(engine.sync(video, audio, 25.0)))

    rows.append(TimeRow("MuseTalk (UNet + decode + blend; encodes and mask cached)",
                        musetalk_path()))  # its 4 GB freed before Wav2Lip's are loaded
    wav2lip = Wav2LipEngine(weights, device, batch_size=batch)
    gfpgan = GFPGANEngine(weights, device, batch_size=batch)
    wav2lip.warmup()
    gfpgan.warmup()

    def w2l_path():
        synced = list(wav2lip.sync(video, audio, 25.0))
        gfpgan.restore(synced)

    rows.append(TimeRow("Wav2Lip + GFPGAN (presenter paste mask cached)", timed(w2l_path)))
    return rows


def time_table(rows: list[TimeRow]) -> list[str]:
    return ["| path | ms / output frame |", "|---|---:|",
            *(f"| {r.path} | {r.ms_per_frame:.0f} |" for r in rows)]
