"""Lite motion engine: the template's head pose applied to the photo as a smooth 2-D warp.

No weights, no neural rendering. For every template frame we take the head pose relative
to the template's first frame and turn it into a similarity transform of the head about
the face centre:

- roll  -> in-plane rotation. LivePortrait rotates keypoints x (right), y (down), z by
  Rz(roll)·Ry(yaw)·Rx(pitch); in image coordinates (y down) a positive roll therefore turns
  the head clockwise on screen (the top of the head moves to the image's right).
- yaw   -> the face surface, ``FACE_DEPTH`` face widths in front of the turning axis, slides
  sideways by depth·sin(yaw) (z points away from the camera, so +yaw moves it left), and the
  face narrows by cos(yaw).
- pitch -> likewise vertically: +pitch moves the face down by depth·sin(pitch), height
  shrinks by cos(pitch).
- scale -> zoom by scale_i / scale_0.
- t     -> shift by t_i - t_0, in keypoint units (half the LivePortrait crop, which spans
  ``CROP_FACE_WIDTHS`` face widths), converted to pixels by the face width.

The transform is blended into the photo as a displacement field: weight 1 over the head
(the face box grown to cover hair, ears and chin), falling smoothly to 0 about a face width
further out, sampled backwards with ``cv2.remap``. The background far from the head is
copied untouched and there is no seam to hide. Everything that does not change between
frames (pixel grid, weight mask, region of interest) is computed once per clip.

The animation region's pose parts are honoured: ``all`` moves rotation, translation and
scale, ``pose`` and ``pose+eyes`` rotation and translation, ``exp``, ``lip`` and ``eyes``
keep the head still; ``driving_multiplier`` scales the pose change (angles, shift, zoom's
departure from 1). ``options.expression_multiplier``, ``stitching``, lip normalisation and
the retargeting flags act on LivePortrait's expression keypoints, which this engine does not
model: they have no lite effect (the report says so for lip normalisation). With
``relative_motion`` off the rotation is the template's absolute pose; scale
and translation stay relative to the first frame, since the photo's own position in the
template's coordinates is unknown.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass

import cv2
import numpy as np

from talkinghead.services.common.engine_contract import MotionEngine
from talkinghead.services.common.errors import InputError, NoFaceError
from talkinghead.services.common.face_detection import largest_face
from talkinghead.services.common.frames import FaceGeometry, VideoFrame
from talkinghead.services.motion.driving import region_parts
from talkinghead.services.motion.options import MotionOptions, MotionReport
from talkinghead.services.motion.template import MotionTemplate, rotation_to_euler_degrees

# Geometry of the head relative to the detected face box, in face-box widths. The long fade
# below the chin lets neck, collar and shoulders follow the head a little, as a leaning torso
# would, instead of bending sharply where the rigid head region ends.
HEAD_CENTER_OFFSET = (0.0, -0.15)  # head ellipse centre relative to the face box centre
HEAD_SEMI_AXES = (0.85, 0.95, 0.85)  # moved rigidly: half-width, up to the hair, down to the chin
FALLOFF_WIDTH = (0.90, 0.90, 1.30)  # fade into the still background: sides, above, below
FACE_DEPTH = 0.35  # how far in front of the turning axis the face surface lies
CROP_FACE_WIDTHS = 2.3  # LivePortrait's crop spans about this many face widths (2 kp units)


@dataclass(frozen=True)
class HeadPose:
    """One frame's motion, already relative to the first frame where asked."""

    pitch: float  # degrees
    yaw: float
    roll: float
    zoom: float  # scale ratio
    shift: tuple[float, float]  # template translation delta, keypoint units (x, y)


def template_poses(template: MotionTemplate, relative: bool = True, region: str = "all",
                   multiplier: float = 1.0) -> list[HeadPose]:
    """Per-frame head pose of the template, relative to its first frame when asked, with
    only the pose parts of the animation region, scaled by the driving multiplier."""
    parts = region_parts(region)
    R0 = template.R[0].astype(np.float64)
    poses = []
    for i in range(template.n_frames):
        pitch = yaw = roll = 0.0
        if parts.rotation:
            Ri = template.R[i].astype(np.float64)
            pitch, yaw, roll = rotation_to_euler_degrees(Ri @ R0.T if relative else Ri)
        zoom = 1.0
        if parts.scale:
            zoom = float(template.scale[i, 0] / max(template.scale[0, 0], 1e-6))
        dx = dy = 0.0
        if parts.translation:
            dx, dy = (float(v) for v in (template.t[i, :2] - template.t[0, :2]))
        m = multiplier
        poses.append(HeadPose(pitch * m, yaw * m, roll * m, 1.0 + (zoom - 1.0) * m,
                              (dx * m, dy * m)))
    return poses


def head_transform(pose: HeadPose, center: tuple[float, float], face_width: float) -> np.ndarray:
    """Forward (2, 3) affine moving head pixels of the photo to where this pose puts them."""
    pitch, yaw, roll = np.radians([pose.pitch, pose.yaw, pose.roll])
    foreshorten = np.diag([np.cos(yaw), np.cos(pitch)])
    c, s = np.cos(roll), np.sin(roll)
    rotate = np.array([[c, -s], [s, c]])  # y points down: positive angle = clockwise on screen
    linear = pose.zoom * rotate @ foreshorten
    kp_to_pixels = CROP_FACE_WIDTHS / 2.0 * face_width
    shift = np.array(pose.shift) * kp_to_pixels + FACE_DEPTH * face_width * np.array(
        [-np.sin(yaw), np.sin(pitch)]
    )
    centre = np.asarray(center, np.float64)
    offset = centre + shift - linear @ centre
    return np.hstack([linear, offset[:, None]])


def move_face(face: FaceGeometry, forward: np.ndarray) -> FaceGeometry:
    """The face geometry after the head moved by ``forward`` (box keeps its axes)."""
    linear, offset = forward[:, :2], forward[:, 2]
    cx, cy = linear @ np.array(face.center) + offset
    sx = float(np.hypot(*linear[:, 0]))
    sy = float(np.hypot(*linear[:, 1]))
    hw, hh = face.width * sx / 2.0, face.height * sy / 2.0
    landmarks = (np.asarray(face.landmarks, np.float64) @ linear.T + offset).astype(np.float32)
    return FaceGeometry(box=(cx - hw, cy - hh, cx + hw, cy + hh), landmarks=landmarks)


class HeadWarp:
    """The per-clip constants of the head warp: region, pixel grid and blend weight."""

    def __init__(self, image_shape: tuple[int, ...], face: FaceGeometry):
        h, w = image_shape[:2]
        fw = max(face.width, face.height)
        cx, cy = face.center
        hx, hy = cx + HEAD_CENTER_OFFSET[0] * fw, cy + HEAD_CENTER_OFFSET[1] * fw
        ax, a_up, a_down = (a * fw for a in HEAD_SEMI_AXES)
        rx, r_up, r_down = (r * fw for r in FALLOFF_WIDTH)
        self.x0 = int(max(0, np.floor(hx - ax - rx)))
        self.x1 = int(min(w, np.ceil(hx + ax + rx) + 1))
        self.y0 = int(max(0, np.floor(hy - a_up - r_up)))
        self.y1 = int(min(h, np.ceil(hy + a_down + r_down) + 1))
        ys, xs = np.mgrid[self.y0 : self.y1, self.x0 : self.x1].astype(np.float32)
        # Elliptical radii of every pixel w.r.t. the head outline (inner: weight 1) and the
        # outline grown by the falloff (outer: weight 0). Both grow linearly along a ray from
        # the centre, so t runs from 0 to 1 between the two outlines.
        below = ys > hy
        dx, dy = xs - hx, ys - hy
        inner = np.hypot(dx / ax, dy / np.where(below, a_down, a_up))
        outer = np.hypot(dx / (ax + rx), dy / np.where(below, a_down + r_down, a_up + r_up))
        t = np.clip((inner - 1.0) / np.maximum(inner - outer, 1e-6), 0.0, 1.0)
        weight = 1.0 - t * t * (3.0 - 2.0 * t)  # smoothstep: no kink at either outline
        self.grid_x, self.grid_y = xs, ys
        self.weight = weight.astype(np.float32)
        self.weight_x = (weight * xs).astype(np.float32)
        self.weight_y = (weight * ys).astype(np.float32)

    def apply(self, photo: np.ndarray, forward: np.ndarray) -> np.ndarray:
        """The photo with its head moved by ``forward``; pixels outside the region copied."""
        inverse = cv2.invertAffineTransform(forward.astype(np.float64))
        (a, b, c), (d, e, f) = inverse.tolist()  # Python floats keep the maps float32
        # Backward map: q + w(q)·(A^-1 q - q), expanded so only precomputed planes are scaled.
        map_x = self.grid_x + (a - 1.0) * self.weight_x + b * self.weight_y + c * self.weight
        map_y = self.grid_y + d * self.weight_x + (e - 1.0) * self.weight_y + f * self.weight
        out = photo.copy()
        out[self.y0 : self.y1, self.x0 : self.x1] = cv2.remap(
            photo, map_x, map_y, interpolation=cv2.INTER_LINEAR, borderMode=cv2.BORDER_REPLICATE
        )
        return out


def _check_photo(photo: np.ndarray) -> None:
    if not isinstance(photo, np.ndarray) or photo.ndim != 3 or photo.shape[2] != 3:
        shape = getattr(photo, "shape", None)
        raise InputError(f"photo must be an (H, W, 3) RGB array, got shape {shape}")
    if photo.dtype != np.uint8:
        raise InputError(f"photo must be uint8, got {photo.dtype}")


class LiteMotionEngine(MotionEngine):
    """Template head motion as a 2-D head warp; a fallback when LivePortrait is absent."""

    name = "lite"
    device = "cpu"
    fingerprint = "lite-motion-1"

    def warmup(self) -> None:
        """Load the cascades and run one warp, so the first real request is not slower."""
        image = np.full((128, 128, 3), 128, np.uint8)
        cv2.circle(image, (64, 64), 30, (200, 160, 140), -1)
        largest_face(image)
        face = FaceGeometry(box=(40.0, 40.0, 88.0, 88.0))
        pose = HeadPose(2.0, 2.0, 2.0, 1.01, (0.01, 0.01))
        HeadWarp(image.shape, face).apply(image, head_transform(pose, face.center, face.width))

    def prepare(self, photo: np.ndarray) -> FaceGeometry:
        """The face the motion will be anchored on; NoFaceError if the photo has none."""
        _check_photo(photo)
        face = largest_face(photo)
        if face is None:
            raise NoFaceError("no face found in the photo")
        return face

    def animate(
        self, photo: np.ndarray, template: MotionTemplate, options: MotionOptions,
        report: MotionReport | None = None,
    ) -> Iterator[VideoFrame]:
        """One frame per template frame (already resampled to ``options.fps``).

        The photo is checked and its face found here, before the first frame is asked for.
        """
        face = self.prepare(photo)
        if report is not None and options.normalize_lip:
            report.notes.append("lip normalisation not applied: the lite engine does not "
                                "model the mouth's keypoints")
        poses = template_poses(template, options.relative_motion, options.animation_region,
                               options.driving_multiplier)
        return self._frames(photo, face, poses)

    @staticmethod
    def _frames(photo: np.ndarray, face: FaceGeometry, poses: list[HeadPose]) -> Iterator[VideoFrame]:
        warp = HeadWarp(photo.shape, face)
        for index, pose in enumerate(poses):
            forward = head_transform(pose, face.center, face.width)
            yield VideoFrame(index=index, image=warp.apply(photo, forward), face=move_face(face, forward))
