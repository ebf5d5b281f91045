"""MuseTalk's audio path against the reference pack: whisper-tiny features and encoder states
(transformers' classes, deterministic weights in the official layout), and the per-frame
windows at 25, 30 and 29.97 fps; at 29.97 where our real rate differs from upstream's
truncated one, and why."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch

from tests.musetalk_pack import assert_float, assert_sampled, requires_extra
from tests.reference_pack import fixture, salt_of

pytestmark = [pytest.mark.reference, requires_extra]

FIXTURE = "musetalk/audio.npz"
RATES = {"fps25": 25.0, "fps30": 30.0}


@pytest.fixture(scope="module")
def data():
    return fixture(FIXTURE)


@pytest.fixture(scope="module")
def whisper(data, tmp_path_factory):
    """(encoder, feature extractor) loaded from deterministic files in the official layout."""
    from talkinghead.services.lipsync import musetalk_weights as mw

    root = tmp_path_factory.mktemp("musetalk-whisper")
    mw.write_deterministic_checkpoints(root, salt_of(data), parts=("whisper",))
    encoder, extractor, _ = mw.load_whisper(root)
    return encoder, extractor


@pytest.fixture(scope="module")
def states(data, whisper):
    from talkinghead.services.lipsync import musetalk_audio as ma

    encoder, extractor = whisper
    return ma.encoder_states(encoder, ma.input_features(extractor, data["wav_float32_loaded"]))


def test_waveform_is_pcm16_over_32768(data):
    from talkinghead.services.common.audio import pcm_s16le_to_float

    ours = pcm_s16le_to_float(data["wav_int16"].astype("<i2").tobytes())
    np.testing.assert_array_equal(ours, data["wav_float32_loaded"])


def test_input_features(data, whisper):
    from talkinghead.services.lipsync import musetalk_audio as ma

    features = ma.input_features(whisper[1], data["wav_float32_loaded"])
    assert len(features) == int(data["num_segments"])
    assert_float(features[0], data["input_features"], "input_features")


def test_encoder_hidden_states(data, states):
    assert_sampled(states.numpy(), data, "encoder_hidden_states_stacked")
    for layer in range(5):
        assert_sampled(states[:, :, layer].numpy(), data, f"encoder_hidden_state_{layer}")
    assert_float(states[:, :4].numpy(), data["encoder_hidden_states_stacked_first_frames"],
                 "first frames")


@pytest.mark.parametrize("tag", list(RATES))
def test_windows_at_integer_rates(data, states, tag):
    """At integer rates ours are upstream's windows exactly: count, indices, padding, values."""
    from talkinghead.services.lipsync import musetalk_audio as ma

    n = len(data["wav_float32_loaded"])
    windows = ma.AudioWindows.build(states, n, RATES[tag])
    assert windows.frames == int(data[f"num_frames_{tag}"])
    starts = [windows.start(i) for i in range(windows.frames)]
    np.testing.assert_array_equal(starts, data[f"audio_index_{tag}"])
    pad = math.ceil(ma.frame_step(RATES[tag]))
    assert pad * ma.PAD_LEFT == int(data[f"padding_left_{tag}"])
    assert pad * 3 * ma.PAD_RIGHT == int(data[f"padding_right_{tag}"])
    assert windows.padded.shape[0] == (int(data[f"actual_length_{tag}"]) + pad * ma.PAD_LEFT
                                       + pad * 3 * ma.PAD_RIGHT)
    cut = windows.window(list(range(windows.frames))).numpy()
    assert_sampled(cut, data, f"windows_{tag}")
    assert_float(cut[:2], data[f"windows_{tag}_first2"], "first two windows")
    assert_float(cut[-2:], data[f"windows_{tag}_last2"], "last two windows")


def test_windows_at_29_97_upstream_truncated(data, states):
    """``integer_fps=True`` reproduces upstream at 29.97 (it cuts for 29 fps)."""
    from talkinghead.services.lipsync import musetalk_audio as ma

    fps = float(data["fps_requested_fps29_97"])
    windows = ma.AudioWindows.build(states, len(data["wav_float32_loaded"]), fps, integer_fps=True)
    assert windows.fps == int(data["fps_used_fps29_97"]) == 29
    assert windows.frames == int(data["num_frames_fps29_97"])
    np.testing.assert_array_equal([windows.start(i) for i in range(windows.frames)],
                                  data["audio_index_fps29_97"])
    assert_sampled(windows.window(list(range(windows.frames))).numpy(), data, "windows_fps29_97")


def test_windows_at_29_97_real_rate(data, states):
    """Ours at the real 29.97: one window per frame of the 29.97 fps video (89 for the
    published 3 s, where upstream makes 87), each starting at the step of its frame's own
    time, so frame and sound stay within one whisper step (20 ms) for the whole track;
    upstream's windows, spaced for 29 fps, run ahead of their frames by 3.3 % of the elapsed
    time (96 ms by 2.9 s, 1.9 s after a minute). Where the two starts coincide, the windows
    are the same values."""
    from talkinghead.services.lipsync import musetalk_audio as ma

    n = len(data["wav_float32_loaded"])
    fps = float(data["fps_requested_fps29_97"])
    ours = ma.AudioWindows.build(states, n, fps)
    upstream = ma.AudioWindows.build(states, n, fps, integer_fps=True)
    assert ours.frames == math.floor(n / ma.SAMPLE_RATE * fps)
    assert ours.frames > upstream.frames == int(data["num_frames_fps29_97"])
    assert ours.padded.shape == upstream.padded.shape  # ceil(50/29.97) == ceil(50/29)

    def lag(index: int, frame: int) -> float:  # window start minus the frame's time, seconds
        return index / ma.AUDIO_FPS - frame / fps

    ours_lag = [lag(ours.start(i), i) for i in range(ours.frames)]
    up_lag = [lag(int(s), i) for i, s in enumerate(data["audio_index_fps29_97"])]
    assert max(ours_lag) - min(ours_lag) < 1 / ma.AUDIO_FPS
    last = len(up_lag) - 1
    drift = up_lag[-1] - up_lag[0]
    # upstream's last window starts (1/29 - 1/29.97) per frame later than its frame's time
    # (96 ms at frame 86 of the published 3 s), up to one step of flooring
    assert abs(drift - last * (1 / 29 - 1 / fps)) < 1 / ma.AUDIO_FPS
    assert drift > max(ours_lag) - min(ours_lag)
    # per minute: 60 s of 29.97 fps frames read audio 29.97 / 29 as fast
    assert 60 * (fps / 29 - 1) == pytest.approx(2.0, abs=0.1)
    same = [i for i in range(upstream.frames) if ours.start(i) == upstream.start(i)]
    assert len(same) >= 3
    np.testing.assert_array_equal(ours.window(same).numpy(), upstream.window(same).numpy())
    differ = [i for i in range(upstream.frames) if ours.start(i) != upstream.start(i)]
    assert differ and min(differ) > 0  # the first frames agree, the difference accumulates


def test_positional_table(data):
    from talkinghead.services.lipsync.musetalk_audio import positional_table

    unet = fixture("musetalk/unet.npz")
    table = positional_table()
    assert_float(table.numpy(), unet["pe_table_first50"], "pe table")
    after = torch.from_numpy(unet["audio_window_raw"]) + table
    assert_float(after.numpy(), unet["audio_after_pe"], "audio after pe")
