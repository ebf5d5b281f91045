"""``talkinghead weights``: which checkpoint files each engine expects, and checking them."""

from __future__ import annotations

import argparse
from pathlib import Path

from talkinghead.services.common.errors import WeightsError


def expected_files() -> list[tuple[str, str, str, str]]:
    """(stage, engine, path inside the weights directory, what it is) for every file."""
    from talkinghead.services.motion import liveportrait_weights as lp

    return [("motion", "liveportrait", path, lp.DESCRIPTIONS[key]) for key, path in lp.FILES.items()]


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
    from talkinghead.services.motion import liveportrait_weights as lp

    if args.action == "verify":
        nets = lp.load_networks(weights_dir)
        print(f"motion   liveportrait  ok  fingerprint {nets.fingerprint}")
        return 0
    for path in lp.write_deterministic_checkpoints(weights_dir, args.salt):
        print(f"wrote {path}")
    return 0
