"""One inference geometry, the training's: how every stage that runs a segmenter on an image prepares it
(kerasseg.inference runs the model so).

Training with the default augmentation ("full") scales each image, keeping
its aspect ratio, so that it just covers the training crop (times a random
factor around 1), then crops. A model trained so has seen objects at that
scale and no other shape: a 2:1 street scene squashed into a square is a
geometry it never saw. So validation in `fit`, evaluate, predict and the
export check all prepare an image the same way (`Geometry`):

- **resize** (`RESIZES`): `cover` keeps the aspect ratio, at the scales
  training showed: training scales each image to a random factor in
  SCALE_RANGE (0.75-1.5) times the scale at which it just covers the crop (a
  square crop: the short side to the crop's), so by default (TEST_SCALES)
  each image runs at 0.75, 1, 1.25 and 1.5 times that scale and the four
  runs' probabilities, resized to the image's own size, are averaged
  (mmsegmentation's multi-scale test, over the training's own range). One
  scale alone is at the mercy of the model and the data: the best single
  scale was 1.5 on 2:1 pictures (benchmarks/geometry.py: 0.586 mIoU, 1.0
  0.553), 1.25 on 3:4 (0.746, 1.0 0.719), 1.125 on the tests' aspect folder
  (0.893, 1.5 0.836); the average scored 0.586, 0.755 and 0.888, within a
  point of the best on each (benchmarks/RESULTS.md). A
  number `scale` (or a tuple) runs every image at that factor (1: just
  covering, as mmsegmentation and the TF Model Garden test: a keep-ratio
  resize to the training scale). `stretch` resizes to the training size
  exactly, aspect not kept (the training's geometry with `augment` "flip" or
  "none", which resize so: for data square by design); `native` keeps the
  image's own size.
- **mode** (`MODES`): `whole` runs the prepared image at once; `slide` runs
  overlapping windows of `tile` (default: the training size) every `stride`
  (default: two thirds of the tile, rounded up: mmsegmentation's Cityscapes
  setting, 512x1024 windows every 341x682), the logits of overlapping windows
  averaged, so memory is bounded by the window and the batch, never by the
  picture; `auto` (the default) runs whole when the model's activations at
  the prepared size fit the memory budget (kerasseg.inference.BUDGET, 2 GiB
  estimated as an upper bound, less where less memory is available), else slides.
  A window that overhangs the prepared image (smaller than the window) is
  padded with black, as training pads, and its padding is cut off again.
- the logits go back to the image's own size (bilinear), each pixel is
  decided there (the highest score; a binary segmenter's foreground where its
  logit is above 0), and scored against the label at its own resolution, as
  Cityscapes, ADE20K and Pascal VOC score: thin structures survive.

    from kerasseg.geometry import Geometry
    Geometry("cover", (512, 1024)).working_sizes((1080, 1920))   # one (height, width) per scale
"""

from dataclasses import dataclass

import numpy as np

from kerasseg.choices import TEST_SCALES
from kerasseg.errors import InputError

RESIZES = ("cover", "stretch", "native")
MODES = ("auto", "whole", "slide")


def _pair(value, what):
    """N or (height, width) as a (height, width) tuple of positive integers, or None; an InputError otherwise."""
    if value is None:
        return None
    try:
        pair = (value, value) if np.ndim(value) == 0 else tuple(value)
        if len(pair) != 2 or any(int(n) != n or n < 1 for n in pair):
            raise ValueError
    except (TypeError, ValueError):
        raise InputError(f"{what} must be N or (height, width) of positive integers; received {value!r}") from None
    return tuple(int(n) for n in pair)


@dataclass(frozen=True)
class Geometry:
    """How an image reaches the model (see the module docstring). `size`: the training size (height, width),
    which `cover` scales from and `stretch` resizes to; `tile` and `stride`: the sliding windows (defaults: the
    training size, and two thirds of the tile); `scale`: `cover`'s factor over the scale at which an image just
    covers `size`, or a tuple of factors whose probabilities are averaged (default: TEST_SCALES, the training's
    range); normalized to a tuple."""

    resize: str = "cover"
    size: tuple = None
    mode: str = "auto"
    tile: tuple = None
    stride: tuple = None
    scale: tuple = None

    def __post_init__(self):
        if self.resize not in RESIZES:
            raise InputError(f"resize must be one of {', '.join(RESIZES)}; received {self.resize!r}")
        if self.mode not in MODES:
            raise InputError(f"mode must be one of {', '.join(MODES)}; received {self.mode!r}")
        for name in ("size", "tile", "stride"):
            object.__setattr__(self, name, _pair(getattr(self, name), name))
        if self.size is None and self.resize != "native":
            raise InputError(f"resize {self.resize!r} scales each image to the training size: give size=(height, "
                             "width) (or resize 'native')")
        if self.scale is not None and self.resize != "cover":
            raise InputError(f"scale applies to resize 'cover' (aspect kept); received scale {self.scale} with "
                             f"resize {self.resize!r}")
        if self.resize == "cover":
            object.__setattr__(self, "scale", _factors(TEST_SCALES if self.scale is None else self.scale))
        if self.stride is not None and self.tile is not None and any(s > t for s, t in zip(self.stride,
                                                                                          self.tile)):
            raise InputError(f"stride {self.stride} is larger than the tile {self.tile}: windows would leave gaps")

    @property
    def window(self):
        """The sliding window (height, width): `tile`, else the training size, else 512x512."""
        return self.tile or self.size or (512, 512)

    @property
    def step(self):
        """The sliding windows' stride: `stride`, else two thirds of the window (rounded up)."""
        return self.stride or tuple(max(1, -(-2 * n // 3)) for n in self.window)

    def working_sizes(self, size):
        """The (height, width) an image of `size` is prepared at (before any padding): one per scale."""
        height, width = (int(n) for n in size[:2])
        if self.resize == "native":
            return ((height, width),)
        if self.resize == "stretch":
            return (self.size,)
        covering = max(self.size[0] / height, self.size[1] / width)  # the scale at which it just covers the size
        return tuple((max(round(self.size[0] * factor), round(height * covering * factor), 1),
                      max(round(self.size[1] * factor), round(width * covering * factor), 1))
                     for factor in self.scale)

    def working_size(self, size):
        """The working size of an image of `size` where the geometry has one scale (else an InputError)."""
        sizes = self.working_sizes(size)
        if len(sizes) != 1:
            raise InputError(f"this geometry runs each image at {len(sizes)} scales ({self.scale}): give one scale")
        return sizes[0]

    def to_dict(self):
        return {"resize": self.resize, "size": None if self.size is None else list(self.size), "mode": self.mode,
                "tile": list(self.window), "stride": list(self.step),
                "scale": None if self.scale is None else list(self.scale)}

    def describe(self):
        """One line saying what this geometry does, for the commands' output."""
        size = f"{self.size[0]}x{self.size[1]}" if self.size else ""
        factors = ", ".join(f"{f:g}" for f in self.scale or ())
        at = {"cover": f"aspect kept, at {factors} times the scale that covers {size}"
                       + (" (their probabilities averaged)" if len(self.scale or ()) > 1 else ""),
              "stretch": f"resized to {size}", "native": "at its own size"}[self.resize]
        window = f"{self.window[0]}x{self.window[1]} windows every {self.step[0]}x{self.step[1]}"
        run = {"whole": "run whole", "slide": f"run in {window}",
               "auto": f"run whole, or in {window} when too large for memory"}[self.mode]
        return f"each image {at}, {run}; scored at its own size"


def _factors(scale):
    """`scale` (a number or a sequence of them) as a tuple of positive floats, or an InputError."""
    try:
        if isinstance(scale, (str, bytes, bool)) or any(isinstance(f, (str, bytes, bool)) for f in np.ravel(scale)):
            raise TypeError
        factors = tuple(float(f) for f in np.ravel(scale))
    except (TypeError, ValueError):
        factors = ()
    if not factors or not all(0 < f <= 16 for f in factors):
        raise InputError(f"scale must be a number above 0 and at most 16, or several, each a factor over the scale "
                         f"at which an image just covers the training size (1.0: just covering); received {scale!r}")
    return factors


def resize_rule(augment):
    """The resize a model trained with `augment` saw: "cover" for "full" (random scale around the covering
    one, then a crop), "stretch" for "flip" and "none" (every image resized to the training size)."""
    return "cover" if augment in (None, "full") else "stretch"


def geometry_for(model, size=None, resize=None, mode="auto", tile=None, stride=None, record=None, scale=None):
    """The Geometry to run `model` with: `resize` (default: the rule it was trained with, which it carries
    (kerasseg.describe) or its run's record says, else "cover") at `size` ("native", N or (height, width);
    default: the training size it carries, else its run's, else its fixed input size) and `scale` (cover's
    factor; default None: each image's own size, brought within the training's scales)."""
    from kerasseg.described import description, working_size

    if size == "native":
        resize, size = "native", None
    if resize is None:
        resize = description(model).resize or (resize_rule(record.arguments.get("augment")) if record else "cover")
    # (native too: the training size is its windows' default)
    size = working_size(model, size, record.image_size if record is not None else None)
    if size is None and resize != "native":
        raise InputError(f"{model.name} accepts any image size and carries no training size: give the size "
                         "its images are scaled to (image_size=(height, width)), or resize 'native'")
    return Geometry(resize, size, mode or "auto", tile, stride, scale)


__all__ = ["Geometry", "MODES", "RESIZES", "TEST_SCALES", "geometry_for", "resize_rule"]
