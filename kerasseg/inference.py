"""One inference geometry, the training's: how every stage that runs a segmenter on an image prepares it.

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
  the prepared size fit the memory budget (BUDGET, 2 GiB estimated as an
  upper bound, less where less memory is available), else slides.
  A window that overhangs the prepared image (smaller than the window) is
  padded with black, as training pads, and its padding is cut off again.
- the logits go back to the image's own size (bilinear), each pixel is
  decided there (the highest score; a binary segmenter's foreground where its
  logit is above 0), and scored against the label at its own resolution, as
  Cityscapes, ADE20K and Pascal VOC score: thin structures survive.

The logits are resized and decided in bands of rows (kerasseg.resample), and a sliding run hands
its rows on as soon as no later window can touch them, so a 24-megapixel
photo never has all its logits (or its feature pyramid) in memory at once.

    from kerasseg.inference import Geometry, Inference
    run = Inference(model, Geometry("cover", (512, 512)))
    mask = run.mask(image)                      # (H, W) uint8 class indices at the image's own size
    cm = run.confusion(pairs, num_classes)      # over (image, mask) pairs, labels at their own size

Everything here is numpy and keras.ops: it runs on every Keras backend.
"""

from dataclasses import dataclass

import numpy as np

from kerasseg.choices import TEST_SCALES
from kerasseg.errors import InputError
from kerasseg.resample import RowResampler, decide, probabilities, resize_bilinear, resize_image, resize_mask

RESIZES = ("cover", "stretch", "native")
MODES = ("auto", "whole", "slide")
BAND_ROWS = 256  # rows of logits resized and decided at a time at the image's own size
# the activations one call of the model may hold, estimated (activation_bytes: an upper bound, 4-10 times what
# TensorFlow's CPU executor was seen to hold): the same on every machine, so that "auto" runs an image the same
# way everywhere, lowered only where less memory is available
BUDGET = 2 * 2**30


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


# ----------------------------------------------------------------------------------------------------------
# the model's memory


def available_memory():
    """Bytes of memory this process may still use: MemAvailable of /proc/meminfo (Linux), else 8 GiB."""
    try:
        with open("/proc/meminfo") as f:
            for line in f:
                if line.startswith("MemAvailable:"):
                    return int(line.split()[1]) * 1024
    except OSError:
        pass
    return 8 * 2**30


def activation_bytes(model, probe=(64, 64)):
    """Bytes per input pixel of every layer's output of `model` (float32, nested models' layers too): the
    memory a forward pass holds at most, per pixel of its input (an upper bound: an engine frees a tensor once
    its last reader has run). Measured on the symbolic graph at a `probe` x `probe` input (the model's own
    size when it is fixed)."""
    import keras

    from kerasseg.internals import call_outputs, calls, is_functional

    height, width = model.inputs[0].shape[1:3]
    size = (height or probe[0], width or probe[1])
    tensors, nested = [], []
    for layer in model.layers:
        if is_functional(layer) and len(layer.inputs) == 1 and len(calls(layer)) == 1:
            nested.append(layer)  # (counted inside, at the size it is given)
        else:
            tensors.extend(call_outputs(layer))
    try:
        taps = keras.Model(model.inputs, [calls(layer)[0][0] for layer in nested] + tensors)
        shapes = taps.compute_output_spec(keras.KerasTensor((1, *size, 3)))
        shapes = [tuple(s.shape) for s in keras.tree.flatten(shapes)]
    except Exception:  # (a graph that cannot be tapped: a rule of thumb for a CNN instead)
        return 256.0
    pixels = size[0] * size[1]
    total = 4.0 * sum(int(np.prod(s[1:])) for s in shapes[len(nested):] if None not in s[1:]) / pixels
    for layer, shape in zip(nested, shapes):
        if len(shape) == 4 and None not in shape[1:3] and shape[-1] == 3:
            total += activation_bytes(layer, shape[1:3]) * shape[1] * shape[2] / pixels
    return total


# ----------------------------------------------------------------------------------------------------------
# running the model


@dataclass
class _Plan:
    """How one image runs: its own size, its working size, and "whole" or "slide"."""

    size: tuple
    working: tuple
    mode: str


class Inference:
    """`model` run on images as `geometry` says (see the module docstring).

    kind: what the model outputs ("logits" or "probabilities"; default: kerasseg.described.output_kind);
    batch_size: images (or windows) per call of the model at most; budget: bytes the model's activations
    (activation_bytes) may take per call (default: BUDGET, or half the memory available when that is less),
    which decides "auto" and lowers the batch: an image whose activations exceed it runs in windows; progress: a
    callable told (index, plan) before each image runs (a command's progress line); predict: how a batch is run
    (default: model.predict_on_batch)."""

    def __init__(self, model, geometry, kind=None, batch_size=16, budget=None, progress=None, predict=None):
        from kerasseg.described import output_kind

        self.model, self.geometry = model, geometry
        self.predict = predict or model.predict_on_batch
        self.kind = kind or output_kind(model)
        self.batch_size = max(1, int(batch_size))
        self.budget = budget if budget is not None else min(BUDGET, available_memory() // 2)
        self.per_pixel = activation_bytes(model)
        fixed = tuple(model.inputs[0].shape[1:3])
        self.fixed = fixed if all(fixed) else None
        self.progress = progress

    # planning

    def plans(self, size):
        """The _Plans of an image of `size` (height, width): one per scale of the geometry."""
        return [self._plan(size, working) for working in self.geometry.working_sizes(size)]

    def plan(self, size):
        """The _Plan of an image of `size` (height, width) at the geometry's one (or largest) scale."""
        return self.plans(size)[-1]

    def _plan(self, size, working):
        mode = self.geometry.mode
        if self.fixed is not None and working != self.fixed:
            mode = "slide"  # (a model of one input size runs in windows of that size)
        elif mode == "auto":
            mode = "whole" if self.fits(working[0] * working[1]) else "slide"
        return _Plan(tuple(int(n) for n in size[:2]), working, mode)

    def fits(self, pixels, count=1):
        return self.per_pixel * pixels * count <= self.budget

    def window(self):
        return self.fixed or self.geometry.window

    def batch_for(self, pixels):
        """How many inputs of `pixels` pixels one call may take (at least 1)."""
        return max(1, min(self.batch_size, int(self.budget // max(1.0, self.per_pixel * pixels))))

    def _call(self, batch):
        import keras

        logits = self.predict(np.asarray(batch, np.float32))
        return np.asarray(keras.ops.convert_to_numpy(logits), np.float32)

    # the logits at the working size, in bands of rows

    def _whole_batches(self, items):
        """(index, plan, working logits) of the "whole" items, run in batches of one working size."""
        pending = {}

        def flush(working):
            group = pending.pop(working)
            logits = self._call([image for _, _, image in group])
            for (index, plan, _), out in zip(group, logits):
                yield index, plan, out

        for index, plan, image in items:
            group = pending.setdefault(plan.working, [])
            group.append((index, plan, resize_image(image, plan.working)))
            if len(group) >= self.batch_for(plan.working[0] * plan.working[1]):
                yield from flush(plan.working)
        for working in list(pending):
            yield from flush(working)

    def _step(self):
        return self.geometry.stride or tuple(max(1, -(-2 * n // 3)) for n in self.window())

    def _slide_bands(self, image, plan):
        """The working-size logits of `image` run in overlapping windows, in bands of rows, each band given as
        soon as no later window touches it (the logits of overlapping windows averaged)."""
        prepared = resize_image(image, plan.working)
        height, width = plan.working
        (tile_h, tile_w), (step_h, step_w) = self.window(), self._step()

        def starts(length, tile, step):
            count = max(length - tile + step - 1, 0) // step + 1
            return sorted({max(min(i * step, length - tile), 0) for i in range(count)})

        def covers(length, tile, positions):  # how many windows cover each row (or column)
            count = np.zeros(length, np.float32)
            for p in positions:
                count[p:p + tile] += 1
            return count

        ys, xs = starts(height, tile_h, step_h), starts(width, tile_w, step_w)
        cover_y, cover_x = covers(height, tile_h, ys), covers(width, tile_w, xs)
        batch = self.batch_for(tile_h * tile_w)
        band, top = None, 0  # the summed logits of rows top .. top + len(band)
        for row, y in enumerate(ys):
            bottom = min(y + tile_h, height)
            windows = []
            for x in xs:
                window = prepared[y:bottom, x:x + tile_w]
                if window.shape[:2] != (tile_h, tile_w):  # (an image smaller than the window: padded black)
                    window = np.pad(window, [(0, tile_h - window.shape[0]), (0, tile_w - window.shape[1]), (0, 0)])
                windows.append(window)
            outs = np.concatenate([self._call(windows[i:i + batch]) for i in range(0, len(windows), batch)])
            grow = bottom - top - (0 if band is None else len(band))
            if grow > 0:
                more = np.zeros((grow, width, outs.shape[-1]), np.float32)
                band = more if band is None else np.concatenate([band, more])
            for x, out in zip(xs, outs):
                right = min(x + tile_w, width)
                band[y - top:bottom - top, x:right] += out[:bottom - y, :right - x]
            done = ys[row + 1] if row + 1 < len(ys) else height  # the rows no later window touches
            yield band[:done - top] / (cover_y[top:done, None, None] * cover_x[None, :, None])
            band, top = band[done - top:], done

    def _bands(self, items):
        """(index, parts) of each item (index, image), in any order: its parts [(plan, bands of working-size
        logits)], one per scale; whole runs batched across items."""
        whole, waiting = [], {}

        def arrived(index, part, plan, bands):  # (the parts of an image, given once all have arrived)
            parts = waiting[index]
            parts[part] = (plan, bands)
            if None not in parts:
                yield index, waiting.pop(index)

        def run(pending):
            for (index, part), plan, logits in self._whole_batches(pending):
                yield from arrived(index, part, plan, (logits,))

        for index, image in items:
            plans = self.plans(image.shape)
            if self.progress:
                self.progress(index, plans[-1])
            waiting[index] = [None] * len(plans)
            for part, plan in enumerate(plans):
                if plan.mode == "whole":
                    whole.append(((index, part), plan, image))
                else:
                    yield from arrived(index, part, plan, self._slide_bands(image, plan))
            if len(whole) >= 4 * self.batch_size:  # (enough waiting to fill batches of one size)
                yield from run(whole)
                whole = []
        yield from run(whole)

    def _decided(self, parts, taps=None):
        """Bands of decided rows (uint8) at the image's own size, from its parts (one per scale: plan, bands of
        working-size logits); `taps`: a callable given (plan, band) of each working-size band too. One part's
        logits are resized as they arrive; several parts' probabilities are averaged at the image's size."""
        if len(parts) == 1:
            (plan, bands), = parts
            resampler = RowResampler(plan.working, plan.size)
            for band in bands:
                if taps is not None:
                    taps(plan, band)
                for start in range(0, len(band), BAND_ROWS):
                    out = resampler.push(band[start:start + BAND_ROWS])
                    if len(out):
                        yield decide(out, self.kind)
            return
        held = []  # (each scale's logits whole, at its working size: 1.5 times the training size's by default)
        for plan, bands in parts:
            held.append(np.concatenate(list(bands)))
            if taps is not None:
                taps(plan, held[-1])
        size = parts[0][0].size
        for start in range(0, size[0], BAND_ROWS):
            rows = (start, min(start + BAND_ROWS, size[0]))
            total = sum(probabilities(resize_bilinear(logits, size, rows), self.kind) for logits in held)
            yield decide(total / len(held), "probabilities")

    # what users call

    def masks(self, images):
        """The class mask (H, W) uint8 of each of `images` ((H, W, 3) arrays, any sizes), in order, one at a
        time (each image runs alone: photos rarely share a size)."""
        for index, image in enumerate(images):
            (_, parts), = self._bands([(index, np.asarray(image))])
            yield np.concatenate(list(self._decided(parts)))

    def mask(self, image):
        """The class mask of one image at its own size."""
        return next(self.masks([image]))

    def confusion(self, pairs, num_classes, loss=None):
        """The confusion matrix (num_classes x num_classes, rows the labels) of every (image, mask) pair of
        `pairs` (an iterable, read as it is consumed), each mask at its own size, ignored pixels left out.
        `loss`: a callable (labels, logits) -> float given each image's mask resized (nearest) to the working
        size and its working-size logits (at each scale); the mean of its values is returned too: (matrix, mean
        loss)."""
        from kerasseg.metrics import confusion_matrix

        masks = {}

        def items():
            for index, (image, mask) in enumerate(pairs):
                masks[index] = np.asarray(mask)
                yield index, np.asarray(image)

        cm, losses = np.zeros((num_classes, num_classes), np.int64), []
        for index, parts in self._bands(items()):
            mask, row, held = masks.pop(index), 0, {}  # (each part's working-size logits, for the loss)

            def taps(plan, band, held=held):
                held.setdefault(id(plan), (plan, []))[1].append(band)

            for decided in self._decided(parts, taps if loss else None):
                cm += confusion_matrix(mask[row:row + len(decided)], decided, num_classes)
                row += len(decided)
            losses.extend(float(loss(resize_mask(mask, plan.working), np.concatenate(bands)))
                          for plan, bands in held.values())
        return (cm, float(np.mean(losses)) if losses else None) if loss is not None else cm


def confusion_at(scores, mask, num_classes, kind="logits"):
    """The confusion matrix of per-pixel `scores` (h, w, C), or class indices (h, w), of an image prepared at
    (h, w), against its `mask` at the image's own size: the scores resized there (bilinear; class indices
    nearest) in bands of rows, decided, and counted (ignored pixels left out)."""
    from kerasseg.metrics import confusion_matrix

    mask = np.asarray(mask)
    if np.ndim(scores) == 2:
        return confusion_matrix(mask, resize_mask(scores, mask.shape), num_classes)
    resampler, cm, row = RowResampler(np.shape(scores)[:2], mask.shape), 0, 0
    for start in range(0, len(scores), BAND_ROWS):
        decided = decide(resampler.push(np.asarray(scores[start:start + BAND_ROWS], np.float32)), kind)
        cm = cm + confusion_matrix(mask[row:row + len(decided)], decided, num_classes)
        row += len(decided)
    return cm


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


__all__ = ["BAND_ROWS", "BUDGET", "Geometry", "Inference", "MODES", "RESIZES", "TEST_SCALES", "activation_bytes",
           "available_memory", "confusion_at", "geometry_for", "probabilities", "resize_bilinear", "resize_image",
           "resize_mask", "resize_rule"]

