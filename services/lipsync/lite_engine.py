"""Lite lip-sync engine: the speech envelope opens the mouth by a jaw-drop warp.

No weights. Two steps:

1. Speech -> mouth track. For every frame time k/fps we take the RMS of one frame period of
   audio centred on it, divide by a high percentile of the whole track (loud and quiet
   recordings then look alike), gate out noise, and smooth with a fast attack and a slower
   release, as a real jaw opens quickly and settles more slowly. The spectral centroid of
   the same window, ranked within the track, sets the mouth shape: bright spectra (front
   vowels, "ee") give a wide, flatter opening, dark ones ("oo", "o") a rounder, narrower one.
2. Track -> pixels. In a frame aligned with the mouth corners (u along the lips, v down), the
   lip line tears open: everything below it - lower lip, chin - is moved down by the opening
   (backward-mapped with ``cv2.remap``), tapering to the mouth corners and fading out below
   the chin; round shapes also draw the lips towards the centre. The gap between the upper
   lip and the moved lower lip is painted as mouth interior (dark red-brown, with a hint of
   upper teeth on wide openings) under a soft mask. The upper lip and everything above it
   never move; a closed mouth leaves the frame untouched.

Frames carry the face found by the motion stage; a frame without one is searched with the
Haar cascade. Frames with no face at all are passed through when asked; otherwise
``NoFaceError`` is raised as soon as the first one arrives (a streaming caller learns at
once), naming that frame's index.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Iterable, Iterator
from dataclasses import dataclass

import cv2
import numpy as np

from talkinghead.services.common.engine_contract import LipSyncEngine
from talkinghead.services.common.errors import InputError, NoFaceError
from talkinghead.services.common.face_detection import (
    has_landmarks,
    landmarks_from_box,
    largest_face,
)
from talkinghead.services.common.frames import FaceGeometry, VideoFrame

SAMPLE_RATE = 16_000

# Speech envelope.
NORM_PERCENTILE = 95.0  # loudness that counts as a fully open mouth
NOISE_GATE = 0.12  # below this fraction of that loudness the mouth stays shut
SILENCE_RMS = 1e-3  # about -60 dBFS: never open on this little signal
ATTACK_S = 0.02  # time constant of the opening
RELEASE_S = 0.08  # time constant of the closing
CLOSED = 0.02  # openness below which the frame is left as it is

# Mouth geometry, in mouth widths (corner to corner) or face-box widths.
MAX_OPEN = 0.28  # lip gap at full loudness, mouth widths
ROUND_SQUEEZE = 0.18  # how much round vowels narrow the lips, fraction of the width
LIP_TO_CHIN = 0.38  # lip line to chin, face widths: the part of the face that drops rigidly
JAW_HALF_WIDTH = 0.42  # half-width of the jaw at the chin, face widths
NECK_FADE = 0.45  # below the chin the drop fades to zero over this, face widths
LIP_SEARCH = 0.35  # the parting of the lips is searched this far around the corners' line
TEETH_CONTRAST = 12.0  # a band this much brighter than the skin above the lip is teeth

# Mouth interior.
SHADOW_RGB = np.array([48, 16, 15], np.float32)  # the dark mouth under the upper teeth
TONGUE_RGB = np.array([118, 48, 46], np.float32)  # dull red-brown towards the lower lip
TEETH_RGB = np.array([222, 216, 202], np.float32)
TEETH_OPENNESS = (0.35, 0.80)  # teeth fade in between these opennesses


@dataclass(frozen=True)
class MouthTrack:
    """Per-frame mouth state derived from the speech, indexed by frame number."""

    openness: np.ndarray  # (n,) in [0, 1]
    wideness: np.ndarray  # (n,) in [0, 1]: 1 = spread ("ee"), 0 = rounded ("oo")

    def at(self, index: int) -> tuple[float, float]:
        """(openness, wideness) of a frame; frames after the speech keep the mouth shut."""
        if 0 <= index < len(self.openness):
            return float(self.openness[index]), float(self.wideness[index])
        return 0.0, 0.5


def _smoothstep(x: np.ndarray) -> np.ndarray:
    x = np.clip(x, 0.0, 1.0)
    return x * x * (3.0 - 2.0 * x)


def _check_audio(audio: np.ndarray) -> np.ndarray:
    audio = np.asarray(audio)
    if audio.dtype == np.int16:
        audio = audio.astype(np.float32) / 32768.0
    audio = np.squeeze(audio).astype(np.float32, copy=False)
    if audio.ndim != 1 or audio.size == 0:
        raise InputError(f"audio must be non-empty mono samples, got shape {audio.shape}")
    if not np.all(np.isfinite(audio)):
        raise InputError("audio holds NaN or infinity")
    return audio


def mouth_track(audio: np.ndarray, fps: float, sample_rate: int = SAMPLE_RATE) -> MouthTrack:
    """Openness and shape of the mouth for every frame that falls inside the audio."""
    if not fps > 0:
        raise InputError(f"fps must be positive, got {fps}")
    audio = _check_audio(audio)
    n = int(np.ceil(len(audio) / sample_rate * fps))
    centres = np.arange(n) / fps * sample_rate
    half = 0.5 * sample_rate / fps
    starts = np.clip(np.round(centres - half).astype(int), 0, len(audio))
    ends = np.clip(np.round(centres + half).astype(int), 0, len(audio))
    energy = np.concatenate([[0.0], np.cumsum(audio.astype(np.float64) ** 2)])
    counts = np.maximum(ends - starts, 1)
    rms = np.sqrt((energy[ends] - energy[starts]) / counts)

    loud = max(float(np.percentile(rms, NORM_PERCENTILE)), SILENCE_RMS)
    level = np.where(rms < SILENCE_RMS, 0.0, rms / loud)
    level = np.clip((level - NOISE_GATE) / (1.0 - NOISE_GATE), 0.0, 1.0)

    attack = 1.0 - np.exp(-1.0 / (fps * ATTACK_S))
    release = 1.0 - np.exp(-1.0 / (fps * RELEASE_S))
    openness = np.zeros(n, np.float32)
    state = 0.0
    for k in range(n):
        rate = attack if level[k] > state else release
        state += rate * (level[k] - state)
        openness[k] = state

    windows = zip(starts, ends, strict=True)
    centroid = np.array([_spectral_centroid(audio[s:e], sample_rate) for s, e in windows])
    voiced = level > 0
    if np.count_nonzero(voiced) >= 2:
        lo, hi = np.percentile(np.log(centroid[voiced] + 1.0), [10, 90])
        wideness = np.clip((np.log(centroid + 1.0) - lo) / max(hi - lo, 1e-6), 0.0, 1.0)
    else:
        wideness = np.full(n, 0.5)
    return MouthTrack(openness, wideness.astype(np.float32))


def _spectral_centroid(window: np.ndarray, sample_rate: int) -> float:
    if len(window) < 16:
        return 0.0
    spectrum = np.abs(np.fft.rfft(window * np.hanning(len(window))))
    freqs = np.fft.rfftfreq(len(window), 1.0 / sample_rate)
    total = float(spectrum.sum())
    return float((spectrum * freqs).sum() / total) if total > 1e-9 else 0.0


@dataclass(frozen=True)
class MouthFrame:
    """Pixel frame of the mouth: centre between the corners, u along the lips, v down."""

    centre: np.ndarray
    along: np.ndarray
    down: np.ndarray
    width: float

    @classmethod
    def of(cls, face: FaceGeometry) -> MouthFrame:
        left, right = np.asarray(face.landmarks, np.float64)[3:5]
        width = float(np.hypot(*(right - left)))
        along = (right - left) / max(width, 1e-6)
        return cls((left + right) / 2.0, along, np.array([-along[1], along[0]]), width)

    def to_pixels(self, u: np.ndarray, v: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        (cx, cy), (ax, ay), (dx, dy) = self.centre.tolist(), self.along.tolist(), self.down.tolist()
        x = cx + u * ax + v * dx  # Python-float coefficients keep float32 planes float32
        y = cy + u * ay + v * dy
        return x.astype(np.float32, copy=False), y.astype(np.float32, copy=False)


def find_lip_line(image: np.ndarray, face: FaceGeometry) -> float:
    """Where the lips part at the mouth's centre, below the corners' line, in mouth widths.

    Landmarks estimated from a box only say roughly where the mouth is. Along the middle of
    the mouth the parting line is the darkest row (closed lips); when a bright band of upper
    teeth shows (a smile), the mouth must open below the teeth, at their lower edge.
    """
    mouth = MouthFrame.of(face)
    if mouth.width < 6.0:
        return 0.0
    reach = LIP_SEARCH * mouth.width
    v = np.arange(-reach, reach + 1e-6, 1.0)
    u = np.linspace(-0.25, 0.25, 9) * mouth.width
    map_x, map_y = mouth.to_pixels(u[None, :], v[:, None])
    gray = cv2.cvtColor(cv2.remap(image, map_x, map_y, cv2.INTER_LINEAR), cv2.COLOR_RGB2GRAY)
    rows = np.convolve(gray.mean(axis=1), [0.25, 0.5, 0.25], mode="same")[1:-1]
    v = v[1:-1]
    darkest = int(np.argmin(rows))
    skin = float(rows[: max(2, len(rows) // 5)].mean())  # above the upper lip
    below = rows[darkest:]
    if len(below) >= 3 and below.max() > skin + TEETH_CONTRAST:
        # Strongest bright-above, dark-below step under the darkest row: teeth's lower edge.
        steps = below[:-2] - below[2:]
        return float(v[darkest + 1 + int(np.argmax(steps))]) / mouth.width
    return float(v[darkest]) / mouth.width


def open_mouth(
    image: np.ndarray,
    face: FaceGeometry,
    openness: float,
    wideness: float,
    lip_line: float = 0.0,
) -> np.ndarray:
    """A copy of the image with the mouth opened by ``openness`` (0..1) in the given shape.

    ``lip_line`` is where the lips part at the centre, in mouth widths below the corners.
    """
    mouth = MouthFrame.of(face)
    mouth_width = mouth.width
    if mouth_width < 2.0:
        return image
    along, down, centre = mouth.along, mouth.down, mouth.centre
    face_width = max(face.width, 1.5 * mouth_width)

    gap = MAX_OPEN * mouth_width * openness * (1.15 - 0.35 * wideness)
    squeeze = ROUND_SQUEEZE * (1.0 - wideness) * openness
    chin = LIP_TO_CHIN * face_width
    jaw = max(JAW_HALF_WIDTH * face_width, 0.6 * mouth_width)
    fade = NECK_FADE * face_width

    # Region touched, in the mouth frame: lips' squeeze above, jaw and neck fade below.
    u_reach = jaw + 2.0
    v_top, v_bottom = -0.6 * mouth_width, chin + gap + fade + 2.0
    box = np.array([[u, v] for u in (-u_reach, u_reach) for v in (v_top, v_bottom)])
    pixels = centre + box[:, :1] * along + box[:, 1:] * down
    h, w = image.shape[:2]
    x0, y0 = np.maximum(np.floor(pixels.min(0)).astype(int), 0)
    x1, y1 = np.minimum(np.ceil(pixels.max(0)).astype(int) + 1, [w, h])
    if x1 <= x0 or y1 <= y0:
        return image
    ys, xs = np.mgrid[y0:y1, x0:x1].astype(np.float32)
    (cx, cy), (ax, ay), (dx, dy) = centre.tolist(), along.tolist(), down.tolist()
    rel_x, rel_y = xs - cx, ys - cy
    u = rel_x * ax + rel_y * ay
    v = rel_x * dx + rel_y * dy

    # Round lips: sample further out near the mouth, which draws the lips inwards.
    lips = _smoothstep(1.0 - (u / (0.8 * mouth_width)) ** 2 - (v / (0.5 * mouth_width)) ** 2)
    u_src = u * (1.0 + squeeze * lips)

    # The lips part along a parabola through both corners and the lip line at the centre.
    corner_dist = np.clip(1.0 - (2.0 * u_src / mouth_width) ** 2, 0.0, 1.0)
    below_lips = v - lip_line * mouth_width * corner_dist

    # Jaw drop: zero above the parting, tapering to the corners at the lips and to the
    # jaw's edge at the chin, full down to the chin, fading out over the neck.
    half_width = 0.5 * mouth_width + (jaw - 0.5 * mouth_width) * _smoothstep(v / chin)
    across = np.clip(1.0 - (u_src / half_width) ** 2, 0.0, 1.0) ** 0.7
    along_v = np.where(below_lips > 0, 1.0 - _smoothstep((v - chin - gap) / fade), 0.0)
    drop = gap * across * along_v
    map_x, map_y = mouth.to_pixels(u_src, v - drop)
    region = cv2.remap(image, map_x, map_y, cv2.INTER_LINEAR, borderMode=cv2.BORDER_REPLICATE)

    # The gap: output pixels below the parting whose source lies above it.
    edge = max(0.8, 0.04 * mouth_width)
    inside = _smoothstep(below_lips / edge) * _smoothstep((drop - below_lips) / edge)
    # Interior: shadow under the upper lip, tongue-red towards the lower lip, darker in
    # the corners; a band of upper teeth at the top on wide openings.
    height = np.clip(below_lips / np.maximum(drop, 1e-3), 0.0, 1.0)
    tongue = 0.8 * _smoothstep((height - 0.35) / 0.65)
    colour = SHADOW_RGB + (TONGUE_RGB - SHADOW_RGB) * tongue[..., None]
    colour *= (0.55 + 0.45 * _smoothstep(2.0 - 2.0 * np.abs(u) / half_width))[..., None]
    teeth_height = np.minimum(0.3 * drop, 0.12 * mouth_width)
    teeth = _smoothstep((teeth_height - below_lips) / edge) * _smoothstep(1.0 - np.abs(u) / half_width)
    lo, hi = TEETH_OPENNESS
    teeth *= 0.85 * float(_smoothstep(np.array((openness - lo) / (hi - lo))))
    colour += (TEETH_RGB - colour) * teeth[..., None]

    alpha = inside[..., None]
    region = region.astype(np.float32) * (1.0 - alpha) + colour * alpha
    out = image.copy()
    out[y0:y1, x0:x1] = np.clip(region + 0.5, 0, 255).astype(np.uint8)
    return out


def _face_for(frame: VideoFrame) -> FaceGeometry | None:
    """The frame's face with landmarks: carried from upstream, else found by Haar."""
    face = frame.face
    if face is None or face.width <= 0 or face.height <= 0:
        face = largest_face(frame.image)
    if face is None:
        return None
    if not has_landmarks(face):
        face = dataclasses.replace(face, landmarks=landmarks_from_box(face.box))
    return face


class LiteLipSyncEngine(LipSyncEngine):
    """Speech-envelope mouth opening; a fallback when Wav2Lip is absent."""

    name = "lite"
    device = "cpu"
    fingerprint = "lite-lipsync-1"

    def warmup(self) -> None:
        """Load the cascades and open one synthetic mouth."""
        image = np.full((128, 128, 3), 150, np.uint8)
        largest_face(image)
        box = (40.0, 30.0, 88.0, 78.0)
        face = FaceGeometry(box=box, landmarks=landmarks_from_box(box))
        open_mouth(image, face, 0.8, 0.5)
        mouth_track(np.zeros(1600, np.float32), 25.0)

    def sync(
        self,
        frames: Iterable[VideoFrame],
        audio: np.ndarray,
        fps: float,
        pass_through_faceless: bool = False,
    ) -> Iterator[VideoFrame]:
        """The frames with the mouth following the speech; frame.index / fps is its time.

        Audio and fps are checked here, before the first frame is asked for (InputError).
        """
        return self._synced(frames, mouth_track(audio, fps), pass_through_faceless)

    def _synced(
        self, frames: Iterable[VideoFrame], track: MouthTrack, pass_through_faceless: bool
    ) -> Iterator[VideoFrame]:
        lip_line: float | None = None  # measured on the first face, then fixed: no flicker
        for frame in frames:
            face = _face_for(frame)
            if face is None:
                if pass_through_faceless:
                    yield frame
                    continue
                raise NoFaceError(f"no face in frame {frame.index}", [frame.index])
            openness, wideness = track.at(frame.index)
            image = frame.image
            if lip_line is None:
                lip_line = find_lip_line(image, face)
            if openness >= CLOSED:
                image = open_mouth(image, face, openness, wideness, lip_line)
            yield VideoFrame(index=frame.index, image=image, face=face)
