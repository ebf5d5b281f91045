"""MuseTalk's face crop and its trip through the VAE: box, 256x256 crop, latents, decode.

MuseTalk (Zhang et al., 2024) redraws the lower half of a 256x256 crop of the face: the crop
with rows 128-255 blanked and the whole crop (the reference) are each encoded by Stable
Diffusion's VAE; the UNet's output latent is decoded back to 256x256 and blended in.

**The box.** Upstream takes it from 68 face landmarks (:func:`box_from_landmarks68`: x over
all points, the lowest point as the bottom, and the top as far above landmark 29, the middle
of the nose bridge, as the bottom is below it), then adds 10 px below. Our frames carry the
motion stage's :class:`FaceGeometry` instead: five landmarks (eye centres, nose tip, mouth
corners) and a detector box, and no landmark detector runs per frame. :func:`box_from_geometry`
places the same box from the five points by average face proportions (constants below, with
where they come from); on the reference pack's 68 landmarks, reduced to the five points the
usual way (means of 36-41 and 42-47, points 30, 48 and 54), it lands within the tolerance
tests/test_musetalk_box.py states of upstream's box.

**VAE sampling.** Upstream encodes with ``latent_dist.sample()``, unseeded, so the same input
gives a slightly different output on every run. A served engine must not: our latents are
``scaling · (mean + std · noise)`` with the noise drawn from a generator seeded by the crop's
own bytes (:func:`crop_noise`). Same input, same output; the noise keeps upstream's
distribution (a standard normal per element), and the pack's tests feed the stored noise.
"""

from __future__ import annotations

import zlib
from dataclasses import dataclass

import cv2
import numpy as np
import torch

from talkinghead.services.common.frames import FaceGeometry

CROP = 256
EXTRA_MARGIN = 10  # MuseTalk 1.5 extends the box this many pixels down (v1.5's extra_margin)
NOSE_BRIDGE = 29   # the 68-point landmark the box is made symmetric about (vertically)

# Frontal-face proportions in the five points' own measures. Landmark 29 (the middle of the
# nose bridge) lies 0.6 of the way from the eye line down to the nose tip (0.61 on the pack's
# face). The chin (landmark 8) lies CHIN_FRACTION nose-to-mouth distances below the mouth
# corners: about 1.8 by adult anthropometry (nose tip to mouth ~25 mm, mouth to chin ~45 mm),
# 0.7 on the pack's synthetic face; 1.2 sits between, and the box stays symmetric about the
# bridge either way, so mouth and chin stay in the crop's lower half that MuseTalk redraws.
# The jaw's width (landmarks 0-16) is about 2.45 eye distances (2.57 on the pack's face).
BRIDGE_FRACTION = 0.6
CHIN_FRACTION = 1.2
WIDTH_PER_EYE_DISTANCE = 2.45


def box_from_landmarks68(landmarks: np.ndarray) -> tuple[int, int, int, int]:
    """Upstream's box (x1, y1, x2, y2) from 68 landmarks (truncated to integers first)."""
    points = np.asarray(landmarks)[:68].astype(np.int32)
    x1, x2 = int(points[:, 0].min()), int(points[:, 0].max())
    y2 = int(points[:, 1].max())
    bridge = int(points[NOSE_BRIDGE, 1])
    y1 = max(0, bridge - (y2 - bridge))
    return x1, y1, x2, y2


def five_points_from_68(landmarks: np.ndarray) -> np.ndarray:
    """The five points FaceGeometry carries (left eye, right eye, nose tip, mouth corners),
    from 68 landmarks, the usual way."""
    p = np.asarray(landmarks, dtype=np.float64)
    return np.stack([p[36:42].mean(0), p[42:48].mean(0), p[30], p[48], p[54]]).astype(np.float32)


def box_from_five_points(points: np.ndarray) -> tuple[int, int, int, int]:
    """Upstream's box (before the margin) estimated from the five points."""
    p = np.asarray(points, dtype=np.float64)
    eyes, nose, mouth = (p[0] + p[1]) / 2, p[2], (p[3] + p[4]) / 2
    eye_distance = float(np.hypot(*(p[1] - p[0])))
    bridge_y = eyes[1] + BRIDGE_FRACTION * (nose[1] - eyes[1])
    chin_y = mouth[1] + CHIN_FRACTION * max(mouth[1] - nose[1], 0.0)
    centre_x = (eyes[0] + mouth[0]) / 2
    half_width = WIDTH_PER_EYE_DISTANCE * eye_distance / 2
    y1 = max(0, int(bridge_y - (chin_y - bridge_y)))
    return int(centre_x - half_width), y1, int(centre_x + half_width), int(chin_y)


def add_margin(box: tuple[int, int, int, int], frame_height: int,
               margin: int = EXTRA_MARGIN) -> tuple[int, int, int, int]:
    """v1.5's extra margin below the chin, kept inside the frame."""
    x1, y1, x2, y2 = box
    return x1, y1, x2, min(y2 + margin, frame_height)


def box_from_geometry(face: FaceGeometry, frame_height: int, frame_width: int,
                      margin: int = EXTRA_MARGIN) -> tuple[int, int, int, int] | None:
    """The box MuseTalk crops (margin included), from the motion stage's geometry; None when
    it has no landmarks or the box leaves less than 16 px of face inside the frame."""
    points = np.asarray(face.landmarks, dtype=np.float64)
    if points.shape != (5, 2) or not np.isfinite(points).all() or not np.any(points):
        return None
    x1, y1, x2, y2 = add_margin(box_from_five_points(points), frame_height, margin)
    x1, x2 = max(0, x1), min(frame_width, x2)
    if x2 - x1 < 16 or y2 - y1 < 16 or y1 >= frame_height:
        return None
    return x1, y1, x2, y2


def crop_face(image: np.ndarray, box: tuple[int, int, int, int]) -> np.ndarray:
    """The box cut out and resized to 256x256 with Lanczos (upstream's interpolation)."""
    x1, y1, x2, y2 = box
    return cv2.resize(image[y1:y2, x1:x2], (CROP, CROP), interpolation=cv2.INTER_LANCZOS4)


def vae_inputs(crops_rgb: np.ndarray) -> tuple[torch.Tensor, torch.Tensor]:
    """(masked, reference) [N, 3, 256, 256] in [-1, 1]: /255, lower half zeroed in the masked
    copy before normalising (so it sits at -1), then (x - 0.5) / 0.5."""
    # contiguous NCHW: a channels-last input makes CPU GroupNorm ~100x less precise
    x = torch.from_numpy(np.ascontiguousarray(crops_rgb)).permute(0, 3, 1, 2).contiguous().float() / 255.0
    masked = x.clone()
    masked[:, :, CROP // 2:] = 0
    return (masked - 0.5) / 0.5, (x - 0.5) / 0.5


def crop_noise(crop_rgb: np.ndarray) -> torch.Tensor:
    """Standard-normal noise [2, 4, 32, 32] (masked, reference) seeded by the crop's bytes."""
    generator = torch.Generator().manual_seed(zlib.crc32(np.ascontiguousarray(crop_rgb).tobytes()))
    return torch.randn((2, 4, CROP // 8, CROP // 8), generator=generator)


@dataclass(frozen=True)
class Posterior:
    mean: torch.Tensor
    std: torch.Tensor


def encode(vae: torch.nn.Module, x: torch.Tensor) -> Posterior:
    """The VAE's diagonal Gaussian posterior for images in [-1, 1]."""
    dist = vae.encode(x).latent_dist
    return Posterior(dist.mean, dist.std)


def latents(vae: torch.nn.Module, masked: torch.Tensor, reference: torch.Tensor,
            noise_masked: torch.Tensor, noise_reference: torch.Tensor,
            scaling: float) -> torch.Tensor:
    """[N, 8, 32, 32]: scaled samples of both posteriors, masked first."""
    a, b = encode(vae, masked), encode(vae, reference)
    return torch.cat([scaling * (a.mean + a.std * noise_masked.to(a.mean)),
                      scaling * (b.mean + b.std * noise_reference.to(b.mean))], dim=1)


def decode_float(vae: torch.nn.Module, latent: torch.Tensor, scaling: float) -> torch.Tensor:
    """The decoder's output in [-1, 1] (before clamping), for latents scaled by ``scaling``:
    multiplied by 1/scaling, as upstream does (a division differs in the last bit)."""
    return vae.decode(latent * (1 / scaling)).sample


def to_uint8_rgb(decoded: torch.Tensor) -> np.ndarray:
    """[N, 3, H, W] in [-1, 1] → uint8 [N, H, W, 3]: /2 + 0.5, clamp, ×255, round."""
    x = (decoded.float() / 2 + 0.5).clamp(0, 1)
    return (x.permute(0, 2, 3, 1) * 255).round().to(torch.uint8).cpu().numpy()


def resize_to_box(face_rgb: np.ndarray, box: tuple[int, int, int, int]) -> np.ndarray:
    """The decoded face resized (bilinear) to the box's size."""
    x1, y1, x2, y2 = box
    return cv2.resize(face_rgb, (x2 - x1, y2 - y1))
