"""Resizing and deciding per-pixel arrays in numpy, by bands of rows: the images a model is fed, its outputs
brought back to an image's own size, and each pixel's class.

Bilinear resizing follows TensorFlow's half-pixel rule (tf.image.resize, bilinear, no antialiasing), which the
training pipeline resizes with; masks are resized nearest (classes are not blended). `RowResampler` resizes
an array that arrives in bands of rows, holding only a band of either, so a 24-megapixel photo's logits are
never all in memory at once (kerasseg.inference). numpy only: the same on every Keras backend.
"""

import numpy as np


def _taps(out_n, in_n):
    """(lower index, upper index, weight of the upper) of each output position along one axis."""
    source = (np.arange(out_n, dtype=np.float64) + 0.5) * (in_n / out_n) - 0.5
    source = np.clip(source, 0.0, in_n - 1.0)
    lower = np.floor(source).astype(np.int64)
    upper = np.minimum(lower + 1, in_n - 1)
    return lower, upper, (source - lower).astype(np.float32)


def _lerp(low, high, weight):
    return low + (high - low) * weight


def resize_bilinear(array, size, rows=None):
    """`array` (H, W, C) resized to `size` (height, width) as float32 (half-pixel bilinear, no antialiasing);
    `rows`: (start, stop), only those rows of the result."""
    array = np.asarray(array)
    start, stop = rows or (0, size[0])
    if tuple(array.shape[:2]) == tuple(size):
        return array[start:stop].astype(np.float32, copy=False)
    rows = [taps[start:stop] for taps in _taps(size[0], array.shape[0])]
    cols = _taps(size[1], array.shape[1])
    out = _lerp(array[rows[0]].astype(np.float32), array[rows[1]].astype(np.float32), rows[2][:, None, None])
    return _lerp(out[:, cols[0]], out[:, cols[1]], cols[2][None, :, None])


def resize_image(image, size):
    """`image` (H, W, 3) at `size`, rounded to whole pixel values (uint8, as a camera frame of that size is)."""
    if tuple(image.shape[:2]) == tuple(size):
        return np.asarray(image)
    return np.clip(np.round(resize_bilinear(image, size)), 0, 255).astype(np.uint8)


def resize_mask(mask, size):
    """`mask` (H, W) at `size`, nearest (TensorFlow's half-pixel nearest rule: classes are not blended)."""
    mask = np.asarray(mask)
    if tuple(mask.shape[:2]) == tuple(size):
        return mask

    def nearest(out_n, in_n):
        return np.minimum(np.floor((np.arange(out_n) + 0.5) * (in_n / out_n)).astype(np.int64), in_n - 1)

    return mask[nearest(size[0], mask.shape[0])][:, nearest(size[1], mask.shape[1])]


class RowResampler:
    """Bilinear resizing of an array that arrives in bands of rows, from (in_h, in_w) to `size`: each output
    row is given once the input rows it blends have arrived, and input rows no later output row needs are
    dropped, so only a band of either is ever held."""

    def __init__(self, in_size, size):
        self.in_size, self.size = tuple(in_size), tuple(size)
        self.rows = _taps(size[0], in_size[0])
        self.cols = _taps(size[1], in_size[1])
        self.identity = self.in_size == self.size
        self.held, self.first, self.next_row = None, 0, 0  # held input rows start at input row `first`

    def push(self, band):
        """Input rows in order (a (rows, in_w, C) array); returns the output rows they complete (maybe none)."""
        if self.identity:
            self.next_row += len(band)
            return band
        self.held = band if self.held is None else np.concatenate([self.held, band])
        arrived = self.first + len(self.held)
        done = int(np.searchsorted(self.rows[1], arrived, side="left"))  # rows whose upper tap has arrived
        lower, upper, weight = (t[self.next_row:done] for t in self.rows)
        out = _lerp(self.held[lower - self.first].astype(np.float32), self.held[upper - self.first].astype(
            np.float32), weight[:, None, None])
        out = _lerp(out[:, self.cols[0]], out[:, self.cols[1]], self.cols[2][None, :, None])
        self.next_row = done
        if done < self.size[0]:  # drop the input rows below the next output row's lower tap
            keep = min(int(self.rows[0][done]) - self.first, len(self.held))
            self.held, self.first = self.held[keep:], self.first + keep
        return out


def decide(scores, kind="logits"):
    """The class (uint8) of each pixel of per-pixel scores (..., C) (kerasseg.labels.decide's rule)."""
    from kerasseg.labels import decide as decide_classes

    return decide_classes(scores, kind).astype(np.uint8)


def probabilities(scores, kind="logits"):
    """Per-pixel scores (..., C) as probabilities: a softmax over several channels, a sigmoid of one."""
    scores = np.asarray(scores, np.float32)
    if kind == "probabilities":
        return scores
    if scores.shape[-1] == 1:
        return 1 / (1 + np.exp(-scores))
    exp = np.exp(scores - scores.max(-1, keepdims=True))
    return exp / exp.sum(-1, keepdims=True)


__all__ = ["RowResampler", "decide", "probabilities", "resize_bilinear", "resize_image", "resize_mask"]
