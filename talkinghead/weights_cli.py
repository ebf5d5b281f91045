"""``talkinghead weights``: which checkpoint files each engine expects, and checking them."""

from __future__ import annotations

import argparse
from pathlib import Path

from talkinghead.services.common.errors import WeightsError


def expected_files() -> list[tuple[str, str, str, str]]:
    """(stage, engine, path inside the weights directory, what it is) for every file."""
    from talkinghead.services.lipsync import wav2lip_weights as ww
    from talkinghead.services.motion import liveportrait_weights as lp
    from talkinghead.services.restore import gfpgan_weights as gw

    return (
        [("motion", "liveportrait", p, lp.DESCRIPTIONS[k]) for k, p in lp.FILES.items()]
        + [("lipsync", "wav2lip", p, ww.DESCRIPTIONS[k]) for k, p in ww.FILES.items()]
        + [("restore", "gfpgan", p, gw.DESCRIPTIONS[k]) for k, p in gw.FILES.items()]
    )


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

    failed = False
    for stage, engine, files, check in (("motion", "liveportrait", lp.FILES, motion),
                                        ("lipsync", "wav2lip", ww.FILES, lipsync),
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
        for stage, engine, path, what in expected_files():
            state = "-"
            if weights_dir is not None:
                state = "present" if (weights_dir / path).is_file() else "MISSING"
            print(f"{stage:<8} {engine:<13} {state:<8} {path}  ({what})")
        return 0
    if weights_dir is None:
        raise WeightsError("give --weights DIR (or set TALKINGHEAD_WEIGHTS_DIR)")
    from talkinghead.services.lipsync import wav2lip_weights as ww
    from talkinghead.services.motion import liveportrait_weights as lp

    if args.action == "verify":
        return verify(weights_dir)
    written = lp.write_deterministic_checkpoints(weights_dir, args.salt)
    written += ww.write_deterministic_checkpoints(weights_dir, args.salt)
    from talkinghead.services.restore import gfpgan_weights as gw

    written += gw.write_deterministic_checkpoints(weights_dir, args.salt)
    for path in written:
        print(f"wrote {path}")
    return 0
