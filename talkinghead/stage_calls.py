"""``talkinghead call STAGE``: exercise one model server directly over gRPC.

For engineers testing a stage in isolation: files in, files out, no orchestrator.
  call motion  --target H:P --face F [--template talking] --out clip.mp4|DIR
  call lipsync --target H:P (--video V | --image I) --audio A --out synced.mp4
  call restore --target H:P (--video V | --image I) --out restored.mp4|.png
"""

from __future__ import annotations

import argparse
from collections.abc import Iterator
from pathlib import Path

from talkinghead.motion_flags import add_motion_flags, motion_options
from talkinghead.services.common.errors import InputError
from talkinghead.services.common.frames import VideoFrame
from talkinghead.services.common.video_files import read_image, read_video, write_frames
from talkinghead.services.stages import STAGES


def add_call_parser(sub, handler) -> None:
    p = sub.add_parser("call", help="call one model server directly over gRPC")
    stages = p.add_subparsers(dest="stage", required=True)
    for stage in STAGES.values():
        s = stages.add_parser(stage.name)
        s.add_argument("--target", default=stage.default_target, help="host:port")
        s.add_argument("--out", required=True, help=".mp4 file, .png (one frame) or a folder")
        s.add_argument("--timeout", type=float, default=600.0, help="call deadline, seconds")
        s.set_defaults(func=handler)
    m = stages.choices["motion"]
    m.add_argument("--face", required=True)
    m.add_argument("--template", default="talking", help="name on the server or a local .npz")
    add_motion_flags(m)
    for stage in ("lipsync", "restore"):
        s = stages.choices[stage]
        src = s.add_mutually_exclusive_group(required=True)
        src.add_argument("--video", help="input video file")
        src.add_argument("--image", help="a single still image")
    ls = stages.choices["lipsync"]
    ls.add_argument("--audio", required=True)
    ls.add_argument("--fps", type=float, default=25.0, help="frame rate for --image input")
    ls.add_argument("--pass-through-faceless", action="store_true")
    stages.choices["restore"].add_argument("--weight", type=float, default=0.5)


def run(args: argparse.Namespace) -> int:
    from talkinghead.orchestrator.stage_clients import (
        LipSyncClient,
        MotionClient,
        RestoreClient,
        open_channel,
        wait_for_serving,
    )

    channel = open_channel(args.target)
    wait_for_serving(channel, args.stage, args.target, timeout=min(60.0, args.timeout))
    channel.close()
    out = Path(args.out)

    if args.stage == "motion":
        template: str | bytes = args.template
        if args.template.endswith(".npz") and Path(args.template).is_file():
            template = Path(args.template).read_bytes()
        face = Path(args.face)
        if not face.is_file():
            raise InputError(f"face photo {str(face)!r} does not exist")
        client = MotionClient(args.target, "call")
        frames, header = client.animate(face.read_bytes(), template,
                                        motion_options(args), timeout=args.timeout)
        n = write_frames(frames, out, header.fps)
        report = header.report
        print(f"motion multiplier (expression-friendly) {report.motion_multiplier or 1.0:.6g}, "
              f"lip normalised: {'yes' if report.lip_normalized else 'no'}")
        for note in report.notes:
            print(f"note: {note}")
    elif args.stage == "lipsync":
        audio = Path(args.audio)
        if not audio.is_file():
            raise InputError(f"audio {str(audio)!r} does not exist")
        if args.video:
            fps, frames = read_video(Path(args.video))
        else:
            from talkinghead.orchestrator.schedule import output_frame_count
            from talkinghead.services.common.audio import SAMPLE_RATE, decode_audio_file

            fps, image = args.fps, read_image(Path(args.image))
            count = output_frame_count(len(decode_audio_file(audio)) / SAMPLE_RATE, fps)
            frames = (VideoFrame(i, image) for i in range(count))
        client = LipSyncClient(args.target, "call")
        synced = client.sync(frames, audio.read_bytes(), fps,
                             pass_through_faceless=args.pass_through_faceless,
                             timeout=args.timeout)
        n = write_frames(synced, out, fps, audio=audio)
    else:
        if args.video:
            fps, frames = read_video(Path(args.video))
        else:
            fps, frames = 25.0, iter([VideoFrame(0, read_image(Path(args.image)))])
        client = RestoreClient(args.target, "call")

        def restored() -> Iterator[VideoFrame]:
            from talkinghead.services.common.chunking import chunked

            for group in chunked(frames, 16):
                yield from client.restore(group, args.weight, timeout=args.timeout)

        n = write_frames(restored(), out, fps)
    print(f"wrote {n} frames to {out}")
    return 0
