"""Blocks shared by several families."""

import keras
from keras import layers, ops


def conv_bn_act(x, filters, kernel_size=3, strides=1, dilation_rate=1, padding="same",
                batch_norm=True, activation="relu", use_bias=None, bn_epsilon=1e-3, name=None):
    """Conv2D, then (optionally) batch norm, then the activation.

    With batch norm the convolution has no bias: the norm's offset replaces it,
    and the converter folds the norm into the convolution on export. Momentum
    0.9 (PyTorch's 0.1) lets the moving statistics that inference uses catch up
    within a few hundred steps; Keras' default 0.99 lags far behind in short runs.
    `use_bias` (default: only without batch norm) and `bn_epsilon` let a family
    match the layers of published weights (keras.applications' ResNet has both).
    """
    use_bias = not batch_norm if use_bias is None else use_bias
    x = layers.Conv2D(filters, kernel_size, strides=strides, padding=padding,
                      dilation_rate=dilation_rate, use_bias=use_bias,
                      kernel_initializer="he_normal", name=f"{name}_conv")(x)
    if batch_norm:
        x = layers.BatchNormalization(momentum=0.9, epsilon=bn_epsilon, name=f"{name}_bn")(x)
    if activation:
        x = layers.Activation(activation, name=f"{name}_{_act_name(activation)}")(x)
    return x


def _act_name(activation):
    return activation if isinstance(activation, str) else "act"


def image_input(input_shape=None, input_tensor=None, name="image"):
    """The model's pixel input: RGB in [0, 255], any height and width by default."""
    if input_tensor is not None:
        return input_tensor
    shape = tuple(input_shape) if input_shape is not None else (None, None, 3)
    if len(shape) != 3:
        raise ValueError(
            "input_shape must be (height, width, channels); height and width may be None. "
            f"Received: input_shape={input_shape}"
        )
    return keras.Input(shape=shape, name=name)


def scale_pixels(x, name="preprocess"):
    """Maps raw pixels in [0, 255] to [0, 1] inside the model (pixels in, logits out)."""
    return layers.Rescaling(1.0 / 255.0, name=name)(x)


@keras.saving.register_keras_serializable(package="kerasseg")
class ZeroPadShortcut(keras.layers.Layer):
    """The parameter-free shortcut of He et al.'s option A: the input subsampled by `stride` (every
    stride-th pixel, as a strided 1x1 convolution with an identity kernel would) and its channels
    zero-padded to `channels`. ResNet's CIFAR networks use it where a stage doubles the channels."""

    def __init__(self, stride, channels, **kwargs):
        super().__init__(**kwargs)
        self.stride, self.channels = int(stride), int(channels)

    def call(self, x):
        x = x[:, :: self.stride, :: self.stride, :]
        return ops.pad(x, [(0, 0), (0, 0), (0, 0), (0, self.channels - x.shape[-1])])

    def compute_output_shape(self, shape):
        smaller = [None if s is None else -(-s // self.stride) for s in shape[1:3]]
        return (shape[0], *smaller, self.channels)

    def get_config(self):
        return {**super().get_config(), "stride": self.stride, "channels": self.channels}
