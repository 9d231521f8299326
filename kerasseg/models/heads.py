"""What every segmenter ends with: float32 per-pixel logits (or probabilities) at the input's size."""

import keras
from keras import layers

from kerasseg.layers import ResizeToMatch

ACTIVATIONS = (None, "softmax", "sigmoid")


def check_segmenter_args(classes, activation):
    """The checks every segmenter runs on its head's arguments before it builds anything."""
    if activation not in ACTIVATIONS:
        raise ValueError(f"activation must be one of {ACTIVATIONS}. Received: activation={activation!r}")
    if not isinstance(classes, int) or classes < 1:
        raise ValueError(f"classes must be a positive integer. Received: classes={classes!r}")
    if classes == 1 and activation == "softmax":
        raise ValueError("a softmax over one channel is 1 everywhere: a binary segmenter (classes=1) ends in its "
                         "foreground logit (activation=None) or a sigmoid. Received: classes=1, activation='softmax'")


def segmenter(inputs, x, classes, activation=None, *, name, edge=False, scores=False, resize=True,
              head="head"):
    """The segmentation model from `inputs` to the features `x`, ended by the one head every segmenter shares.

    1. A 1x1 convolution to `classes` logits per pixel ("{head}_logits"),
       unless `scores`: `x` already holds the class scores (DeepLab v2's
       summed ASPP branches, FCN's fused score maps).
    2. Bilinear resizing to the input's size ("logits"), unless `resize` is
       False: U-Net's decoder ends at the input's size already, or, with
       valid padding, deliberately smaller (the paper's 388 for 572).
    3. The optional softmax or sigmoid ("head_softmax" / "head_sigmoid").

    All three in float32: under mixed precision the body runs in (b)float16,
    but logits and the loss stay float32, since softmax and cross-entropy
    lose too much precision otherwise.
    """
    check_segmenter_args(classes, activation)
    if not scores:
        x = layers.Conv2D(classes, 1, dtype="float32", name=f"{head}_logits")(x)
    if resize:
        x = ResizeToMatch(edge=edge, dtype="float32", name="logits")(x, inputs)
    if activation:
        x = layers.Activation(activation, dtype="float32", name=f"head_{activation}")(x)
    return keras.Model(inputs, x, name=name)
