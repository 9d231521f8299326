"""What every segmenter ends with: float32 per-pixel logits (or probabilities)."""

import keras
from keras import layers

from kerasseg.layers import ResizeToMatch

ACTIVATIONS = (None, "softmax", "sigmoid")


def check_head_args(classes, activation):
    if activation not in ACTIVATIONS:
        raise ValueError(f"activation must be one of {ACTIVATIONS}. Received: activation={activation!r}")
    if not isinstance(classes, int) or classes < 1:
        raise ValueError(f"classes must be a positive integer. Received: classes={classes!r}")


def output_activation(x, activation=None, name="head"):
    """Optional softmax / sigmoid over float32 logits (the last layer of every segmenter)."""
    if activation:
        x = layers.Activation(activation, dtype="float32", name=f"{name}_{activation}")(x)
    return x


def segmentation_head(x, classes, activation=None, name="head"):
    """1x1 convolution to `classes` per-pixel logits, always in float32.

    Under mixed precision the body runs in (b)float16, but logits and the loss
    stay float32: softmax and cross-entropy lose too much precision otherwise.
    """
    check_head_args(classes, activation)
    x = layers.Conv2D(classes, 1, dtype="float32", name=f"{name}_logits")(x)
    return output_activation(x, activation, name)


def segmentation_model(inputs, logits, activation=None, name=None, edge=False):
    """The segmenter: `logits` resized (bilinear, float32) to the input's size, then the activation."""
    logits = ResizeToMatch(edge=edge, dtype="float32", name="logits")(logits, inputs)
    return keras.Model(inputs, output_activation(logits, activation), name=name)
