"""A segmenter run on images in the training's geometry (kerasseg.geometry: the aspect kept, the training's
scales averaged, whole or in sliding windows), decided and scored at each image's own size: what fit's
validation, evaluate, predict and the export check all run.

`auto` runs an image whole when the model's activations at its prepared size fit the memory budget (BUDGET,
estimated from the model's graph by `activation_bytes`, lowered where less memory is available), else in
windows. The logits are resized and decided in bands of rows (kerasseg.resample), and a sliding run hands
its rows on as soon as no later window can touch them, so a 24-megapixel photo never has all its logits (or
its feature pyramid) in memory at once.

    from kerasseg.inference import Geometry, Inference
    run = Inference(model, Geometry("cover", (512, 512)))
    mask = run.mask(image)                      # (H, W) uint8 class indices at the image's own size
    cm = run.confusion(pairs, num_classes)      # over (image, mask) pairs, labels at their own size

Everything here is numpy and keras.ops: it runs on every Keras backend.
"""

from dataclasses import dataclass

import numpy as np

from kerasseg.geometry import MODES, RESIZES, TEST_SCALES, Geometry, geometry_for, resize_rule
from kerasseg.resample import RowResampler, decide, probabilities, resize_bilinear, resize_image, resize_mask

BAND_ROWS = 256  # rows of logits resized and decided at a time at the image's own size
# the activations one call of the model may hold, estimated (activation_bytes: an upper bound, 4-10 times what
# TensorFlow's CPU executor was seen to hold): the same on every machine, so that "auto" runs an image the same
# way everywhere, lowered only where less memory is available
BUDGET = 2 * 2**30


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


__all__ = ["BAND_ROWS", "BUDGET", "Geometry", "Inference", "MODES", "RESIZES", "TEST_SCALES", "activation_bytes",
           "available_memory", "confusion_at", "geometry_for", "probabilities", "resize_bilinear", "resize_image",
           "resize_mask", "resize_rule"]

