"""The layers of quantization-aware training: TFLite's int8 arithmetic, simulated in float.

TFLite's full-integer model stores each weight tensor as int8, symmetric,
one scale per output channel (`scale = max|w| / 127`), with batch
normalization folded into the convolution before it; and each activation
tensor it keeps as int8 with one scale and zero point, from the tensor's
[min, max] range (`scale = (max - min) / 255`, 0 exactly representable).
`QuantizedConv` and `FakeQuant` round to those grids in the forward pass and
let gradients through unchanged (the straight-through estimator), so
training learns weights that survive the rounding. Both are backend-agnostic
(`keras.quantizers.fake_quant_with_min_max_vars`, which on TensorFlow is the
FakeQuant op itself).
"""

import math

import keras
from keras import ops


def _output_axes(conv):
    """The kernel axes that index a convolution's output channels (depthwise: input channel x multiplier)."""
    name = type(conv).__name__
    return {"Conv2D": (3,), "DepthwiseConv2D": (2, 3), "Conv2DTranspose": (2,)}[name]


def quantize_weights_per_channel(kernel, axes):
    """`kernel` rounded to int8 per output channel (the channels span `axes`), symmetric, as TFLite
    stores it: narrow range [-127, 127], scale max|w| / 127; gradients pass straight through."""
    reduce = tuple(a for a in range(len(kernel.shape)) if a not in axes)
    bound = ops.stop_gradient(ops.maximum(ops.max(ops.abs(kernel), axis=reduce), 1e-12))
    shape = kernel.shape
    channels = math.prod(shape[a] for a in axes)
    # one channel axis, last: the layout fake_quant's per-channel form takes
    order = [a for a in range(len(shape)) if a not in axes] + list(axes)
    flat = ops.reshape(ops.transpose(kernel, order), (*[shape[a] for a in reduce], channels))
    bound = ops.reshape(bound, (channels,))
    flat = keras.quantizers.fake_quant_with_min_max_vars(flat, -bound, bound, num_bits=8, narrow_range=True,
                                                        axis=-1)
    inverse = [order.index(a) for a in range(len(shape))]
    return ops.transpose(ops.reshape(flat, [shape[a] for a in order]), inverse)


@keras.saving.register_keras_serializable(package="kerasseg")
class FakeQuant(keras.layers.Layer):
    """An int8 activation tensor: values rounded to the 256 levels of [min, max] (0 exact), clipped outside.

    The range starts where `set_range` puts it (the float model's min and max
    on calibration images, as post-training quantization would) and, while
    training, follows an exponential moving average of each batch's min and
    max (`decay`).
    """

    def __init__(self, decay=0.99, **kwargs):
        super().__init__(**kwargs)
        self.decay = float(decay)

    def build(self, input_shape):
        self.range_min = self.add_weight(name="range_min", shape=(), initializer="zeros", trainable=False)
        self.range_max = self.add_weight(name="range_max", shape=(), initializer="zeros", trainable=False)

    def set_range(self, low, high):
        self.range_min.assign(min(float(low), 0.0))
        self.range_max.assign(max(float(high), 0.0))

    def call(self, x, training=False, track=True):
        """`track=False`: this call rounds with the range and neither calibrates nor updates it (a range
        shared by several tensors follows one of them)."""
        observed = getattr(self, "observed", None)
        if observed is not None:  # kerasseg.qat's calibration, eager: values pass through unrounded
            if track:
                values = ops.convert_to_numpy(x)
                observed[:] = min(observed[0], values.min()), max(observed[1], values.max())
            return x
        if training and track:
            low = ops.minimum(ops.cast(ops.min(x), "float32"), 0.0)
            high = ops.maximum(ops.cast(ops.max(x), "float32"), 0.0)
            self.range_min.assign(self.decay * self.range_min + (1 - self.decay) * ops.stop_gradient(low))
            self.range_max.assign(self.decay * self.range_max + (1 - self.decay) * ops.stop_gradient(high))
        return keras.quantizers.fake_quant_with_min_max_vars(x, self.range_min, self.range_max, num_bits=8)

    def get_config(self):
        return {**super().get_config(), "decay": self.decay}


@keras.saving.register_keras_serializable(package="kerasseg")
class QuantizedConv(keras.layers.Layer):
    """A convolution (Conv2D, DepthwiseConv2D or Conv2DTranspose, given as `conv`, its serialized
    config) with the batch normalization that followed it (`batch_norm`: its config, or None) folded in,
    as TFLite folds it: kernel * gamma / sqrt(variance + epsilon) and the shifted bias, from the frozen
    moving statistics; the folded kernel rounded to int8 per output channel. `folded()` gives the float
    kernel and bias an export writes (already on the int8 grid, so TFLite's own rounding keeps them)."""

    def __init__(self, conv, batch_norm=None, **kwargs):
        super().__init__(**kwargs)
        self.conv_config, self.batch_norm_config = conv, batch_norm
        self.conv = keras.layers.deserialize(conv)
        self.batch_norm = None if batch_norm is None else keras.layers.deserialize(batch_norm)

    def build(self, input_shape):
        if not self.conv.built:
            self.conv.build(input_shape)
        if self.batch_norm is not None and not self.batch_norm.built:
            self.batch_norm.build(self.conv.compute_output_shape(input_shape))

    def folded(self, quantized=True):
        conv, bn = self.conv, self.batch_norm
        axes = _output_axes(conv)
        channel_shape = [conv.kernel.shape[a] for a in axes]
        kernel = conv.kernel
        channels = math.prod(channel_shape)
        bias = conv.bias if conv.use_bias else ops.zeros((channels,))
        if bn is not None:
            factor = ops.rsqrt(bn.moving_variance + bn.epsilon)
            if bn.scale:
                factor = factor * bn.gamma
            bias = (bias - bn.moving_mean) * factor + (bn.beta if bn.center else 0.0)
            broadcast = [1] * len(kernel.shape)
            for a, size in zip(axes, channel_shape):
                broadcast[a] = size
            kernel = kernel * ops.reshape(factor, broadcast)
        if quantized:
            kernel = quantize_weights_per_channel(kernel, axes)
        return kernel, bias

    def call(self, x):
        kernel, bias = self.folded()
        conv = self.conv
        kind = type(conv).__name__
        if kind == "Conv2D":
            y = conv.convolution_op(x, kernel)
        elif kind == "DepthwiseConv2D":
            y = ops.depthwise_conv(x, kernel, strides=conv.strides, padding=conv.padding,
                                   dilation_rate=conv.dilation_rate, data_format=conv.data_format)
        else:
            y = ops.conv_transpose(x, kernel, strides=conv.strides, padding=conv.padding,
                                   output_padding=conv.output_padding, dilation_rate=conv.dilation_rate,
                                   data_format=conv.data_format)
        y = y + ops.cast(bias, y.dtype)
        return conv.activation(y) if conv.activation is not None else y

    def compute_output_shape(self, input_shape):
        return self.conv.compute_output_shape(input_shape)

    def get_config(self):
        return {**super().get_config(), "conv": self.conv_config, "batch_norm": self.batch_norm_config}
