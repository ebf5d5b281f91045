"""Peak memory of one render against audio length, lite engines (the part ``memory`` of
``python -m bench``): it must stay flat, since the orchestrator streams.

Each length renders in a fresh process (peak RSS only grows) against lite servers started
once; the first render fills the motion-clip cache, so every later one streams the same way.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import tempfile
from pathlib import Path

NOTE = ("The orchestrator streams lipsync → restore → compositor; only the motion clip (one "
        "template's frames) is held whole. Peak RSS of a fresh process running `render_video` "
        "against lite servers (malloc arenas limited as every `talkinghead` command does); the "
        "demo speech repeated to each length.")

# The peak is the process's own VmHWM: Linux carries the spawning process's peak RSS over
# into a child's ru_maxrss (through fork and exec), and the bench process is large.
CHILD = """
import json, resource, sys
from talkinghead.malloc_tuning import limit_malloc_arenas
limit_malloc_arenas()
from talkinghead.orchestrator.jobspec import JobSpec
from talkinghead.orchestrator.pipeline import render_video
from talkinghead.orchestrator.stage_clients import StageTargets
spec, targets = JobSpec.model_validate_json(sys.argv[1]), json.loads(sys.argv[2])
result = render_video(spec, StageTargets(targets[0], targets[1], tuple(targets[2])))
try:
    with open("/proc/self/status") as status:
        peak = next(int(line.split()[1]) for line in status if line.startswith("VmHWM:")) / 1024
except (OSError, StopIteration):
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
print(json.dumps({"peak_rss_mb": peak, "frames": result.frames,
                  "seconds": result.stage_seconds["total"]}))
"""


def measure(lengths: list[float]) -> list[tuple[float, dict]]:
    """(audio seconds, {peak_rss_mb, frames, seconds}) per length, in the order given."""
    from bench.whole_job import demo_spec, our_servers, speech_of_length

    rows = []
    with tempfile.TemporaryDirectory(prefix="bench-memory-") as tmp:
        work = Path(tmp)
        env = {**os.environ, "TALKINGHEAD_CACHE_DIR": str(work / "motion-cache")}
        batch = {"motion": 1, "lipsync": 16, "restore": 1}
        with our_servers("lite", None, "cpu", batch, 1) as t:
            for seconds in lengths:
                audio = speech_of_length(seconds, work / f"speech-{seconds:g}s.wav")
                spec = demo_spec(audio, work / f"out-{seconds:g}s.mp4", restore=True)
                proc = subprocess.run(
                    [sys.executable, "-c", CHILD, spec.model_dump_json(),
                     json.dumps([t.motion, t.lipsync, list(t.restore)])],
                    capture_output=True, text=True, env=env)
                if proc.returncode:
                    raise RuntimeError(f"render at {seconds:g} s failed: {proc.stderr[-2000:]}")
                rows.append((seconds, json.loads(proc.stdout.strip().splitlines()[-1])))
                print(f"memory at {seconds:g} s: {rows[-1][1]}", flush=True)
    return rows


def table(rows: list[tuple[float, dict]]) -> list[str]:
    lines = ["| audio | frames | wall s | peak RSS of the orchestrator process |",
             "|---:|---:|---:|---:|"]
    lines += [f"| {s:g} s | {f['frames']} | {f['seconds']:.1f} | {f['peak_rss_mb']:.0f} MB |"
              for s, f in rows]
    return lines
