"""Peak memory of one render against audio length (lite engines): it must stay flat.

Each length runs in a fresh process (peak RSS only grows), against lite servers started
once; the motion clip is cached after the first run, so every run streams the same way.

    python -m bench.memory [--seconds 30,120] [--no-write]
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import tempfile
from importlib import resources
from pathlib import Path

from bench.common import append_markdown
from talkinghead.local_stack import LocalStack
from talkinghead.services.common.audio import ffmpeg_exe

CHILD = """
import json, resource, sys
from talkinghead.malloc_tuning import limit_malloc_arenas
limit_malloc_arenas()
from talkinghead.orchestrator.jobspec import JobSpec
from talkinghead.orchestrator.pipeline import render_video
from talkinghead.orchestrator.stage_clients import StageTargets
spec, targets = json.loads(sys.argv[1]), json.loads(sys.argv[2])
result = render_video(JobSpec.model_validate(spec), StageTargets(targets[0], targets[1], tuple(targets[2])))
print(json.dumps({"peak_rss_mb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024,
                  "frames": result.frames, "seconds": result.stage_seconds["total"]}))
"""


def speech_of_length(seconds: float, out: Path) -> Path:
    demo = resources.files("talkinghead.assets.demo") / "speech.wav"
    subprocess.run([ffmpeg_exe(), "-nostdin", "-loglevel", "error", "-y", "-stream_loop", "-1",
                    "-i", str(demo), "-t", f"{seconds}", str(out)], check=True)
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seconds", default="30,120")
    parser.add_argument("--no-write", action="store_true")
    args = parser.parse_args()
    demo = resources.files("talkinghead.assets.demo")
    card = json.loads((demo / "card.json").read_text())
    rows = []
    with tempfile.TemporaryDirectory() as tmp, LocalStack(Path(tmp) / "logs") as stack:
        t = stack.targets
        for seconds in (float(s) for s in args.seconds.split(",")):
            audio = speech_of_length(seconds, Path(tmp) / f"speech_{seconds:g}.wav")
            spec = {"face": str(demo / "face.jpg"), "audio": str(audio), "card": card,
                    "output": str(Path(tmp) / f"out_{seconds:g}.mp4")}
            proc = subprocess.run(
                [sys.executable, "-c", CHILD, json.dumps(spec),
                 json.dumps([t.motion, t.lipsync, list(t.restore)])],
                capture_output=True, text=True, check=True)
            figures = json.loads(proc.stdout.strip().splitlines()[-1])
            rows.append((seconds, figures))
            print(seconds, figures, flush=True)
    table = ["| audio | frames | wall s | peak RSS of the orchestrator process |",
             "|---:|---:|---:|---:|"]
    table += [f"| {s:g} s | {f['frames']} | {f['seconds']:.1f} | {f['peak_rss_mb']:.0f} MB |"
              for s, f in rows]
    print("\n".join(table))
    if not args.no_write:
        append_markdown("bench.memory", "Peak memory against audio length (lite engines)", table,
                        "cpu", ["The orchestrator streams lipsync → restore → compositor; only "
                                "the motion clip (one template's frames) is held whole."])


if __name__ == "__main__":
    main()
