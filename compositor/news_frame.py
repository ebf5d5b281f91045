"""Turning talking-head frames into 1920x1080 news frames.

All graphics that do not move (background, card, logo, ticker label) are drawn once,
when the renderer is built. Each frame then costs three array operations: copy the
static frame, resize the head crop into its panel, and copy the ticker's current slice.
"""

from __future__ import annotations

import logging

import cv2
import numpy as np

from .backdrop import draw_backdrop
from .head_crop import CropWindow, cover_crop
from .job_card import draw_job_card
from .logo import draw_logo
from .scene import NewsLayout, NewsScene
from .text_runs import cjk_variant_for, code_point_names, collect_missing
from .ticker import TickerStrip, draw_ticker_label

FaceBox = tuple[float, float, float, float]

log = logging.getLogger(__name__)


class NewsFrameRenderer:
    """Composites head frames onto a pre-drawn news layout, one cheap call per frame."""

    def __init__(self, scene: NewsScene, layout: NewsLayout | None = None, fps: float = 25.0) -> None:
        if not fps > 0:
            raise ValueError(f"fps must be positive, got {fps}")
        self.scene = scene
        self.layout = layout if layout is not None else NewsLayout()
        self.fps = float(fps)

        with collect_missing() as missing, cjk_variant_for(_scene_text(scene)):
            image = draw_backdrop(self.layout)
            draw_job_card(image, scene, self.layout)
            draw_logo(image, scene, self.layout)
            draw_ticker_label(image, scene, self.layout)
            static = np.array(image, dtype=np.uint8)
            static.flags.writeable = False
            self._static = static
            self.ticker = TickerStrip.for_scene(scene, self.layout, static)
        self.missing_glyphs: tuple[str, ...] = code_point_names(missing)
        """Characters of the card that no available font has ('U+E000', ...): each was drawn
        as U+FFFD instead."""
        if self.missing_glyphs:
            log.warning(
                "no font has %s: drawn as U+FFFD", ", ".join(self.missing_glyphs),
                extra={"missing_glyphs": list(self.missing_glyphs)},
            )
        self._locked_crop: CropWindow | None = None
        self._locked_face: FaceBox | None = None
        self._rescaled_crops: dict[tuple[int, int], CropWindow] = {}

    @property
    def static_frame(self) -> np.ndarray:
        """The frame without head or ticker text: read-only (height, width, 3) RGB."""
        return self._static

    @property
    def locked_crop(self) -> CropWindow | None:
        return self._locked_crop

    def crop_for(self, head_shape: tuple[int, ...], face_box: FaceBox | None = None) -> CropWindow:
        """The cover crop for a head image of `head_shape`, framed on `face_box` if given."""
        x0, y0, x1, y1 = self.layout.head_inner
        return cover_crop((head_shape[0], head_shape[1]), (x1 - x0, y1 - y0), face_box)

    def lock_crop(self, head_shape: tuple[int, ...], face_box: FaceBox | None = None) -> CropWindow:
        """Fix the crop (e.g. from the first frame's face) so the framing cannot jitter.

        Frames of another size (say, after a 2x face restorer) get the same framing,
        scaled to their size, also computed once.
        """
        self._locked_crop = self.crop_for(head_shape, face_box)
        self._locked_face = face_box
        self._rescaled_crops = {self._locked_crop.source_hw: self._locked_crop}
        return self._locked_crop

    def unlock_crop(self) -> None:
        self._locked_crop = None
        self._locked_face = None
        self._rescaled_crops = {}

    def ticker_offset(self, frame_index: int) -> int:
        """How far the ticker has crawled at `frame_index`, modulo its loop period."""
        travelled = int(frame_index * self.layout.ticker_speed_px_per_s / self.fps)
        return travelled % self.ticker.period_px

    def render(self, head: np.ndarray, frame_index: int, face_box: FaceBox | None = None) -> np.ndarray:
        """A new (height, width, 3) uint8 RGB news frame showing `head` at `frame_index`.

        With a locked crop, `face_box` is ignored; otherwise the crop is framed on it.
        """
        head = _as_rgb(head)
        crop = self._crop(head.shape, face_box)

        frame = self._static.copy()
        x0, y0, x1, y1 = self.layout.head_inner
        frame[y0:y1, x0:x1] = _resize(head[crop.y0 : crop.y1, crop.x0 : crop.x1], (x1 - x0, y1 - y0))
        tx0, ty0, tx1, ty1 = self.layout.ticker_crawl
        frame[ty0:ty1, tx0:tx1] = self.ticker.window(self.ticker_offset(frame_index))
        return frame

    def _crop(self, head_shape: tuple[int, ...], face_box: FaceBox | None) -> CropWindow:
        if self._locked_crop is None:
            return self.crop_for(head_shape, face_box)
        size = (head_shape[0], head_shape[1])
        if size not in self._rescaled_crops:
            self._rescaled_crops[size] = self.crop_for(size, self._rescaled_face(size))
        return self._rescaled_crops[size]

    def _rescaled_face(self, size: tuple[int, int]) -> FaceBox | None:
        """The locked face box in the pixels of a head image of `size` (height, width)."""
        if self._locked_face is None or self._locked_crop is None:
            return None
        locked_h, locked_w = self._locked_crop.source_hw
        sx, sy = size[1] / locked_w, size[0] / locked_h
        x0, y0, x1, y1 = self._locked_face
        return x0 * sx, y0 * sy, x1 * sx, y1 * sy


def _scene_text(scene: NewsScene) -> str:
    return " ".join([scene.title, scene.company, scene.location, *scene.skills, scene.resolved_ticker_text()])


def _as_rgb(head: np.ndarray) -> np.ndarray:
    """Accept (H, W, 3) RGB or (H, W, 4) RGBA uint8; anything else is a caller bug."""
    head = np.asarray(head)
    if head.dtype != np.uint8 or head.ndim != 3 or head.shape[2] not in (3, 4):
        raise ValueError(f"head must be an (H, W, 3) uint8 RGB image, got shape {head.shape} {head.dtype}")
    return head if head.shape[2] == 3 else np.ascontiguousarray(head[:, :, :3])


def _resize(image: np.ndarray, size_wh: tuple[int, int]) -> np.ndarray:
    """Area averaging when shrinking (no aliasing), bilinear when enlarging (fast, smooth)."""
    shrinking = size_wh[0] < image.shape[1]
    interpolation = cv2.INTER_AREA if shrinking else cv2.INTER_LINEAR
    if image.shape[1] == size_wh[0] and image.shape[0] == size_wh[1]:
        return image
    return cv2.resize(image, size_wh, interpolation=interpolation)
