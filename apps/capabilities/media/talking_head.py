"""The talking head on the CPU: one portrait, its face mesh and a mouth track → frames in
which the lips, jaw and eyelids move.

Per frame, in the face's own frame of reference (the eye line and its perpendicular):

- **Mouth and jaw.** Mesh points of the lips, jaw and chin get a displacement from the
  mouth track (opening, spread/round, lip press, lower lip to teeth); two smooth
  displacement fields are interpolated from them (normalised Gaussian weights, one field
  above the lip line and one below, so the lips can part), and the face patch is
  resampled through them (``cv2.remap``).
- **Inner mouth.** The gap between the moved inner lip contours is painted as a cavity
  that darkens towards the back, with a band of upper teeth (and lower teeth when the
  mouth is wide open), shaded by the face's own brightness, edges feathered.
- **Blinks** every few seconds (seeded, so a rerun is identical): the upper lid's skin is
  stretched down over the eye, column by column, with a lash line at its edge.
- **Idle motion:** a slow sway of the whole head (a fraction of a degree, a few pixels)
  plus a small nod with the speech's loudness.

Nothing here knows about jobs or storage; :mod:`lipsync_sync` wires it to a node.
"""

from __future__ import annotations

import hashlib
import math
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import av
import cv2
import numpy as np
from PIL import Image, ImageOps, UnidentifiedImageError

from apps.capabilities.media import face as facemesh
from apps.capabilities.media import mouth_region, probe, speech_timing, video
from apps.capabilities.media.face import Face
from myspinbot.errors import PermanentError

# Track channels (see apps.capabilities.media.speech_timing.CHANNELS).
OPEN, SPREAD, CLOSE, TEETH = range(4)

# How far things move, in mouth widths (corner to corner at rest).
JAW_DROP = 0.25  # inner lower lip at full opening
UPPER_LIFT = 0.08  # inner upper lip at full opening
SPREAD_SHIFT = 0.07  # each corner, outwards at full spread (inwards when rounded)
PRESS = 0.03  # lips thinning when pressed together
TEETH_TUCK = 0.06  # lower lip lifted under the upper teeth
SHUT = 0.56  # share of the photo's lip gap each lip closes by
# Mouth opening follows the phones, scaled by loudness between these two factors.
QUIET_FACTOR, LOUD_FACTOR = 0.45, 1.0
# The track's opening counted as full, and the least opening of a full-loudness frame.
OPEN_FULL = 0.55
LOUD_FLOOR = 0.35
# Loudness (0..1, see speech_timing.loudness_envelope) over which the mouth may open fully.
SILENCE_GATE = (0.08, 0.30)
# Blinks: first after 1-3 s, then every 2.5-5.5 s; closing and opening times.
BLINK_CLOSE, BLINK_OPEN = 0.07, 0.11
# The skin above the upper lid (in eye heights) that is stretched down over the eye.
LID_SKIN = 0.7
# Idle sway: peak rotation (degrees) and translation (face widths); nod with loudness.
SWAY_DEGREES = 0.8
SWAY_SHIFT = 0.010
NOD_SHIFT = 0.008
GRID_STEP = 2
# Upper and lower inner-lip points facing each other (mesh indices).
INNER_PAIRS = (
    (191, 95),
    (80, 88),
    (81, 178),
    (82, 87),
    (13, 14),
    (312, 317),
    (311, 402),
    (310, 318),
    (415, 324),
)


@dataclass(frozen=True)
class _Control:
    index: int  # mesh index
    sigma: float  # influence radius, px


def _smoothstep(x: np.ndarray) -> np.ndarray:
    x = np.clip(x, 0.0, 1.0)
    return x * x * (3.0 - 2.0 * x)


class TalkingHead:
    """Prepared once per portrait; :meth:`frame` renders frame ``i`` for a track value."""

    def __init__(
        self, rgb: np.ndarray, face: Face, fps: float, seed: int = 0, duration: float = 3600.0
    ) -> None:
        self.source = np.ascontiguousarray(rgb)
        self.height, self.width = rgb.shape[:2]
        self.face = face
        self.fps = fps
        self.rng = np.random.default_rng(seed)
        points = face.landmarks.astype(np.float64)
        self.points = points
        mouth = mouth_region.mouth_frame(points)
        self.ex, self.ey = mouth.ex, mouth.ey  # along the eye line; down the face
        self.face_w = float(np.linalg.norm(points[454] - points[234]))
        self.mouth_w = mouth.width
        self.mouth_centre = mouth.centre
        # How far the photo's lips are apart along the mouth (a smile with teeth): the
        # mouth closes by that much in silence, both lips meeting in the middle.
        along, gaps = [0.0], [0.0]
        for a, b in INNER_PAIRS:
            middle = (points[a] + points[b]) / 2 - self.mouth_centre
            along.append(float(middle @ self.ex))
            gaps.append(max(0.0, float(np.dot(points[b] - points[a], self.ey))))
        order = np.argsort(along[1:]) + 1
        half = self.mouth_w / 2
        self.gap_along = np.array([-half, *np.array(along)[order], half])
        self.gap_profile = np.array([0.0, *np.array(gaps)[order], 0.0])
        self.rest_gap = float(max(gaps))
        self._prepare_patch()
        self._prepare_fields()
        self._prepare_eyes(duration)
        self._prepare_colours()

    # --- set-up -----------------------------------------------------------------------

    def _prepare_patch(self) -> None:
        box = self.face.box
        w = self.face_w
        chin = self.points[facemesh.CHIN]
        left = max(0, int(min(box[0], chin[0]) - 0.25 * w))
        right = min(self.width, int(max(box[2], chin[0]) + 0.25 * w) + 1)
        top = max(0, int(self.points[168, 1] - 0.1 * w))  # from between the eyes
        bottom = min(self.height, int(max(chin[1], box[3]) + 0.45 * w) + 1)
        self.patch = (left, top, right, bottom)
        ys, xs = np.mgrid[top:bottom, left:right].astype(np.float32)
        self.patch_xy = (xs, ys)
        gy, gx = np.mgrid[top:bottom:GRID_STEP, left:right:GRID_STEP].astype(np.float64)
        self.grid = np.stack([gx.ravel(), gy.ravel()], axis=1)
        self.grid_shape = gx.shape

    def _weights(self, controls: list[_Control], at: np.ndarray | None = None) -> np.ndarray:
        """Normalised Gaussian weights of each grid point (or each of ``at``) over
        ``controls``, with a virtual still point two radii away from everything (the
        field fades to zero), solved so that each control's own point moves exactly as
        much as the control says (the weights alone would average neighbours in)."""
        centres = self.points[[c.index for c in controls]]
        sigmas = np.array([c.sigma for c in controls])

        def normalised(where: np.ndarray) -> np.ndarray:
            d2 = ((where[:, None, :] - centres[None, :, :]) ** 2).sum(axis=2)
            weights = np.exp(-d2 / (2.0 * sigmas[None, :] ** 2))
            result: np.ndarray = weights / (weights.sum(axis=1, keepdims=True) + math.exp(-2.0))
            return result

        at_controls = normalised(centres)
        # Ridge-regularised: points that nearly coincide do not make the solve blow up.
        solve = np.linalg.solve(
            at_controls.T @ at_controls + 1e-3 * np.eye(len(controls)), at_controls.T
        )
        return (normalised(self.grid if at is None else at) @ solve).astype(np.float32)

    def _prepare_fields(self) -> None:
        lips = 0.10 * self.mouth_w + 0.03 * self.face_w
        jaw = 0.16 * self.face_w
        anchors = [_Control(i, 0.07 * self.face_w) for i in (1, 4, 5, 98, 327, 195, 2)]
        cheeks = [_Control(i, 0.10 * self.face_w) for i in (234, 454, 93, 323, 132, 361, 58, 288)]
        upper = [_Control(i, lips) for i in facemesh.UPPER_LIP]
        lower = [_Control(i, lips) for i in facemesh.LOWER_LIP + facemesh.MOUTH_CORNERS]
        lower += [_Control(i, jaw) for i in facemesh.JAW]
        self.upper_controls = upper + anchors + cheeks
        self.lower_controls = lower + anchors + cheeks
        self.upper_weights = self._weights(self.upper_controls)
        self.lower_weights = self._weights(self.lower_controls)
        # Below the lip line the lower field rules; the boundary is sharp between the
        # corners (the cavity covers it) and softens beyond them.
        xs, ys = self.patch_xy
        rel = np.stack([xs - self.mouth_centre[0], ys - self.mouth_centre[1]], axis=-1)
        along = rel @ self.ex
        across = rel @ self.ey
        line = np.interp(along, *self._lip_line())
        beyond = np.maximum(0.0, np.abs(along) - self.mouth_w / 2)
        softness = 0.05 + 1.2 * beyond
        self.lower_share = _smoothstep((across - line) / softness + 0.5).astype(np.float32)

    def _lip_line(self) -> tuple[np.ndarray, np.ndarray]:
        """The closed-mouth line: mid-points of the inner contours, as across(along)."""
        upper = self.points[list(facemesh.LIPS_INNER_UPPER)]
        lower = self.points[list(facemesh.LIPS_INNER_LOWER[::-1])]
        mid = (upper + lower) / 2 - self.mouth_centre
        along, across = mid @ self.ex, mid @ self.ey
        order = np.argsort(along)
        return along[order], across[order]

    def _prepare_eyes(self, duration: float) -> None:
        self.eyes = []
        for upper, lower in (
            (facemesh.RIGHT_EYE_UPPER, facemesh.RIGHT_EYE_LOWER),
            (facemesh.LEFT_EYE_UPPER, facemesh.LEFT_EYE_LOWER),
        ):
            up, low = self.points[list(upper)], self.points[list(lower)]
            self.eyes.append((up, low))
        self.blinks = []
        t = float(self.rng.uniform(1.0, 3.0))
        while t < duration:
            self.blinks.append(t)
            t += float(self.rng.uniform(2.5, 5.5))
        self.sway_phase = self.rng.uniform(0, 2 * math.pi, size=4)

    def _prepare_colours(self) -> None:
        lips = self.points[list(facemesh.LIPS_OUTER)].astype(np.int32)
        mask = np.zeros((self.height, self.width), np.uint8)
        cv2.fillPoly(mask, [lips], 255)
        pixels = self.source[mask > 0]
        lip = pixels.mean(axis=0) if len(pixels) else np.array([150.0, 80.0, 80.0])
        oval = self.points[list(facemesh.FACE_OVAL)].astype(np.int32)
        cv2.fillPoly(mask, [oval], 255)
        skin = self.source[mask > 0].mean(axis=0)
        light = float(np.clip(skin.mean() / 170.0, 0.35, 1.25))
        # Inside the mouth: the lips' own hue, darkened, towards a dark red throat.
        self.cavity_colour = 0.5 * lip * np.array([0.6, 0.3, 0.3]) + np.array([48.0, 14.0, 14.0])
        self.throat_colour = np.array([34.0, 9.0, 11.0])
        self.teeth_colour = np.clip(np.array([236.0, 228.0, 212.0]) * light, 0, 255)

    # --- per frame ----------------------------------------------------------------------

    def blink(self, t: float) -> float:
        """How closed the eyes are at ``t`` (0 open, 1 shut)."""
        index = np.searchsorted(self.blinks, t) - 1
        if index < 0:
            return 0.0
        dt = t - self.blinks[index]
        if dt < BLINK_CLOSE:
            return float(_smoothstep(np.array(dt / BLINK_CLOSE)))
        if dt < BLINK_CLOSE + BLINK_OPEN:
            return float(1.0 - _smoothstep(np.array((dt - BLINK_CLOSE) / BLINK_OPEN)))
        return 0.0

    def displacements(self, value: np.ndarray, loudness: float) -> tuple[np.ndarray, np.ndarray]:
        """Per-control displacement (px) of the upper and lower fields for one frame."""
        # The track's opening peaks around half its targets (coarticulation); scale it to
        # full range, follow the loudness, and keep some opening on any loud frame. Only
        # a firm lip press (a p/b/m centre) shuts the mouth.
        press = float(_smoothstep(np.array((float(value[CLOSE]) - 0.6) / 0.35)))
        gain = QUIET_FACTOR + (LOUD_FACTOR - QUIET_FACTOR) * loudness
        opening = max(min(1.0, float(value[OPEN]) / OPEN_FULL) * gain, LOUD_FLOOR * loudness)
        opening *= 1.0 - press
        teeth = float(value[TEETH])
        spread = float(value[SPREAD])
        closing = max(press, 1.0 - opening)
        drop = JAW_DROP * self.mouth_w * opening
        lift = UPPER_LIFT * self.mouth_w * opening
        half = self.mouth_w / 2

        def move(controls: list[_Control], upper: bool) -> np.ndarray:
            result = np.zeros((len(controls), 2))
            for row, control in enumerate(controls):
                index = control.index
                rel = self.points[index] - self.mouth_centre
                along = float(rel @ self.ex)
                shift_x = (
                    spread * SPREAD_SHIFT * self.mouth_w * float(np.clip(along / half, -1.2, 1.2))
                )
                dy = 0.0
                # Lips apart in the photo meet in the middle: each lip moves as a whole.
                # Each lip moves a little over half the gap: shut lips touch along their
                # whole line, with no sliver of the photo's teeth left between them.
                shut = closing * float(np.interp(along, self.gap_along, self.gap_profile)) * SHUT
                if index in facemesh.MOUTH_CORNERS:
                    dy = 0.25 * drop
                elif upper and index in facemesh.UPPER_LIP:
                    inner = index in facemesh.LIPS_INNER_UPPER
                    dy = -(lift if inner else 0.6 * lift) + press * PRESS * self.mouth_w
                    dy *= 1.0 - 0.6 * (abs(along) / half) ** 2
                    dy += shut
                elif not upper and index in facemesh.LOWER_LIP:
                    inner = index in facemesh.LIPS_INNER_LOWER
                    dy = drop if inner else 0.92 * drop
                    dy -= press * PRESS * self.mouth_w + teeth * TEETH_TUCK * self.mouth_w
                    dy *= 1.0 - 0.45 * min(1.0, (abs(along) / half) ** 2)
                    dy -= shut
                elif not upper and index in facemesh.JAW:
                    side = abs(along) / (0.5 * self.face_w)
                    dy = (0.8 * drop - closing * self.rest_gap * 0.3) * max(0.0, 1.0 - side**1.5)
                    shift_x *= 0.3
                else:
                    shift_x = 0.0
                result[row] = shift_x * self.ex + dy * self.ey
            return result

        return move(self.upper_controls, True), move(self.lower_controls, False)

    def _field(self, weights: np.ndarray, moves: np.ndarray) -> np.ndarray:
        coarse = (weights @ moves.astype(np.float32)).reshape(*self.grid_shape, 2)
        left, top, right, bottom = self.patch
        return cv2.resize(coarse, (right - left, bottom - top), interpolation=cv2.INTER_LINEAR)

    def frame(self, index: int, value: np.ndarray, loudness: float) -> np.ndarray:
        """The RGB frame at ``index`` for mouth-track ``value`` and ``loudness`` (0..1)."""
        t = index / self.fps
        up_moves, low_moves = self.displacements(value, loudness)
        share = self.lower_share[..., None]
        up_field = self._field(self.upper_weights, up_moves)
        low_field = self._field(self.lower_weights, low_moves)
        field = up_field * (1.0 - share) + low_field * share
        xs, ys = self.patch_xy
        left, top, right, bottom = self.patch
        out = self.source.copy()
        out[top:bottom, left:right] = cv2.remap(
            self.source,
            xs - field[..., 0],
            ys - field[..., 1],
            interpolation=cv2.INTER_LINEAR,
            borderMode=cv2.BORDER_REFLECT101,
        )
        # Where the inner lips went: the field itself, sampled at them.
        moved = self.points.copy()
        for indices, dense in (
            (facemesh.LIPS_INNER_UPPER, up_field),
            (facemesh.LIPS_INNER_LOWER, low_field),
        ):
            where = self.points[list(indices)] - (left, top)
            cols = np.clip(np.round(where[:, 0]).astype(int), 0, right - left - 1)
            rows = np.clip(np.round(where[:, 1]).astype(int), 0, bottom - top - 1)
            moved[list(indices)] = self.points[list(indices)] + dense[rows, cols]
        self._paint_mouth(out, moved)
        closed = self.blink(t)
        if closed > 0.02:
            self._paint_blink(out, closed)
        return self._sway(out, t, loudness)

    def _paint_mouth(self, out: np.ndarray, moved: np.ndarray) -> None:
        upper = moved[list(facemesh.LIPS_INNER_UPPER)]
        lower = moved[list(facemesh.LIPS_INNER_LOWER)]
        gap = float(np.max((lower[::-1] - upper) @ self.ey))
        # A gap of a pixel or two is lips meeting, not a mouth to paint.
        visible = float(_smoothstep(np.array((gap - 1.0) / 2.5)))
        if visible <= 0.0:
            return
        polygon = np.concatenate([upper, lower[1:-1]])
        low = np.floor(polygon.min(axis=0)).astype(int) - 3
        high = np.ceil(polygon.max(axis=0)).astype(int) + 4
        low = np.maximum(low, 0)
        high = np.minimum(high, [self.width, self.height])
        if np.any(high - low < 2):
            return
        size = (high[1] - low[1], high[0] - low[0])
        shift = 4
        scaled = np.round((polygon - low) * (1 << shift)).astype(np.int32)
        mask = np.zeros(size, np.uint8)
        cv2.fillPoly(mask, [scaled], 255, lineType=cv2.LINE_AA, shift=shift)
        alpha = cv2.GaussianBlur(mask, (0, 0), 0.7).astype(np.float32) * (visible / 255.0)
        # Depth: darker away from the lips (distance to the cavity's edge).
        depth = cv2.distanceTransform((mask > 127).astype(np.uint8), cv2.DIST_L2, 3)
        depth = np.clip(depth / max(1.0, gap * 0.55), 0.0, 1.0)[..., None]
        colour = self.cavity_colour * (1 - depth) + self.throat_colour * depth
        # Upper teeth: a band under the upper inner lip.
        ys, xs = np.mgrid[low[1] : high[1], low[0] : high[0]].astype(np.float32)
        rel = np.stack([xs - self.mouth_centre[0], ys - self.mouth_centre[1]], axis=-1)
        along, across = rel @ self.ex, rel @ self.ey
        up_rel = upper - self.mouth_centre
        order = np.argsort(up_rel @ self.ex)
        lip_edge = np.interp(along, (up_rel @ self.ex)[order], (up_rel @ self.ey)[order])
        band = min(0.30 * gap, 0.075 * self.mouth_w)
        below = across - lip_edge
        teeth = _smoothstep((band - below) / 1.2 + 0.5) * _smoothstep(below / 1.0 + 1.0)
        ends = 1.0 - _smoothstep((np.abs(along) / (0.5 * self.mouth_w) - 0.45) / 0.4)
        teeth *= ends
        shade = (0.70 + 0.20 * ends) * (1.0 - 0.25 * np.clip(below / max(band, 1.0), 0, 1))
        colour = (
            colour * (1 - teeth[..., None])
            + (self.teeth_colour * shade[..., None]) * teeth[..., None]
        )
        if gap > 0.22 * self.mouth_w:  # lower teeth, dimmer, when wide open
            lo_rel = lower - self.mouth_centre
            order = np.argsort(lo_rel @ self.ex)
            lower_edge = np.interp(along, (lo_rel @ self.ex)[order], (lo_rel @ self.ey)[order])
            above = lower_edge - across
            lower_band = 0.05 * self.mouth_w
            lower_teeth = _smoothstep((lower_band - above) / 1.2 + 0.5) * _smoothstep(above + 1.0)
            lower_teeth *= ends * 0.6
            colour = colour * (1 - lower_teeth[..., None]) + (
                self.teeth_colour * 0.8 * lower_teeth[..., None]
            )
        region = out[low[1] : high[1], low[0] : high[0]].astype(np.float32)
        a = alpha[..., None]
        out[low[1] : high[1], low[0] : high[0]] = np.clip(region * (1 - a) + colour * a, 0, 255)

    def _paint_blink(self, out: np.ndarray, closed: float) -> None:
        for up, low in self.eyes:
            span = up[:, 0]
            order = np.argsort(span)
            x0 = math.floor(min(up[:, 0].min(), low[:, 0].min())) - 1
            x1 = math.ceil(max(up[:, 0].max(), low[:, 0].max())) + 2
            lid_height = float(np.mean(low[:, 1] - up[:, 1]))
            if lid_height <= 1:
                continue
            y0 = math.floor(up[:, 1].min() - LID_SKIN * lid_height)
            y1 = math.ceil(low[:, 1].max()) + 2
            x0, y0 = max(0, x0), max(0, y0)
            x1, y1 = min(self.width, x1), min(self.height, y1)
            if x1 - x0 < 3 or y1 - y0 < 3:
                continue
            xs = np.arange(x0, x1, dtype=np.float32)
            upper_y = np.interp(xs, up[order, 0], up[order, 1])
            lo_order = np.argsort(low[:, 0])
            lower_y = np.interp(xs, low[lo_order, 0], low[lo_order, 1])
            # Outside the eye's corners the lid does not move.
            inside = np.clip(
                np.minimum(xs - up[:, 0].min(), up[:, 0].max() - xs) / max(2.0, 0.15 * (x1 - x0)),
                0,
                1,
            )
            edge = upper_y + closed * inside * (lower_y - upper_y) * 0.95
            top = upper_y - LID_SKIN * lid_height
            grid_y = np.arange(y0, y1, dtype=np.float32)[:, None]
            # Lid skin (top..upper) stretched to top..edge; the eye below the edge stays.
            stretch = (upper_y - top) / np.maximum(edge - top, 1e-3)
            src_y = np.where(grid_y < edge, top + (grid_y - top) * stretch, grid_y).astype(
                np.float32
            )
            src_y = np.where(grid_y < top, grid_y, src_y).astype(np.float32)
            src_x = np.broadcast_to(xs[None, :], src_y.shape).astype(np.float32)
            patch = cv2.remap(
                self.source, src_x, src_y, cv2.INTER_LINEAR, borderMode=cv2.BORDER_REFLECT101
            )
            lash = np.exp(-((grid_y - edge) ** 2) / 1.5) * closed * inside
            patch = patch.astype(np.float32) * (1 - 0.45 * lash[..., None])
            out[y0:y1, x0:x1] = np.clip(patch, 0, 255)

    def sway_matrix(self, t: float, loudness: float) -> np.ndarray:
        """The idle motion at ``t``: a 2×3 affine about the nose tip."""
        p = self.sway_phase
        wave = 0.6 * math.sin(2 * math.pi * 0.09 * t + p[0])
        wave += 0.4 * math.sin(2 * math.pi * 0.21 * t + p[1])
        dx = SWAY_SHIFT * self.face_w * math.sin(2 * math.pi * 0.07 * t + p[2])
        dy = SWAY_SHIFT * self.face_w * math.sin(2 * math.pi * 0.13 * t + p[3])
        dy += NOD_SHIFT * self.face_w * loudness
        nose = self.points[facemesh.NOSE_TIP]
        matrix = cv2.getRotationMatrix2D((float(nose[0]), float(nose[1])), SWAY_DEGREES * wave, 1.0)
        matrix[:, 2] += np.array([dx, dy])
        result: np.ndarray = matrix
        return result

    def _sway(self, out: np.ndarray, t: float, loudness: float) -> np.ndarray:
        return cv2.warpAffine(
            out,
            self.sway_matrix(t, loudness),
            (self.width, self.height),
            flags=cv2.INTER_LINEAR,
            borderMode=cv2.BORDER_REFLECT101,
        )


# --- A whole clip -----------------------------------------------------------------------

ProgressFn = Callable[[float, str], None]
# The clip keeps the portrait's size, scaled down to at most this long side.
MAX_CLIP_SIDE = 1920


@dataclass(frozen=True)
class Clip:
    """What :func:`render` made."""

    width: int
    height: int
    fps: int
    frames: int
    duration_seconds: float
    face: dict[str, Any]  # Face.summary() in the clip's pixels
    timing: str  # "alignment" (phones of the known text) or "loudness" (why in timing_note)
    timing_note: str
    words: list[dict[str, Any]]  # word times of the alignment ([] without one)


def load_portrait(path: Path) -> np.ndarray:
    """The portrait as RGB, upright (EXIF), at most ``MAX_CLIP_SIDE``, even sides."""
    try:
        with probe.open_image(path) as opened:
            image = ImageOps.exif_transpose(opened).convert("RGB")
    except (UnidentifiedImageError, OSError, SyntaxError, ValueError) as exc:
        raise PermanentError("bad_image", f"cannot decode the portrait: {exc}") from None
    scale = min(1.0, MAX_CLIP_SIDE / max(image.size))
    width = max(2, int(image.size[0] * scale) // 2 * 2)
    height = max(2, int(image.size[1] * scale) // 2 * 2)
    if (width, height) != image.size:
        image = image.resize((width, height), Image.Resampling.LANCZOS)
    return np.asarray(image)


def timing_track(
    wav: Path, text: str, samples: np.ndarray, rate: int, fps: int, frames: int
) -> tuple[np.ndarray, np.ndarray, str, str, list[dict[str, Any]]]:
    """The mouth track and loudness per frame: from the phones of ``text`` aligned to the
    speech, or (no text, or it does not align) from the loudness alone."""
    loudness = speech_timing.loudness_envelope(samples, rate, fps)
    loudness = _fit(loudness, frames)
    duration = samples.shape[-1] / rate
    if text.strip():
        try:
            alignment = speech_timing.align(wav, text)
        except speech_timing.AlignmentError as error:
            note = f"the narration's text did not align with its audio ({error})"
        else:
            track = _fit(speech_timing.mouth_track(alignment.phones, fps, duration), frames)
            # No sound, no open mouth: the opening is gated by the loudness of the frame
            # and its neighbours (so the mouth starts to open a frame before the sound).
            near = np.maximum(loudness, np.maximum(np.roll(loudness, 1), np.roll(loudness, -1)))
            track[:, OPEN] *= _smoothstep(
                (near - SILENCE_GATE[0]) / (SILENCE_GATE[1] - SILENCE_GATE[0])
            )
            words = [
                {"text": w.text, "start": round(w.start, 3), "end": round(w.end, 3)}
                for w in alignment.words
            ]
            note = f"{len(alignment.words)} words aligned"
            if alignment.skipped:
                note += f"; not in the dictionary: {', '.join(alignment.skipped[:10])}"
            return track, loudness, "alignment", note, words
    else:
        note = "no narration text was given"
    track = np.zeros((frames, 4), np.float32)
    # Opening follows the loudness, smoothed (attack and release) so it does not flutter.
    opened = np.clip((loudness - 0.35) / 0.5, 0.0, 1.0)
    level = 0.0
    for index, target in enumerate(opened):
        level += (0.6 if target > level else 0.35) * (target - level)
        track[index, OPEN] = level
    return track, loudness, "loudness", note, []


def _fit(values: np.ndarray, frames: int) -> np.ndarray:
    """``values`` cut or padded (with its last row, or zeros) to ``frames`` rows."""
    if len(values) >= frames:
        return values[:frames]
    pad = np.zeros((frames - len(values), *values.shape[1:]), values.dtype)
    return np.concatenate([values, pad])


def render(
    portrait: Path,
    narration: Path,
    text: str,
    output: Path,
    progress: ProgressFn,
    *,
    fps: int = 25,
    crf: int = 20,
    preset: str = "veryfast",
) -> Clip:
    """Write ``output``: the portrait speaking ``narration`` (H.264 + AAC MP4 at the
    portrait's size). Raises ``PermanentError`` for a portrait without a usable face
    (``no_face``, ``face_too_small``, ``face_turned_away``) or unreadable media."""
    rgb = load_portrait(portrait)
    found = facemesh.find_face(rgb)
    audio = video.read_audio(narration)
    mono = audio.samples.mean(axis=0)
    frames = max(1, round(audio.duration * fps))
    progress(0.05, "timing the mouth to the speech")
    track, loudness, timing, note, words = timing_track(
        narration, text, mono, audio.rate, fps, frames
    )
    # Seeded by the inputs: the same portrait and narration give the same blinks and sway.
    seed = int.from_bytes(
        hashlib.sha256(rgb[::7, ::7].tobytes() + mono[::97].tobytes()).digest()[:8], "little"
    )
    head = TalkingHead(rgb, found, fps, seed=seed, duration=audio.duration)
    height, width = rgb.shape[:2]
    settings = video.VideoSettings(width=width, height=height, fps=fps, crf=crf, preset=preset)
    with video.Mp4Writer(output, settings, audio) as writer:
        for index in range(frames):
            frame = head.frame(index, track[index], float(loudness[index]))
            writer.write(av.VideoFrame.from_ndarray(frame, format="rgb24"))
            if index % fps == fps - 1:
                progress(
                    0.1 + 0.9 * (index + 1) / frames, f"rendered {index + 1} of {frames} frames"
                )
    return Clip(
        width=width,
        height=height,
        fps=fps,
        frames=frames,
        duration_seconds=audio.duration,
        face=found.summary(),
        timing=timing,
        timing_note=note,
        words=words,
    )
