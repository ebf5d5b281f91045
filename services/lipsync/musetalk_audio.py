"""MuseTalk's audio conditioning: whisper-tiny encoder states cut into one window per frame.

Whisper (Radford et al., 2022, "Robust Speech Recognition via Large-Scale Weak Supervision")
turns each 30 s of 16 kHz audio into 1500 steps (50 per second); MuseTalk 1.5 (Zhang et al.,
2024, "MuseTalk: Real-Time High Quality Lip Synchronization with Latent Space Inpainting")
keeps all five hidden states of the tiny encoder per step (the input to each of its four
layers and the final layer-normed output) and gives video frame ``i`` the ten steps from
``floor(i * 50 / fps)`` of a zero-padded copy (2·ceil(50/fps) steps in front: at 25 fps from
80 ms before the frame to 120 ms after), flattened to 50 tokens of width 384.

The encoder runs once per request over the whole track; each frame's window is then a slice.

**Frame rates.** Upstream truncates the frame rate to an integer before cutting windows
(``int(fps)``: 29.97 becomes 29, so a 29.97 fps video gets windows spaced for 29 fps and the
mouth runs ahead of the sound by 3 %, about 1.9 s after a minute). We use the real rate;
``integer_fps=True`` reproduces upstream for comparison (tests/test_reference_musetalk_audio.py
shows where the two differ).
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np
import torch

SAMPLE_RATE = 16000
AUDIO_FPS = 50              # whisper encoder steps per second
SEGMENT_SAMPLES = 30 * SAMPLE_RATE
ENCODER_STEPS = 1500        # per 30 s segment
WINDOW_STEPS = 10           # steps per video frame: 2 * (left 2 + right 2 + 1)
PAD_LEFT, PAD_RIGHT = 2, 2  # upstream's audio_padding_length_left/right
TOKENS = 50                 # WINDOW_STEPS * 5 hidden states


def input_features(feature_extractor, audio: np.ndarray) -> list[np.ndarray]:
    """Log-mel features [1, 80, 3000] per 30 s segment (each padded to 30 s on its own, so its
    log floor is taken over that segment), by transformers' WhisperFeatureExtractor."""
    audio = np.asarray(audio, dtype=np.float32)
    segments = [audio[i:i + SEGMENT_SAMPLES] for i in range(0, max(len(audio), 1), SEGMENT_SAMPLES)]
    return [feature_extractor(s, sampling_rate=SAMPLE_RATE, return_tensors="np").input_features
            for s in segments]


@torch.inference_mode()
def encoder_states(encoder: torch.nn.Module, features: list[np.ndarray], device: str = "cpu",
                   dtype: torch.dtype = torch.float32) -> torch.Tensor:
    """All five hidden states of every segment, [1, 1500·S, 5, 384] (float32, on ``device``)."""
    stacked = []
    for f in features:
        x = torch.from_numpy(np.ascontiguousarray(f)).to(device=device, dtype=dtype)
        states = encoder(x, output_hidden_states=True).hidden_states
        stacked.append(torch.stack(list(states), dim=2).float())
    return torch.cat(stacked, dim=1)


def frame_step(fps: float) -> float:
    """Whisper steps per video frame."""
    return AUDIO_FPS / fps


def frame_count(n_samples: int, fps: float) -> int:
    """Frames the audio covers: floor(seconds · fps) (upstream's count)."""
    return math.floor(n_samples / SAMPLE_RATE * fps)


def window_start(frame: int, fps: float) -> int:
    """Index of frame ``frame``'s first step in the padded state array (upstream's formula,
    the multiplier taken first, so that integer rates give exactly its indices)."""
    return math.floor(frame * frame_step(fps))


@dataclass(frozen=True)
class AudioWindows:
    """The padded encoder states of one request, cut into per-frame windows on demand."""

    padded: torch.Tensor  # [T_padded, 5, 384]
    fps: float            # the rate windows are spaced for (the real one unless integer_fps)
    frames: int           # frames the audio covers

    @classmethod
    def build(cls, states: torch.Tensor, n_samples: int, fps: float,
              integer_fps: bool = False) -> AudioWindows:
        """``states`` [1, T, 5, 384] from :func:`encoder_states`; ``n_samples`` the waveform's
        length. ``integer_fps`` truncates the rate as upstream does."""
        if not fps > 0:
            raise ValueError(f"fps must be positive, got {fps}")
        rate = float(int(fps)) if integer_fps else float(fps)
        if rate <= 0:
            raise ValueError(f"fps {fps} truncates to 0")
        kept = states[0, :math.floor(n_samples / SAMPLE_RATE * AUDIO_FPS)]
        pad = math.ceil(frame_step(rate))
        zeros = kept.new_zeros((pad * PAD_LEFT, *kept.shape[1:]))
        tail = kept.new_zeros((pad * 3 * PAD_RIGHT, *kept.shape[1:]))
        return cls(torch.cat([zeros, kept, tail]), rate, frame_count(n_samples, rate))

    def start(self, frame: int) -> int:
        """First step of ``frame``'s window; frames past the audio reuse the last window."""
        last = max(self.frames - 1, 0)
        return window_start(min(max(frame, 0), last), self.fps)

    def window(self, frames: list[int]) -> torch.Tensor:
        """[N, 50, 384]: row 5·step + layer, as upstream flattens its windows."""
        cut = [self.padded[s:s + WINDOW_STEPS] for s in map(self.start, frames)]
        for c in cut:
            if c.shape[0] != WINDOW_STEPS:  # cannot happen with the 6·step tail padding
                raise ValueError("audio window past the padded states")
        return torch.stack(cut).reshape(len(frames), TOKENS, -1)


def positional_table(tokens: int = TOKENS, width: int = 384) -> torch.Tensor:
    """MuseTalk's fixed sinusoidal table added to the audio tokens (Vaswani et al., 2017):
    row p, column 2k is sin(p · exp(−2k · ln(10000) / width)), column 2k+1 the cosine."""
    position = torch.arange(tokens, dtype=torch.float32)[:, None]
    rate = torch.exp(torch.arange(0, width, 2, dtype=torch.float32) * (-math.log(10000.0) / width))
    table = torch.zeros(tokens, width)
    table[:, 0::2] = torch.sin(position * rate)
    table[:, 1::2] = torch.cos(position * rate)
    return table
