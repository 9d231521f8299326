"""Resizing that works for any input size, on every backend.

Segmenters accept any height and width, so a decoder cannot assume that an
upsampled feature map has exactly its skip connection's size (an odd size
halves to a rounded-up size and doubles back one pixel too large). It resizes
to the reference tensor instead.

Keras' own `ops.image.resize` and `UpSampling2D(interpolation="bilinear")`
need the target size as Python integers. That holds on JAX, in eager mode and
in every fixed-size export, but not inside a TensorFlow graph traced with
unknown height and width (a retraced `predict` on mixed sizes, a SavedModel or
ONNX with dynamic sizes). For that case only, bilinear resizing is written as
two small interpolation matrices, which is exactly `tf.image.resize`'s
half-pixel bilinear rule and needs no static size.

`edge=True` lowers the same resizing to operators the Coral Edge TPU maps
(its compilers reject TensorFlow 2's half-pixel RESIZE_BILINEAR): for an
integer factor f, each of the f output phases is a fixed 3-tap depthwise
convolution of the edge-padded input, and the phases are interleaved by
concatenation and reshape. That is exactly half-pixel bilinear upsampling;
a size that is not an integer multiple is upsampled by the next integer
factor and cropped (top-left: "same" padding put the extra pixel last).
With unknown sizes the same rule is computed by interpolation matrices, so
an edge model means the same thing whether a call was traced with static
or relaxed shapes.
"""

import math

import keras
import numpy as np
from keras import ops


def _static_hw(x):
    h, w = x.shape[1], x.shape[2]
    return (h, w) if isinstance(h, int) and isinstance(w, int) else None


def _interpolation_matrix(out_size, in_size, dtype, edge=False):
    """(out_size, in_size) weights of half-pixel bilinear interpolation; `edge`: of edge_resize's rule
    (upsampling by the next integer factor, then cropping), for sizes known only when the graph runs."""
    if edge:
        factor = ops.maximum(ops.floor_divide(out_size + in_size - 1, in_size), 1)
        scale = 1.0 / ops.cast(factor, "float32")
    else:
        scale = ops.cast(in_size, "float32") / ops.cast(out_size, "float32")
    src = (ops.cast(ops.arange(out_size), "float32") + 0.5) * scale - 0.5
    src = ops.clip(src, 0.0, ops.cast(in_size - 1, "float32"))
    lower = ops.floor(src)
    frac = ops.expand_dims(src - lower, 1)
    lower = ops.cast(lower, "int32")
    upper = ops.minimum(lower + 1, in_size - 1)
    positions = ops.expand_dims(ops.arange(in_size), 0)
    weights = (1.0 - frac) * ops.cast(ops.equal(positions, ops.expand_dims(lower, 1)), "float32")
    weights += frac * ops.cast(ops.equal(positions, ops.expand_dims(upper, 1)), "float32")
    return ops.cast(weights, dtype)


def bilinear_resize(x, size, edge=False):
    """Bilinear resize of an NHWC tensor to `size` (ints or scalar tensors); `edge`: edge_resize's rule."""
    if all(isinstance(s, int) for s in size) and not edge:
        return ops.image.resize(x, size, interpolation="bilinear")
    in_shape = ops.shape(x)
    rows = _interpolation_matrix(size[0], in_shape[1], x.dtype, edge)
    cols = _interpolation_matrix(size[1], in_shape[2], x.dtype, edge)
    x = ops.einsum("oh,bhwc->bowc", rows, x)
    return ops.einsum("pw,bowc->bopc", cols, x)


def _edge_pad(x, axis):
    """x with its first and last row (axis 1) or column (axis 2) repeated once."""
    first, last = (x[:, :1], x[:, -1:]) if axis == 1 else (x[:, :, :1], x[:, :, -1:])
    return ops.concatenate([first, x, last], axis=axis)


def upsample_axis(x, factor, axis):
    """Half-pixel bilinear upsampling of a static-shaped NHWC `x` by integer `factor` along axis 1 or 2,
    in Edge TPU operators only (slices, concatenation, depthwise convolution, reshape)."""
    if factor == 1:
        return x
    _, height, width, channels = x.shape
    if x.shape[axis] == 1:  # one row or column: every interpolation repeats it
        phases = [x] * factor
    else:
        padded = _edge_pad(x, axis)
        phases = []
        for phase in range(factor):
            # output phase r of each input cell samples at offset d from its centre, in (-1/2, 1/2)
            offset = (2 * phase + 1 - factor) / (2 * factor)
            taps = np.array([max(-offset, 0.0), 1.0 - abs(offset), max(offset, 0.0)], "float32")
            kernel = np.broadcast_to(taps.reshape((3, 1, 1, 1) if axis == 1 else (1, 3, 1, 1)),
                                     (3, 1, channels, 1) if axis == 1 else (1, 3, channels, 1))
            phases.append(ops.depthwise_conv(padded, ops.cast(kernel, x.dtype), padding="valid"))
    if axis == 2:  # [phase 0 | phase 1 | ...] per pixel along channels -> neighbouring columns
        return ops.reshape(ops.concatenate(phases, axis=3), (-1, height, width * factor, channels))
    return ops.reshape(ops.concatenate(phases, axis=2), (-1, height * factor, width, channels))


def edge_resize(x, size):
    """Bilinear upsampling of static-shaped `x` to `size` in Edge TPU operators (a side already
    larger than its target, such as an odd skip's transposed-convolution output, is cropped)."""
    source = _static_hw(x)
    factors = [max(1, math.ceil(t / s)) for t, s in zip(size, source)]
    x = upsample_axis(upsample_axis(x, factors[0], 1), factors[1], 2)
    if tuple(f * s for f, s in zip(factors, source)) != tuple(size):
        x = x[:, : size[0], : size[1], :]
    return x


@keras.saving.register_keras_serializable(package="kerasseg")
class ResizeToMatch(keras.layers.Layer):
    """Bilinearly resizes its first input to the height and width of the second.

    An identity when both sizes are already known to be equal, so fixed-size
    exports of even-sized inputs carry no resize op at all. `edge=True`
    lowers the resize to Edge TPU operators wherever sizes are static.
    """

    def __init__(self, edge=False, **kwargs):
        super().__init__(**kwargs)
        self.edge = bool(edge)

    def call(self, x, reference):
        source, target = _static_hw(x), _static_hw(reference)
        if source is not None and source == target:
            return x
        if self.edge and source is not None and target is not None:
            return edge_resize(x, target)
        if target is None:
            shape = ops.shape(reference)
            target = (shape[1], shape[2])
        return ops.cast(bilinear_resize(x, target, edge=self.edge), self.compute_dtype)

    def compute_output_shape(self, x_shape, reference_shape):
        return (x_shape[0], reference_shape[1], reference_shape[2], x_shape[3])

    def get_config(self):
        return {**super().get_config(), "edge": self.edge}


@keras.saving.register_keras_serializable(package="kerasseg")
class Upsample(keras.layers.Layer):
    """Bilinear upsampling by an integer factor, for any (even unknown) size; `edge` as ResizeToMatch."""

    def __init__(self, factor=2, edge=False, **kwargs):
        super().__init__(**kwargs)
        self.factor = int(factor)
        self.edge = bool(edge)

    def call(self, x):
        static = _static_hw(x)
        if static is not None:
            target = (static[0] * self.factor, static[1] * self.factor)
            if self.edge:
                return edge_resize(x, target)
        else:
            shape = ops.shape(x)
            target = (shape[1] * self.factor, shape[2] * self.factor)
        return ops.cast(bilinear_resize(x, target), self.compute_dtype)

    def compute_output_shape(self, x_shape):
        scaled = [None if s is None else s * self.factor for s in x_shape[1:3]]
        return (x_shape[0], *scaled, x_shape[3])

    def get_config(self):
        return {**super().get_config(), "factor": self.factor, "edge": self.edge}


@keras.saving.register_keras_serializable(package="kerasseg")
class CenterCropToMatch(keras.layers.Layer):
    """Crops its first input, centred, to the second's height and width.

    The skip connection of a valid-padding U-Net (Ronneberger et al. 2015)
    is larger than the upsampled map it joins; the paper crops its border.
    """

    def call(self, x, reference):
        source, target = _static_hw(x), _static_hw(reference)
        if source is not None and source == target:
            return x
        x_shape, ref_shape = ops.shape(x), ops.shape(reference)
        top = (x_shape[1] - ref_shape[1]) // 2
        left = (x_shape[2] - ref_shape[2]) // 2
        return x[:, top : top + ref_shape[1], left : left + ref_shape[2], :]

    def compute_output_shape(self, x_shape, reference_shape):
        return (x_shape[0], reference_shape[1], reference_shape[2], x_shape[3])

