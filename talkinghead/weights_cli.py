"""``talkinghead weights``: which checkpoint files each engine expects, and checking them."""

from __future__ import annotations

import argparse
from dataclasses import dataclass
from pathlib import Path

from talkinghead.services.common.errors import WeightsError
from talkinghead.weights_licences import BY_FILE, Licence


@dataclass(frozen=True)
class WeightFile:
    """One file of the catalogue: where it goes, what it is, and its licence as published."""

    stage: str
    engine: str
    path: str  # inside the weights directory (the official layout)
    what: str
    licence: Licence


def expected_files() -> list[WeightFile]:
    """Every file a neural engine reads, with its licence (the optional official crop's
    ONNX models included)."""
    from talkinghead.services.lipsync import musetalk_weights as mw
    from talkinghead.services.lipsync import wav2lip_weights as ww
    from talkinghead.services.motion import liveportrait_weights as lp
    from talkinghead.services.motion import onnx_face
    from talkinghead.services.restore import gfpgan_weights as gw

    crop = {
        onnx_face.DETECTOR_FILE: "InsightFace SCRFD detector, for the official crop (optional)",
        onnx_face.LANDMARK_106_FILE: "InsightFace 106-point landmarks, for the official crop "
                                     "(optional)",
        onnx_face.LANDMARK_203_FILE: "LivePortrait 203-point landmarks, for the official crop "
                                     "(optional)",
    }
    rows = (
        [("motion", "liveportrait", p, lp.DESCRIPTIONS[k]) for k, p in lp.FILES.items()]
        + [("motion", "liveportrait", p, what) for p, what in crop.items()]
        + [("lipsync", "wav2lip", p, ww.DESCRIPTIONS[k]) for k, p in ww.FILES.items()]
        + [("lipsync", "musetalk", p, mw.DESCRIPTIONS[k]) for k, p in mw.FILES.items()]
        + [("restore", "gfpgan", p, gw.DESCRIPTIONS[k]) for k, p in gw.FILES.items()]
    )
    return [WeightFile(stage, engine, path, what, BY_FILE[path])
            for stage, engine, path, what in rows]


def verify(weights_dir: Path) -> int:
    """Load every engine whose files are there; 1 if any present engine fails to load."""
    import sys

    from talkinghead.services.lipsync import wav2lip_weights as ww
    from talkinghead.services.motion import liveportrait_weights as lp

    def motion() -> str:
        return f"fingerprint {lp.load_networks(weights_dir).fingerprint}"

    def lipsync() -> str:
        _, path = ww.load_generator(weights_dir)
        return f"{path.name}, S3FD {'ok' if ww.load_detector(weights_dir) else 'absent'}"

    from talkinghead.services.restore import gfpgan_weights as gw

    def restore() -> str:
        _, path = gw.load_restorer(weights_dir)
        detector, parser = gw.load_detector(weights_dir), gw.load_parser(weights_dir)
        return (f"{path.name}, RetinaFace {'ok' if detector else 'absent'}, "
                f"ParseNet {'ok' if parser else 'absent'}")

    from talkinghead.services.lipsync import musetalk_weights as mw

    def musetalk() -> str:
        from talkinghead.services.lipsync.musetalk_engine import missing_extra

        if missing_extra():
            raise WeightsError("MuseTalk needs pip install 'talkinghead[musetalk]' "
                               f"(missing: {', '.join(missing_extra())})")
        nets = mw.load_networks(weights_dir)
        return ", ".join(p.name for p in nets.paths if p.suffix != ".json")

    failed = False
    for stage, engine, files, check in (("motion", "liveportrait", lp.FILES, motion),
                                        ("lipsync", "wav2lip", ww.FILES, lipsync),
                                        ("lipsync", "musetalk", mw.FILES, musetalk),
                                        ("restore", "gfpgan", gw.FILES, restore)):
        if not any((weights_dir / p).is_file() for p in files.values()):
            print(f"{stage:<8} {engine:<13} not installed")
            continue
        try:
            print(f"{stage:<8} {engine:<13} ok  {check()}")
        except WeightsError as exc:
            failed = True
            print(f"{stage:<8} {engine:<13} FAILED", flush=True)
            print(f"error: {exc}", file=sys.stderr)
    return 1 if failed else 0


def run(args: argparse.Namespace, weights_dir: Path | None) -> int:
    if args.action == "list":
        print(f"weights directory: {weights_dir or '(none: --weights or TALKINGHEAD_WEIGHTS_DIR)'}")
        for f in expected_files():
            state = "-"
            if weights_dir is not None:
                state = "present" if (weights_dir / f.path).is_file() else "MISSING"
            print(f"{f.stage:<8} {f.engine:<13} {state:<8} {f.path}  ({f.what})")
            print(f"{'':<32}licence: {f.licence.text()}")
        print("licences as their publishers state them; README 'Model licences' quotes them")
        return 0
    if weights_dir is None:
        raise WeightsError("give --weights DIR (or set TALKINGHEAD_WEIGHTS_DIR)")
    from talkinghead.services.lipsync import wav2lip_weights as ww
    from talkinghead.services.motion import liveportrait_weights as lp

    if args.action == "verify":
        return verify(weights_dir)
    from talkinghead.services.lipsync import musetalk_weights as mw
    from talkinghead.services.restore import gfpgan_weights as gw

    writers = {"liveportrait": lp.write_deterministic_checkpoints,
               "wav2lip": ww.write_deterministic_checkpoints,
               "gfpgan": gw.write_deterministic_checkpoints,
               "musetalk": mw.write_deterministic_checkpoints}
    engines = [e.strip() for e in getattr(args, "engines", "liveportrait,wav2lip,gfpgan").split(",")
               if e.strip()]
    unknown = [e for e in engines if e not in writers]
    if unknown:
        raise ValueError(f"unknown engine(s) {', '.join(unknown)} ({', '.join(writers)})")
    written = []
    for engine in engines:
        written += writers[engine](weights_dir, args.salt)
    for path in written:
        print(f"wrote {path}")
    return 0
