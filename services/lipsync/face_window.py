"""The data path between video frames and the Wav2Lip generator, as small pure functions.

Wav2Lip (Prajwal et al., "A Lip Sync Expert Is All You Need for Speech to Lip Generation In
the Wild", ACM MM 2020) was trained on crops made a particular way, and its official
``inference.py`` reproduces that way at test time; the network only behaves as published if
we do exactly the same:

    detector rect → pad_boxes (default pads: 10 px below the chin, clamped to the frame)
    → smooth_boxes (mean over 5 frames, in place, integer truncation) → crop_coords
    → crop_face (cut, bilinear resize to 96²) → network_faces_* (lower half masked,
    unmasked reference, /255, NCHW) → Wav2Lip → network_output_to_uint8_* (×255, truncated)
    → paste_face (bilinear resize to the box, written over the whole box, no blending).

Colour order: the network sees and produces BGR (OpenCV frames). Our pipeline's frames are
RGB (``VideoFrame.image``). Cropping, resizing and pasting do not care about channel order;
the two network-facing steps do, and come in ``_bgr`` and ``_rgb`` variants so a caller
converts exactly once by picking the pair that matches its frames (RGB frames: use
``network_faces_from_rgb`` and ``network_output_to_uint8_rgb``; nothing else to flip).

Boxes are int64 ``(x1, y1, x2, y2)`` rows (detector convention); crop coordinates are
``(y1, y2, x1, x2)`` rows (the official code's order for slicing ``frame[y1:y2, x1:x2]``).
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from typing import TypeVar

import cv2
import numpy as np
import torch

from talkinghead.services.common.errors import InputError

IMG_SIZE = 96  # the generator's face crop; fixed by the checkpoints
DEFAULT_PADS = (0, 10, 0, 0)  # top, bottom, left, right: room for the chin
SMOOTHING_WINDOW = 5
BATCH_SIZE = 128  # the official --wav2lip_batch_size

Item = TypeVar("Item")


def pad_boxes(rects_x1y1x2y2: np.ndarray, frame_height: int, frame_width: int,
              pads: Sequence[int] = DEFAULT_PADS) -> np.ndarray:
    """Grow detector rectangles by ``pads`` = (top, bottom, left, right) pixels, clamped to
    the frame. Returns int64 [N, 4] (x1, y1, x2, y2)."""
    rects = np.asarray(rects_x1y1x2y2, dtype=np.int64).reshape(-1, 4)
    top, bottom, left, right = (int(p) for p in pads)
    out = np.empty_like(rects)
    out[:, 0] = np.maximum(0, rects[:, 0] - left)
    out[:, 1] = np.maximum(0, rects[:, 1] - top)
    out[:, 2] = np.minimum(frame_width, rects[:, 2] + right)
    out[:, 3] = np.minimum(frame_height, rects[:, 3] + bottom)
    return out


def smooth_boxes(boxes_x1y1x2y2: np.ndarray, window: int = SMOOTHING_WINDOW) -> np.ndarray:
    """Temporal smoothing of the official inference, reproduced quirk for quirk (on a copy).

    Box i becomes the mean of boxes i … i+window-1. Near the end, where fewer remain, it is
    the mean of the last ``window`` rows *as they are at that moment*: rows already replaced
    by their smoothed values count. Each mean is written back into the int64 array, so it is
    truncated toward zero. With fewer than ``window`` boxes the start ``n - window`` is
    negative and, being a Python slice, counts from the end: with window 5, 4 boxes all
    become the last box, 3 boxes average (progressively) their last two, 2 or 1 average all.
    """
    boxes = np.array(boxes_x1y1x2y2, dtype=np.int64).reshape(-1, 4)  # a copy we may overwrite
    n = len(boxes)
    for i in range(n):
        rows = boxes[n - window:] if i + window > n else boxes[i:i + window]
        boxes[i] = np.mean(rows, axis=0)  # float64 mean, truncated by the int64 assignment
    return boxes


def crop_coords(boxes_x1y1x2y2: np.ndarray) -> np.ndarray:
    """(x1, y1, x2, y2) rows → the (y1, y2, x1, x2) crop coordinates, int64 [N, 4]."""
    boxes = np.asarray(boxes_x1y1x2y2, dtype=np.int64).reshape(-1, 4)
    return boxes[:, [1, 3, 0, 2]].copy()


def crop_face(frame: np.ndarray, coords_y1y2x1x2: Sequence[int], size: int = IMG_SIZE) -> np.ndarray:
    """``frame[y1:y2, x1:x2]`` resized to size × size (OpenCV bilinear), uint8, channel
    order kept (BGR in, BGR out; RGB in, RGB out)."""
    y1, y2, x1, x2 = (int(c) for c in coords_y1y2x1x2)
    face = frame[y1:y2, x1:x2]
    if face.shape[0] == 0 or face.shape[1] == 0:
        raise InputError(f"empty face box (y1, y2, x1, x2) = {(y1, y2, x1, x2)} "
                         f"in a {frame.shape[1]}x{frame.shape[0]} frame")
    return cv2.resize(np.ascontiguousarray(face), (size, size), interpolation=cv2.INTER_LINEAR)


def network_faces_from_bgr(faces_bgr: np.ndarray) -> torch.Tensor:
    """BGR uint8 crops [B, S, S, 3] → the generator's face input [B, 6, S, S] float32.

    Channels are (masked B, G, R, reference B, G, R): the masked copy has its lower half
    (rows S//2 …, every column and channel) set to 0; at inference the reference is the same
    crop unmasked. Divided by 255 in float64, then cast to float32, as the official script.
    """
    faces = np.asarray(faces_bgr)
    if faces.ndim != 4 or faces.shape[-1] != 3 or faces.dtype != np.uint8:
        raise ValueError(f"faces must be uint8 [B, S, S, 3], got {faces.dtype} {faces.shape}")
    masked = faces.copy()
    masked[:, faces.shape[1] // 2:] = 0
    stacked = np.concatenate([masked, faces], axis=3) / 255.0
    return torch.from_numpy(np.ascontiguousarray(stacked.transpose(0, 3, 1, 2), dtype=np.float32))


def network_faces_from_rgb(faces_rgb: np.ndarray) -> torch.Tensor:
    """As ``network_faces_from_bgr``, for RGB crops (flips them to BGR first)."""
    return network_faces_from_bgr(np.asarray(faces_rgb)[..., ::-1])


def network_mel(windows: np.ndarray | Sequence[np.ndarray]) -> torch.Tensor:
    """Mel windows [B, 80, 16] (bands low → high, 16 time steps) → [B, 1, 80, 16] float32."""
    mel = np.asarray(windows, dtype=np.float32)
    if mel.ndim != 3:
        raise ValueError(f"mel windows must be [B, bands, steps], got {mel.shape}")
    return torch.from_numpy(np.ascontiguousarray(mel[:, None]))


def network_output_to_uint8_bgr(output: torch.Tensor | np.ndarray) -> np.ndarray:
    """Generator output [B, 3, S, S] in (0, 1), BGR → uint8 [B, S, S, 3] BGR.

    ×255 in float32 and cast to uint8, which truncates (0.999·255 → 254), as the official
    script does; rounding would brighten every pixel by half a grey level on average.
    """
    if isinstance(output, torch.Tensor):
        output = output.detach().cpu().numpy()
    out = np.asarray(output, dtype=np.float32)
    return (out.transpose(0, 2, 3, 1) * np.float32(255.0)).astype(np.uint8)


def network_output_to_uint8_rgb(output: torch.Tensor | np.ndarray) -> np.ndarray:
    """As ``network_output_to_uint8_bgr``, flipped to RGB [B, S, S, 3]."""
    return np.ascontiguousarray(network_output_to_uint8_bgr(output)[..., ::-1])


def paste_face(frame: np.ndarray, face: np.ndarray, coords_y1y2x1x2: Sequence[int]) -> np.ndarray:
    """A copy of ``frame`` with ``face`` (uint8 HWC, same channel order as the frame) resized
    bilinearly to the box and written over all of ``frame[y1:y2, x1:x2]`` (no blending)."""
    y1, y2, x1, x2 = (int(c) for c in coords_y1y2x1x2)
    out = frame.copy()
    out[y1:y2, x1:x2] = cv2.resize(np.ascontiguousarray(face), (x2 - x1, y2 - y1),
                                   interpolation=cv2.INTER_LINEAR)
    return out


def source_frame_index(window_index: int, num_frames: int, static: bool = False) -> int:
    """Frame used for mel window i: the clip restarts from frame 0 (no ping-pong); a still
    photo (static) always uses frame 0."""
    if num_frames <= 0:
        raise InputError("no frames")
    return 0 if static else window_index % num_frames


def batched(items: Sequence[Item], size: int = BATCH_SIZE) -> Iterator[Sequence[Item]]:
    """Consecutive slices of at most ``size`` items (the last one may be shorter)."""
    if size <= 0:
        raise ValueError("batch size must be positive")
    for start in range(0, len(items), size):
        yield items[start:start + size]
