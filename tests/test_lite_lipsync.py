"""The lite lip-sync engine: speech envelope, mouth opening, faceless frames."""

from __future__ import annotations

import wave
from importlib import resources

import numpy as np
import pytest

from talkinghead.services.common.errors import InputError, NoFaceError
from talkinghead.services.common.frames import VideoFrame
from talkinghead.services.lipsync.lite_engine import LiteLipSyncEngine, mouth_track

FPS = 25.0
SR = 16_000


@pytest.fixture(scope="module")
def engine() -> LiteLipSyncEngine:
    engine = LiteLipSyncEngine()
    engine.warmup()
    return engine


def speech_like(seconds: float, seed: int = 0) -> np.ndarray:
    """Voiced buzz (120 Hz harmonics) with syllable-rate loudness and a little noise."""
    t = np.arange(int(seconds * SR)) / SR
    buzz = sum(np.sin(2 * np.pi * 120 * k * t) / k for k in range(1, 20))
    syllables = 0.5 + 0.5 * np.sin(2 * np.pi * 4.0 * t - np.pi / 2)
    noise = np.random.default_rng(seed).normal(0, 0.02, t.size)
    return (0.3 * buzz * syllables + noise).astype(np.float32)


def silence_then_speech() -> np.ndarray:
    """1 s of silence, then 1 s of speech-like sound."""
    return np.concatenate([np.zeros(SR, np.float32), speech_like(1.0)])


def frames_of(photo, face, n: int) -> list[VideoFrame]:
    return [VideoFrame(index=i, image=photo, face=face) for i in range(n)]


def lower_face_box(face) -> tuple[slice, slice]:
    """A generous box around the mouth, jaw and neck fade."""
    x0, y0, x1, y1 = face.box
    w = x1 - x0
    return slice(int(y0 + 0.45 * w), int(y1 + 1.2 * w)), slice(int(x0 - 0.3 * w), int(x1 + 0.3 * w))


def test_engine_identity():
    engine = LiteLipSyncEngine()
    assert (engine.name, engine.device, engine.fingerprint) == ("lite", "cpu", "lite-lipsync-1")


def test_track_is_loudness_normalised_and_gated():
    audio = silence_then_speech()
    loud = mouth_track(audio, FPS)
    quiet = mouth_track(audio * 0.05, FPS)
    assert len(loud.openness) == 50
    assert np.all(loud.openness[:24] == 0.0)  # digital silence never opens the mouth
    assert loud.openness[25:].max() > 0.8
    assert np.allclose(loud.openness, quiet.openness, atol=0.05)
    assert loud.at(10_000) == (0.0, 0.5)  # after the audio: closed


def test_mouth_shape_follows_spectral_brightness():
    t = np.arange(SR) / SR
    dark = sum(np.sin(2 * np.pi * 150 * k * t) / k**2 for k in range(1, 6))  # "oo"-like
    bright = sum(np.sin(2 * np.pi * 150 * k * t) for k in range(10, 20))  # "ee"-like
    track = mouth_track(np.concatenate([dark, bright]).astype(np.float32) * 0.2, FPS)
    assert track.wideness[5:20].mean() < 0.3
    assert track.wideness[30:45].mean() > 0.7


def test_loud_frames_open_the_mouth_and_silent_ones_do_not(engine, photo, face):
    out = list(engine.sync(frames_of(photo, face, 50), silence_then_speech(), FPS))
    assert [f.index for f in out] == list(range(50))
    rows, cols = lower_face_box(face)
    change = [np.abs(f.image.astype(int) - photo)[rows, cols].mean() for f in out]
    assert all(c == 0.0 for c in change[:20])  # silence: frames unchanged
    track = mouth_track(silence_then_speech(), FPS)
    loudest = 25 + int(np.argmax(track.openness[25:]))
    assert change[loudest] > 3.0
    assert change[loudest] > 20 * max(*change[:20], 0.1)
    # A dark mouth interior appears between the lips.
    mouth = face.landmarks[3:5].mean(axis=0).astype(int)
    rows, cols = slice(mouth[1], mouth[1] + 12), slice(mouth[0] - 6, mouth[0] + 6)
    assert out[loudest].image[rows, cols].mean(axis=2).min() < photo[rows, cols].mean() - 60


def test_only_the_lower_face_changes(engine, photo, face):
    out = list(engine.sync(frames_of(photo, face, 50), silence_then_speech(), FPS))
    rows, cols = lower_face_box(face)
    outside = np.ones(photo.shape[:2], bool)
    outside[rows, cols] = False
    for f in out:
        assert np.array_equal(f.image[outside], photo[outside])
    # Above the mouth (eyes, nose) nothing moves either.
    eyes_to_nose = slice(0, int(face.landmarks[2, 1]))
    assert all(np.array_equal(f.image[eyes_to_nose], photo[eyes_to_nose]) for f in out)


def test_frames_after_the_audio_stay_closed(engine, photo, face):
    audio = speech_like(1.5)
    loudest = int(np.argmax(mouth_track(audio, FPS).openness))
    frames = [VideoFrame(index=i, image=photo, face=face) for i in (loudest, 60, 100)]
    out = list(engine.sync(frames, audio, FPS))
    assert not np.array_equal(out[0].image, photo)  # inside the speech
    assert np.array_equal(out[1].image, photo) and np.array_equal(out[2].image, photo)


def test_face_is_found_when_frames_carry_none(engine, photo):
    audio = speech_like(2.0)
    loudest = int(np.argmax(mouth_track(audio, FPS).openness))
    out = list(engine.sync([VideoFrame(index=loudest, image=photo)], audio, FPS))
    assert out[0].face is not None
    assert not np.array_equal(out[0].image, photo)


def test_faceless_frames_raise_or_pass_through(engine, photo, face):
    blank = np.full_like(photo, 90)
    frames = [*frames_of(photo, face, 3), VideoFrame(index=3, image=blank)]
    with pytest.raises(NoFaceError) as err:
        list(engine.sync(frames, speech_like(1.0), FPS))
    assert err.value.frame_indices == [3] and "3" in str(err.value)

    yielded = []
    with pytest.raises(NoFaceError):
        for f in engine.sync(frames, speech_like(1.0), FPS):
            yielded.append(f.index)
    assert yielded == [0, 1, 2]  # a streaming caller got the good frames first

    out = list(engine.sync(frames, speech_like(1.0), FPS, pass_through_faceless=True))
    assert [f.index for f in out] == [0, 1, 2, 3]
    assert out[3].image is blank and out[3].face is None


def test_rejects_unusable_audio_before_any_frame(engine, photo, face):
    frames = frames_of(photo, face, 1)
    with pytest.raises(InputError):
        engine.sync(frames, np.zeros(0, np.float32), FPS)  # no iteration needed
    with pytest.raises(InputError):
        engine.sync(frames, np.full(100, np.nan, np.float32), FPS)
    with pytest.raises(InputError):
        engine.sync(frames, speech_like(0.5), 0.0)


def test_demo_speech_opens_and_closes(engine, photo, face):
    path = resources.files("talkinghead.assets.demo").joinpath("speech.wav")
    with resources.as_file(path) as p, wave.open(str(p)) as w:
        audio = np.frombuffer(w.readframes(w.getnframes()), np.int16).astype(np.float32) / 32768
    track = mouth_track(audio, FPS)
    assert len(track.openness) == 270
    assert track.openness[26] < 0.02 and track.openness[138] < 0.02  # the two pauses
    assert (track.openness > 0.5).mean() > 0.2  # open often while talking
    out = list(engine.sync(frames_of(photo, face, 270), audio, FPS))
    assert np.array_equal(out[26].image, photo)
    assert not np.array_equal(out[31].image, photo)
