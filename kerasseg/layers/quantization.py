"""The layers of quantization-aware training: TFLite's int8 arithmetic, simulated in float.

TFLite's full-integer model stores each weight tensor as int8, symmetric,
one scale per output channel (`scale = max|w| / 127`), with batch
normalization folded into the convolution before it; and each activation
tensor it keeps as int8 with one scale and zero point, from the tensor's
[min, max] range (`scale = (max - min) / 255`, 0 exactly representable).
`QuantizedConv` and `FakeQuant` round to those grids in the forward pass and
let gradients through unchanged (the straight-through estimator), so
training learns weights that survive the rounding. A batch normalization
that no convolution absorbs is what the file makes of it, a multiplication
and an addition by per-channel constants (`ChannelScale`, `ChannelShift`),
each constant rounded to 8 bits per tensor as the file stores it. Sigmoid,
softmax and tanh outputs have fixed scales in the file (1/256, 1/256, 1/128),
which `FixedScaleActivation` rounds to. All are backend-agnostic
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


NEAR_ZERO_RANGE = 1e-6


def effective_range(low, high):
    """The range TFLite's quantizer uses for a learned [low, high]: one of width NEAR_ZERO_RANGE or less (a
    tensor that is zero, as a dead ReLU's) is widened to at least [-5e-7, 5e-7] (its ExpandVerySmallRange)."""
    low, high = ops.convert_to_tensor(low), ops.convert_to_tensor(high)  # (a variable's value, on every backend)
    small = (high - low) <= NEAR_ZERO_RANGE
    half = NEAR_ZERO_RANGE / 2
    return ops.where(small, ops.minimum(low, -half), low), ops.where(small, ops.maximum(high, half), high)


@keras.saving.register_keras_serializable(package="kerasseg")
class FakeQuant(keras.layers.Layer):
    """An int8 activation tensor: values rounded to the 256 levels of [min, max] (0 exact), clipped outside.

    The range starts where `set_range` puts it (the float model's min and max
    on calibration images, as post-training quantization would, or their
    percentiles) and, while training, follows an exponential moving average of
    each batch's min and max (`decay`; 1.0: it stays where it was set).
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
                observed.append(self.observe(ops.convert_to_numpy(x)))
            return x
        if training and track and self.decay < 1.0:
            low = ops.minimum(ops.cast(ops.min(x), "float32"), 0.0)
            high = ops.maximum(ops.cast(ops.max(x), "float32"), 0.0)
            self.range_min.assign(self.decay * self.range_min + (1 - self.decay) * ops.stop_gradient(low))
            self.range_max.assign(self.decay * self.range_max + (1 - self.decay) * ops.stop_gradient(high))
        return keras.quantizers.fake_quant_with_min_max_vars(x, *effective_range(self.range_min, self.range_max),
                                                             num_bits=8)

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


def quantize_per_tensor(values):
    """`values` rounded to the 256 levels of [min(values, 0), max(values, 0)]: how the file stores the constant
    operand of a multiplication or an addition (one scale for the tensor); gradients pass straight through."""
    low = ops.stop_gradient(ops.minimum(ops.min(values), 0.0))
    high = ops.stop_gradient(ops.maximum(ops.max(values), 0.0))
    return keras.quantizers.fake_quant_with_min_max_vars(values, low, ops.maximum(high, low + 1e-12), num_bits=8)


class _ChannelConstant(keras.layers.Layer):
    """`x` combined with one trainable constant per channel, the constant rounded as the file stores it
    (quantized=False: the float constant, as in the model an export converts)."""

    def __init__(self, quantized=True, **kwargs):
        super().__init__(**kwargs)
        self.quantized = bool(quantized)

    def build(self, input_shape):
        self.constant = self.add_weight(name="constant", shape=(input_shape[-1],), initializer=self.initial)

    def value(self):
        return quantize_per_tensor(self.constant) if self.quantized else self.constant

    def get_config(self):
        return {**super().get_config(), "quantized": self.quantized}


@keras.saving.register_keras_serializable(package="kerasseg")
class ChannelScale(_ChannelConstant):
    """`x * scale`, one scale per channel: the first half of a batch normalization in the file (MUL)."""

    initial = "ones"

    def call(self, x):
        return x * ops.cast(self.value(), x.dtype)


@keras.saving.register_keras_serializable(package="kerasseg")
class ChannelShift(_ChannelConstant):
    """`x + shift`, one shift per channel: the second half of a batch normalization in the file (ADD)."""

    initial = "zeros"

    def call(self, x):
        return x + ops.cast(self.value(), x.dtype)


def batch_norm_halves(batch_norm, quantized=True, names=None):
    """(ChannelScale, ChannelShift) computing `batch_norm` at inference, from its moving statistics:
    x * gamma / sqrt(variance + epsilon) + (beta - mean * gamma / sqrt(variance + epsilon)); `names`: theirs
    (default: the norm's name + "_scale", "_shift")."""
    factor = ops.rsqrt(batch_norm.moving_variance + batch_norm.epsilon)
    if batch_norm.scale:
        factor = factor * batch_norm.gamma
    shift = -batch_norm.moving_mean * factor + (batch_norm.beta if batch_norm.center else 0.0)
    names = names or (f"{batch_norm.name}_scale", f"{batch_norm.name}_shift")
    halves = (ChannelScale(quantized, name=names[0]), ChannelShift(quantized, name=names[1]))
    for layer, value in zip(halves, (factor, shift)):
        layer.build((None, value.shape[0]))
        layer.constant.assign(ops.convert_to_numpy(value))
    return halves


# hard-sigmoid is two ops in the file, relu6(x + 3) (after a convolution: +3 in its bias, ReLU6 fused) and a MUL
# by 1/6 (HardSigmoidStep); hard-swish is one, HARD_SWISH; each output an int8 tensor with a range of its own
HARD_ACTIVATIONS = ("hard_sigmoid", "hard_silu", "hard_swish")

# int8 TFLite's fixed output ranges: LOGISTIC and SOFTMAX scale 1/256 (zero point -128), TANH 1/128 (0)
FIXED_RANGES = {"sigmoid": (0.0, 255 / 256), "softmax": (0.0, 255 / 256), "tanh": (-1.0, 127 / 128)}
# swish is LOGISTIC then MUL in the file: the sigmoid rounded to its fixed scale, the product to a learned range
FIXED_SCALE_ACTIVATIONS = (*FIXED_RANGES, "swish", "silu")


@keras.saving.register_keras_serializable(package="kerasseg")
class FixedScaleActivation(keras.layers.Layer):
    """An activation whose int8 kernel writes a fixed scale (FIXED_RANGES), rounded to it; swish / silu is
    `x * sigmoid(x)` with the sigmoid rounded so (its product is rounded by the FakeQuant after it)."""

    def __init__(self, activation, **kwargs):
        super().__init__(**kwargs)
        if activation not in FIXED_SCALE_ACTIVATIONS:
            raise ValueError(f"activation must be one of {FIXED_SCALE_ACTIVATIONS}. Received: {activation!r}")
        self.activation = activation

    def call(self, x):
        if self.activation in ("swish", "silu"):
            return x * _fixed(ops.sigmoid(x), "sigmoid")
        return _fixed(keras.activations.get(self.activation)(x), self.activation)

    def get_config(self):
        return {**super().get_config(), "activation": self.activation}


def _fixed(x, kind):
    low, high = FIXED_RANGES[kind]
    return keras.quantizers.fake_quant_with_min_max_vars(x, low, high, num_bits=8)


@keras.saving.register_keras_serializable(package="kerasseg")
class HardSigmoidStep(keras.layers.Layer):
    """One of hard-sigmoid's two ops in TFLite's int8 file: `step="shift"` is relu6(x + 3), `step="scale"`
    x / 6 (hard_sigmoid(x) = relu6(x + 3) / 6, Keras's and MobileNetV3's), so that the int8 tensor between
    them can be rounded as the file rounds it."""

    STEPS = ("shift", "scale")

    def __init__(self, step, **kwargs):
        super().__init__(**kwargs)
        if step not in self.STEPS:
            raise ValueError(f"step must be one of {self.STEPS}. Received: {step!r}")
        self.step = step

    def call(self, x):
        return ops.relu6(x + 3.0) if self.step == "shift" else x * (1.0 / 6.0)

    def get_config(self):
        return {**super().get_config(), "step": self.step}
