"""Per-frame visual features, computed on a stream of low-resolution frames in constant memory.

For every analysis frame we keep a handful of floats (never the frames): the motion onset strength,
the motion magnitude, brightness, saturation, and two colour-histogram distances for cut detection.

Onset strength, by method:

- ``flow`` — dense optical flow (DIS, Kroeger et al. 2016, OpenCV) between consecutive frames, summarised as a
  *directogram* (flow magnitude summed per direction bin) and turned into an onset envelope by its
  positive flux, the visual analogue of spectral flux (Davis & Agrawala 2018, "Visual Rhythm and
  Beat"; visbeat). Energy appearing in a new direction — a bounce, a stop-and-turn, a camera jerk —
  is an impact. A brightening term (positive flux of block luminance) adds flashes, which flow misses.
- ``diff`` — no flow: the energy of the temporal second difference of block-averaged grey frames
  (an acceleration proxy: zero for steady motion, large when motion starts, stops or reverses),
  plus the same brightening term. Several times cheaper, a little less precise.

Time alignment: a flow or difference between frames k-1 and k describes time k-0.5 (frame units);
the flux of two of them is centred on frame k-1. Each feature below is stored at the frame index
its centre falls on, so beats are not biased by half a frame.
"""

from __future__ import annotations

from array import array
from dataclasses import dataclass, field

import numpy as np

DIRECTIONS = 8  # directogram bins (45 degrees each)
BLOCKS = (6, 8)  # rows, columns of the block grid for luminance flux and the diff method
LUMA_WEIGHT = 0.08  # brightening (0..1 per pixel) → px/frame of flow per analysis-width px, matched by eye on samples


@dataclass
class FrameFeatures:
    """Per-frame series (length = frames seen), indexed by analysis frame; 8 bytes a value (no float objects)."""

    method: str
    rate: float  # analysis frames per second
    width: int
    onset: array = field(default_factory=lambda: array("d"))  # motion onset strength (unnormalised)
    motion: array = field(default_factory=lambda: array("d"))  # motion magnitude, fraction of the frame width per second
    brightness: array = field(default_factory=lambda: array("d"))  # mean luma, 0..1
    saturation: array = field(default_factory=lambda: array("d"))  # mean HSV saturation, 0..1
    hist_jump: array = field(default_factory=lambda: array("d"))  # colour-histogram distance to the previous frame, 0..1
    hist_step: array = field(default_factory=lambda: array("d"))  # distance from frame k-1 to frame k+2: a cut persists, a flash does not

    def arrays(self) -> dict[str, np.ndarray]:
        n = len(self.brightness)
        out = {}
        for name in ("onset", "motion", "brightness", "saturation", "hist_jump", "hist_step"):
            values = np.zeros(n, np.float64)
            series = getattr(self, name)
            values[:min(n, len(series))] = series[:n]
            out[name] = values
        return out


def _grey(frames: np.ndarray, cv2) -> np.ndarray:
    """Rec. 601 luma rounded to uint8 (n, H, W): OpenCV's fixed-point conversion, ~6x cheaper than in float."""
    n, h, w = frames.shape[:3]
    return cv2.cvtColor(np.ascontiguousarray(frames).reshape(n * h, w, 3), cv2.COLOR_RGB2GRAY).reshape(n, h, w)


def _block_means(grey: np.ndarray) -> np.ndarray:
    """(n, H, W) → (n, rows, cols) block means (the image is cropped to a multiple of the grid)."""
    n, h, w = grey.shape
    rows, cols = BLOCKS
    bh, bw = h // rows, w // cols
    cropped = grey[:, :bh * rows, :bw * cols]
    return cropped.reshape(n, rows, bh, cols, bw).mean(axis=(2, 4))


def _histograms(frames: np.ndarray) -> np.ndarray:
    """(n, H, W, 3) uint8 → (n, 64) normalised RGB histograms, 4 levels per channel."""
    n = frames.shape[0]
    q = frames >> 6
    index = (q[..., 0].astype(np.int32) << 4) | (q[..., 1].astype(np.int32) << 2) | q[..., 2]
    index = index.reshape(n, -1) + (np.arange(n) * 64)[:, None]
    counts = np.bincount(index.ravel(), minlength=64 * n).reshape(n, 64)
    return counts / counts.sum(axis=1, keepdims=True)


class FrameAnalyzer:
    """Feed chunks of frames (n, H, W, 3) uint8 in order; read `features` at the end."""

    def __init__(self, method: str, rate: float, width: int):
        if method not in ("flow", "diff"):
            raise ValueError(f"unknown method {method!r}")
        self.features = FrameFeatures(method, rate, width)
        self._prev_grey: np.ndarray | None = None  # last blurred luma frame (H, W) uint8
        self._prev_direct: np.ndarray | None = None  # directogram of the last flow
        self._prev_blocks: np.ndarray | None = None  # block means of the last 2 frames
        self._hist_tail = np.zeros((0, 64))  # histograms of the last 3 frames
        self._seen = 0
        import cv2

        cv2.setNumThreads(1)  # frames are small; threads only add overhead next to ffmpeg
        self._cv2 = cv2
        if method == "flow":
            # DIS (Kroeger et al. 2016, "Fast Optical Flow using Dense Inverse Search"): ~10x cheaper than
            # Farneback here. The ultrafast preset stops at 1/4 resolution, where a ball 10 px wide is
            # 2 px; finishing at 1/2 keeps small objects. Patches 8 px wide every 6 px instead of 4 (they
            # still overlap) halve its cost, to ~0.2 ms a frame, with the same accuracy on the sweep
            # (bench/rhythm_accuracy.py, 24 and 40 videos).
            self._dis = cv2.DISOpticalFlow_create(cv2.DISOPTICAL_FLOW_PRESET_ULTRAFAST)
            self._dis.setFinestScale(1)
            self._dis.setPatchStride(6)

    def feed(self, frames: np.ndarray) -> None:
        f = self.features
        n = frames.shape[0]
        luma = _grey(frames, self._cv2)
        grey = luma.astype(np.float32)
        # colour statistics on every other pixel and row: a quarter of the work, the same means and histograms
        sparse = frames[:, ::2, ::2]
        r, g, b = sparse[..., 0], sparse[..., 1], sparse[..., 2]
        # elementwise max/min of the three planes: a reduction over a length-3 axis is many times slower
        mx = np.maximum(np.maximum(r, g), b).astype(np.float32)
        mn = np.minimum(np.minimum(r, g), b).astype(np.float32)
        f.brightness.extend((grey.reshape(n, -1).mean(axis=1) / 255.0).tolist())
        f.saturation.extend(((mx - mn) / np.maximum(mx, 1.0)).reshape(n, -1).mean(axis=1).tolist())
        self._cut_features(_histograms(sparse))
        blocks = _block_means(grey)
        history = blocks if self._prev_blocks is None else np.concatenate([self._prev_blocks, blocks])
        first = self._seen - (len(history) - n)  # frame index of history[0]
        # brightening: positive block-luma change between k-1 and k, split over frames k-1 and k (centre k-0.5)
        rise = np.maximum(np.diff(history, axis=0), 0).mean(axis=(1, 2)) / 255.0
        if self.features.method == "diff":
            # second difference of block means ≈ acceleration; centred on its middle frame
            accel = np.abs(history[2:] - 2 * history[1:-1] + history[:-2]).mean(axis=(1, 2)) / 255.0
            speed = np.abs(np.diff(history, axis=0)).mean(axis=(1, 2)) / 255.0
        for j in range(1, len(history)):  # j indexes the pair (history[j-1], history[j])
            k = first + j  # the later frame's index
            if k < self._seen:
                continue  # already done in the previous chunk
            self._set(f.onset, k - 1, LUMA_WEIGHT * 0.5 * rise[j - 1], add=True)
            self._set(f.onset, k, LUMA_WEIGHT * 0.5 * rise[j - 1], add=True)
            if self.features.method == "diff":
                self._set(f.motion, k, speed[j - 1] * 4.0)
                if j >= 2:
                    self._set(f.onset, k - 1, accel[j - 2], add=True)
        if self.features.method == "flow":
            self._flow(luma)
        self._prev_blocks = history[-2:]
        self._seen += n

    def _flow(self, luma: np.ndarray) -> None:
        f, cv2 = self.features, self._cv2
        h, w = luma.shape[1:]
        bins = None
        for i in range(luma.shape[0]):
            k = self._seen + i
            # a light blur first: pixel noise otherwise shows up as random flow in every direction
            current = cv2.GaussianBlur(luma[i], (5, 5), 1.0)
            if self._prev_grey is not None:
                # DIS stops at half resolution and upsamples: the directogram of every other pixel is the same
                flow = self._dis.calc(self._prev_grey, current, None)[::2, ::2]
                dx, dy = flow[..., 0], flow[..., 1]
                magnitude = np.sqrt(dx * dx + dy * dy)
                bins = ((np.arctan2(dy, dx) + np.pi) * (DIRECTIONS / (2 * np.pi))).astype(np.int32) % DIRECTIONS
                # directogram in px/frame per analysis-width px, so the scale does not depend on resolution
                direct = np.bincount(bins.ravel(), weights=magnitude.ravel(), minlength=DIRECTIONS) / magnitude.size * (128 / w)
                self._set(f.motion, k, float(magnitude.mean()) * f.rate / w)
                if self._prev_direct is not None:  # flux of flows (k-2,k-1) → (k-1,k), centred on frame k-1
                    self._set(f.onset, k - 1, float(np.maximum(direct - self._prev_direct, 0).sum()), add=True)
                self._prev_direct = direct
            self._prev_grey = current

    def _cut_features(self, hists: np.ndarray) -> None:
        f = self.features
        history = np.concatenate([self._hist_tail, hists])
        first = self._seen - len(self._hist_tail)
        for j in range(1, len(history)):
            k = first + j
            if k >= self._seen:  # distance between k-1 and k
                self._set(f.hist_jump, k, 0.5 * float(np.abs(history[j] - history[j - 1]).sum()))
            if j >= 3 and k >= self._seen:  # distance k'-1 → k'+2 for k' = k-2
                self._set(f.hist_step, k - 2, 0.5 * float(np.abs(history[j] - history[j - 3]).sum()))
        self._hist_tail = history[-3:]

    @staticmethod
    def _set(series: array, index: int, value: float, add: bool = False) -> None:
        if index < 0:
            return
        while len(series) <= index:
            series.append(0.0)
        series[index] = series[index] + value if add else value
