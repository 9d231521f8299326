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
"""

import keras
from keras import ops


def _static_hw(x):
    h, w = x.shape[1], x.shape[2]
    return (h, w) if isinstance(h, int) and isinstance(w, int) else None


def _interpolation_matrix(out_size, in_size, dtype):
    """(out_size, in_size) weights of half-pixel bilinear interpolation."""
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


def bilinear_resize(x, size):
    """Bilinear resize of an NHWC tensor to `size` (ints or scalar tensors)."""
    if all(isinstance(s, int) for s in size):
        return ops.image.resize(x, size, interpolation="bilinear")
    in_shape = ops.shape(x)
    rows = _interpolation_matrix(size[0], in_shape[1], x.dtype)
    cols = _interpolation_matrix(size[1], in_shape[2], x.dtype)
    x = ops.einsum("oh,bhwc->bowc", rows, x)
    return ops.einsum("pw,bowc->bopc", cols, x)


@keras.saving.register_keras_serializable(package="kerasseg")
class ResizeToMatch(keras.layers.Layer):
    """Bilinearly resizes its first input to the height and width of the second.

    An identity when both sizes are already known to be equal, so fixed-size
    exports of even-sized inputs carry no resize op at all.
    """

    def call(self, x, reference):
        source, target = _static_hw(x), _static_hw(reference)
        if source is not None and source == target:
            return x
        if target is None:
            shape = ops.shape(reference)
            target = (shape[1], shape[2])
        return ops.cast(bilinear_resize(x, target), self.compute_dtype)

    def compute_output_shape(self, x_shape, reference_shape):
        return (x_shape[0], reference_shape[1], reference_shape[2], x_shape[3])


@keras.saving.register_keras_serializable(package="kerasseg")
class Upsample(keras.layers.Layer):
    """Bilinear upsampling by an integer factor, for any (even unknown) size."""

    def __init__(self, factor=2, **kwargs):
        super().__init__(**kwargs)
        self.factor = int(factor)

    def call(self, x):
        static = _static_hw(x)
        if static is not None:
            target = (static[0] * self.factor, static[1] * self.factor)
        else:
            shape = ops.shape(x)
            target = (shape[1] * self.factor, shape[2] * self.factor)
        return ops.cast(bilinear_resize(x, target), self.compute_dtype)

    def compute_output_shape(self, x_shape):
        scaled = [None if s is None else s * self.factor for s in x_shape[1:3]]
        return (x_shape[0], *scaled, x_shape[3])

    def get_config(self):
        return {**super().get_config(), "factor": self.factor}


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
