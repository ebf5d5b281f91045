"""``expression_multiplier: "auto"``: the speech's liveliness sets how much the face moves.

Speech of known liveliness comes from espeak-ng: the same sentences with a flat pitch range
(SSML ``range="x-low"``), the voice's usual range, and a wide range with loudness that
rises and falls; at several recording levels. Then two different speeches at the same step
must share one cached motion clip.
"""

from __future__ import annotations

import shutil
import subprocess
from pathlib import Path

import numpy as np
import pytest

from talkinghead.orchestrator.jobspec import JobSpec, check_inputs
from talkinghead.orchestrator.motion_cache import MotionClipCache
from talkinghead.orchestrator.pipeline import render_video
from talkinghead.orchestrator.speech_dynamics import HIGH, LOW, NEUTRAL, measure, quantise
from talkinghead.services.common.audio import decode_audio_file

ESPEAK = shutil.which("espeak-ng")
needs_espeak = pytest.mark.skipif(ESPEAK is None, reason="espeak-ng is not installed "
                                  "(apt-get install espeak-ng)")

TEXT_A = ("We are hiring a senior engineer to build reliable systems. Join us today, it will "
          "be great! Apply now and grow with a friendly team.")
TEXT_B = ("Our company is looking for a data analyst in Lisbon. You will work with modern "
          "tools, and your ideas will matter. Send your application this week.")


def ssml(body: str) -> str:
    return f"<speak>{body}</speak>"


def speak(path: Path, markup: str, amplitude: int = 100) -> Path:
    subprocess.run([ESPEAK, "-m", "-a", str(amplitude), "-w", str(path), markup], check=True,
                   capture_output=True)
    return path


LIVELY = [("We are hiring a senior engineer", 'volume="x-loud"'),
          ("to build reliable systems.", 'volume="x-soft"'),
          ("Join us today, it will be great!", 'volume="x-loud" pitch="high"'),
          ("Apply now and grow with a friendly team.", 'volume="soft" pitch="low"')]


def lively_markup() -> str:
    """TEXT_A with a wide pitch range, loudness and pitch changing phrase by phrase."""
    return ssml("".join(f'<prosody range="x-high" {style}>{phrase} </prosody>'
                        for phrase, style in LIVELY))


@pytest.fixture(scope="module")
def speeches(tmp_path_factory) -> dict[str, Path]:
    if ESPEAK is None:
        pytest.skip("espeak-ng is not installed")
    d = tmp_path_factory.mktemp("speech")
    return {
        "flat": speak(d / "flat.wav", ssml(f'<prosody range="x-low">{TEXT_A}</prosody>')),
        "flat_quiet": speak(d / "flat_quiet.wav", ssml(f'<prosody range="x-low">{TEXT_A}</prosody>'),
                            amplitude=30),
        "flat_b": speak(d / "flat_b.wav", ssml(f'<prosody range="x-low">{TEXT_B}</prosody>'),
                        amplitude=160),
        "usual": speak(d / "usual.wav", ssml(TEXT_A)),
        "lively": speak(d / "lively.wav", lively_markup()),
    }


def multiplier(path: Path) -> float:
    return measure(decode_audio_file(path)).multiplier


@needs_espeak
def test_livelier_speech_moves_the_face_more(speeches):
    flat, usual, lively = (measure(decode_audio_file(speeches[k]))
                           for k in ("flat", "usual", "lively"))
    assert flat.pitch_range_st < usual.pitch_range_st < lively.pitch_range_st
    assert lively.loudness_spread_db > usual.loudness_spread_db + 5
    assert LOW <= flat.multiplier < usual.multiplier < lively.multiplier <= HIGH
    assert lively.multiplier - flat.multiplier >= 0.3
    for value in (flat.multiplier, usual.multiplier, lively.multiplier):
        assert value == quantise(value)  # a step of 0.1


@needs_espeak
def test_the_recording_level_does_not_matter(speeches):
    """A global gain changes neither measure: a quiet recording is not a flat speaker."""
    loud, quiet = (measure(decode_audio_file(speeches[k])) for k in ("flat", "flat_quiet"))
    assert abs(loud.loudness_spread_db - quiet.loudness_spread_db) < 0.5
    assert loud.multiplier == quiet.multiplier


def test_silence_and_noise_get_the_neutral_multiplier():
    assert measure(np.zeros(16000 * 2, np.float32)).multiplier == NEUTRAL
    assert measure(np.zeros(100, np.float32)).multiplier == NEUTRAL
    noise = np.random.default_rng(0).normal(0, 0.1, 16000 * 2).astype(np.float32)
    assert measure(noise).multiplier == NEUTRAL  # nothing periodic: no voiced frames


def test_quantise_steps():
    assert [quantise(v) for v in (0.64, 0.65, 0.96, 1.04, 1.05, 1.349)] == [
        0.6, 0.7, 1.0, 1.0, 1.1, 1.3]


def spec_for(audio: Path, out: Path, face: Path, card: dict, expression="auto") -> JobSpec:
    return JobSpec.model_validate({
        "face": str(face), "audio": str(audio), "card": card, "output": str(out),
        "options": {"restore": False, "expression_multiplier": expression},
    })


@needs_espeak
def test_auto_is_resolved_when_the_inputs_are_checked(speeches, demo_face, demo_card, tmp_path):
    checked = check_inputs(spec_for(speeches["lively"], tmp_path / "a.mp4", demo_face, demo_card))
    assert checked.expression_multiplier == multiplier(speeches["lively"])
    assert checked.motion.expression_multiplier == checked.expression_multiplier
    summary = checked.expression_summary()
    assert summary["expression_multiplier_source"] == "auto"
    assert summary["speech_dynamics"]["multiplier"] == checked.expression_multiplier
    fixed = check_inputs(spec_for(speeches["lively"], tmp_path / "b.mp4", demo_face, demo_card,
                                  expression=1.7))
    assert fixed.motion.expression_multiplier == 1.7 and fixed.speech_dynamics is None


@needs_espeak
def test_two_speeches_at_the_same_step_share_the_motion_clip(speeches, lite_stack, demo_face,
                                                            demo_card, tmp_path):
    assert speeches["flat"].read_bytes() != speeches["flat_b"].read_bytes()
    step = multiplier(speeches["flat"])
    assert multiplier(speeches["flat_b"]) == step != multiplier(speeches["lively"])
    cache = MotionClipCache(tmp_path / "cache")
    first = render_video(spec_for(speeches["flat"], tmp_path / "1.mp4", demo_face, demo_card),
                         lite_stack.targets, cache=cache)
    second = render_video(spec_for(speeches["flat_b"], tmp_path / "2.mp4", demo_face, demo_card),
                          lite_stack.targets, cache=cache)
    third = render_video(spec_for(speeches["lively"], tmp_path / "3.mp4", demo_face, demo_card),
                         lite_stack.targets, cache=cache)
    assert (first.cache_hits, second.cache_hits, third.cache_hits) == (
        {"motion": False}, {"motion": True}, {"motion": False})
    for result, speech in ((first, "flat"), (second, "flat_b"), (third, "lively")):
        assert result.motion["expression_multiplier"] == multiplier(speeches[speech])
        assert result.motion["expression_multiplier_source"] == "auto"
    assert first.to_dict()["motion"]["speech_dynamics"]["pitch_range_st"] < 2.0
