"""LivePortrait's implicit keypoints: from network heads to the keypoints that drive warping.

The motion extractor M predicts, per image, canonical keypoints x_c (21 x 3), a head pose
(pitch, yaw, roll as 66-bin classifications), an expression offset δ, a scale s and a
translation t. A face's keypoints are then (Guo et al., 2024, eq. 1)

    x = s · (x_c · R + δ) + t,          R = (Rz(roll) · Ry(yaw) · Rx(pitch))ᵀ,

with keypoints as row vectors. Animation keeps the source's canonical keypoints and moves
pose, expression, scale and translation by the driving template's change since its first
frame (relative motion). Angles are degrees throughout, as in the official code.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING

import numpy as np
import torch

if TYPE_CHECKING:
    from talkinghead.services.motion.driving import RegionParts
    from talkinghead.services.motion.networks.motion_extractor import MotionHeads

N_BINS = 66
N_KEYPOINTS = 21


def bins_to_degrees(logits: torch.Tensor) -> torch.Tensor:
    """[B, 66] bin logits → [B, 1] degrees: the softmax expectation of the bin index, ×3 − 97.5."""
    probs = torch.softmax(logits, dim=1)
    index = torch.arange(N_BINS, dtype=probs.dtype, device=probs.device)
    return (probs * index).sum(dim=1, keepdim=True) * 3.0 - 97.5


def rotation_matrix(pitch: torch.Tensor, yaw: torch.Tensor, roll: torch.Tensor) -> torch.Tensor:
    """Degrees ([B] or [B, 1]) → R [B, 3, 3] = (Rz · Ry · Rx)ᵀ, for row-vector keypoints."""
    p, y, r = (torch.deg2rad(a.reshape(-1)) for a in (pitch, yaw, roll))
    one, zero = torch.ones_like(p), torch.zeros_like(p)

    def stack(rows):
        return torch.stack([torch.stack(row, dim=1) for row in rows], dim=1)

    rot_x = stack([[one, zero, zero], [zero, p.cos(), -p.sin()], [zero, p.sin(), p.cos()]])
    rot_y = stack([[y.cos(), zero, y.sin()], [zero, one, zero], [-y.sin(), zero, y.cos()]])
    rot_z = stack([[r.cos(), -r.sin(), zero], [r.sin(), r.cos(), zero], [zero, zero, one]])
    return (rot_z @ rot_y @ rot_x).transpose(1, 2)


@dataclass
class KeypointInfo:
    """One image's motion parameters, in the shapes the animation math uses."""

    pitch: torch.Tensor  # [B, 1] degrees
    yaw: torch.Tensor
    roll: torch.Tensor
    R: torch.Tensor  # [B, 3, 3]
    canonical: torch.Tensor  # x_c [B, 21, 3]
    exp: torch.Tensor  # δ [B, 21, 3]
    scale: torch.Tensor  # [B, 1]
    t: torch.Tensor  # [B, 3]

    @classmethod
    def from_heads(cls, heads: MotionHeads) -> KeypointInfo:
        """From the motion extractor's raw outputs (pitch/yaw/roll logits, t, exp, scale, kp)."""
        pitch, yaw, roll = (bins_to_degrees(h) for h in (heads.pitch, heads.yaw, heads.roll))
        batch = heads.kp.shape[0]
        return cls(
            pitch=pitch,
            yaw=yaw,
            roll=roll,
            R=rotation_matrix(pitch, yaw, roll),
            canonical=heads.kp.reshape(batch, N_KEYPOINTS, 3),
            exp=heads.exp.reshape(batch, N_KEYPOINTS, 3),
            scale=heads.scale.reshape(batch, 1),
            t=heads.t.reshape(batch, 3),
        )

    def keypoints(self) -> torch.Tensor:
        """x = s · (x_c · R + δ) + t, with only x and y translated (z stays)."""
        x = self.scale[:, :, None] * (self.canonical @ self.R + self.exp)
        return x + torch.cat([self.t[:, None, :2], torch.zeros_like(self.t[:, None, 2:])], dim=2)


@dataclass
class DrivingFrame:
    """One template frame: the recorded driving motion (R, δ, s, t)."""

    R: torch.Tensor  # [B, 3, 3]
    exp: torch.Tensor  # [B, 21, 3]
    scale: torch.Tensor  # [B, 1]
    t: torch.Tensor  # [B, 3]


# Absolute motion with the whole expression (regions all, exp): upstream takes the template's
# expression only for these keypoints and coordinates, the rest stays the photo's.
_ABSOLUTE_EXP_ROWS = (1, 2, 6, 11, 12, 13, 14, 15, 16, 17, 18, 19, 20)
_ABSOLUTE_EXP_CELLS = ((3, 1), (4, 1), (5, 2), (8, 2), (9, 1), (9, 2))


def expression_mask(keypoints: tuple[int, ...], relative: bool) -> torch.Tensor:
    """[21, 3] bool: which expression values follow the template."""
    mask = torch.zeros(N_KEYPOINTS, 3, dtype=torch.bool)
    if not relative and len(keypoints) == N_KEYPOINTS:
        mask[list(_ABSOLUTE_EXP_ROWS)] = True
        for row, col in _ABSOLUTE_EXP_CELLS:
            mask[row, col] = True
    else:
        mask[list(keypoints)] = True
    return mask


def driving_keypoints(
    source: KeypointInfo,
    frame: DrivingFrame,
    first: DrivingFrame,
    relative: bool = True,
    parts: RegionParts | None = None,
) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
    """The source's keypoints moved by the template (the official image-animation path).

    Relative motion adds the template's change since its first frame to the source's own
    pose and expression; absolute motion replaces them (keeping the photo's scale, as
    upstream). ``parts`` (driving.py's animation region; None: all) says which of rotation,
    translation, scale and expression keypoints follow the template; the others keep the
    photo's. Translation loses its z. Returns x_d and the intermediate R_new, delta_new,
    scale_new, t_new.
    """
    batch = frame.R.shape[0]
    rotation = translation = scale = True
    expression: tuple[int, ...] = tuple(range(N_KEYPOINTS))
    if parts is not None:
        rotation, translation, scale = parts.rotation, parts.translation, parts.scale
        expression = parts.expression
    src_R, src_exp = source.R.expand(batch, -1, -1), source.exp.expand(batch, -1, -1)
    src_scale, src_t = source.scale.expand(batch, -1), source.t.expand(batch, -1)
    if relative:
        R_new = (frame.R @ first.R.transpose(1, 2)) @ source.R if rotation else src_R
        moved_exp = source.exp + (frame.exp - first.exp)
        scale_new = source.scale * (frame.scale / first.scale) if scale else src_scale
        t_new = source.t + (frame.t - first.t) if translation else src_t
    else:
        R_new = frame.R if rotation else src_R
        moved_exp = frame.exp
        scale_new = src_scale
        t_new = frame.t if translation else src_t
    if expression:
        mask = expression_mask(expression, relative).to(frame.exp.device)
        delta_new = torch.where(mask, moved_exp, src_exp)
    else:
        delta_new = src_exp
    t_new = torch.cat([t_new[:, :2], torch.zeros_like(t_new[:, 2:])], dim=1)
    x_d = scale_new[:, :, None] * (source.canonical @ R_new + delta_new) + t_new[:, None, :]
    return x_d, {"R_new": R_new, "delta_new": delta_new, "scale_new": scale_new, "t_new": t_new}


def apply_stitching(
    x_s: torch.Tensor, x_d: torch.Tensor, stitching: torch.nn.Module
) -> tuple[torch.Tensor, torch.Tensor]:
    """Stitching (paper §3.3): an MLP nudges the driving keypoints so the animated face
    pastes back seamlessly. Returns (stitched keypoints, the MLP's raw delta [B, 65])."""
    batch = x_s.shape[0]
    delta = stitching(torch.cat([x_s.reshape(batch, -1), x_d.reshape(batch, -1)], dim=1))
    offsets = delta[:, : 3 * N_KEYPOINTS].reshape(batch, N_KEYPOINTS, 3)
    shift = delta[:, 3 * N_KEYPOINTS : 3 * N_KEYPOINTS + 2]
    stitched = x_d + offsets
    stitched = torch.cat([stitched[..., :2] + shift[:, None, :], stitched[..., 2:]], dim=2)
    return stitched, delta


# ---- eye and lip retargeting (paper §3.3) --------------------------------------------------
# Openness ratios from LivePortrait's 203 landmarks: an eyelid distance over the eye's width,
# and the lips' distance over the mouth's width (the official index pairs).
_LEFT_EYE, _RIGHT_EYE, _LIP = (6, 18, 0, 12), (30, 42, 24, 36), (90, 102, 48, 66)


def _distance_ratio(lmk: np.ndarray, a: int, b: int, c: int, d: int) -> float:
    return float(np.linalg.norm(lmk[a] - lmk[b]) / (np.linalg.norm(lmk[c] - lmk[d]) + 1e-6))


def eye_open_ratios(landmarks_203: np.ndarray) -> np.ndarray:
    """[left, right] eye openness of a face, from its 203 landmarks."""
    lmk = np.asarray(landmarks_203, dtype=np.float64).reshape(203, 2)
    return np.array([_distance_ratio(lmk, *_LEFT_EYE), _distance_ratio(lmk, *_RIGHT_EYE)])


def lip_open_ratio(landmarks_203: np.ndarray) -> np.ndarray:
    """[lip] openness of a face, from its 203 landmarks."""
    lmk = np.asarray(landmarks_203, dtype=np.float64).reshape(203, 2)
    return np.array([_distance_ratio(lmk, *_LIP)])


def retargeting_delta(x_s: torch.Tensor, ratios: torch.Tensor, mlp) -> torch.Tensor:
    """Keypoint offsets [B, 21, 3] that set the eyes (or lips) to a driving openness:
    MLP(x_s flattened ⊕ [source ratios, driving ratio])."""
    batch = x_s.shape[0]
    return mlp(torch.cat([x_s.reshape(batch, -1), ratios], dim=1)).reshape(batch, N_KEYPOINTS, 3)
