"""DenseNet (Huang et al., 2017).

Every layer of a dense block receives the feature maps of *all* earlier
layers of the block, concatenated, and adds only `growth_rate` (32) new
channels. ResNet sums a shortcut into the features; DenseNet keeps them
side by side, so later layers reuse early features directly and gradients
reach every layer through short paths. Each layer is a bottleneck (a 1x1
convolution to 4 x growth, then the 3x3), and the transitions between
blocks halve the channels (compression 0.5) and the resolution: the result
is accurate with few parameters (DenseNet-121: 8.1M).

Layer names and order are keras.applications', whose ImageNet weight files
load unchanged.
"""

from __future__ import annotations

import os

import keras
from keras import layers

from kerasseg.layers import PixelNormalization
from kerasseg.models import backbone
from kerasseg.models.registry import Encoder, register

BLOCKS = {121: (6, 12, 24, 16), 169: (6, 12, 32, 32), 201: (6, 12, 48, 32)}
_BASE = "https://storage.googleapis.com/tensorflow/keras-applications/densenet/"
_HASHES = {
    121: ("9d60b8095a5708f2dcce2bca79d332c7", "30ee3e1110167f948a6b9946edeeb738"),
    169: ("d699b8f76981ab1b30698df4c175e90b", "b8c4d4c20dd625c148057b9ff1c1176b"),
    201: ("1ceb130c1ea1b78c3bf6114dbdfd8807", "c13680b51ded0fb44dff2d8f86ac8bb1"),
}
_BN = dict(epsilon=1.001e-5)


def _pretrained(depth):
    top, notop = _HASHES[depth]
    stem = f"densenet{depth}_weights_tf_dim_ordering_tf_kernels"
    return backbone.PretrainedWeights(_BASE, f"{stem}.h5", top, f"{stem}_notop.h5", notop)


def dense_layer(x, growth_rate, dilation, name):
    """BN-ReLU-1x1 conv (4 x growth) - BN-ReLU-3x3 conv (growth), concatenated to the input."""
    y = layers.BatchNormalization(**_BN, name=f"{name}_0_bn")(x)
    y = layers.Activation("relu", name=f"{name}_0_relu")(y)
    y = layers.Conv2D(4 * growth_rate, 1, use_bias=False, name=f"{name}_1_conv")(y)
    y = layers.BatchNormalization(**_BN, name=f"{name}_1_bn")(y)
    y = layers.Activation("relu", name=f"{name}_1_relu")(y)
    y = layers.Conv2D(growth_rate, 3, padding="same", dilation_rate=dilation, use_bias=False,
                      name=f"{name}_2_conv")(y)
    return layers.Concatenate(name=f"{name}_concat")([x, y])


def transition(x, reduction, stride, name):
    """BN-ReLU-1x1 conv compressing the channels, then 2x2 average pooling (or none when dilated)."""
    x = layers.BatchNormalization(**_BN, name=f"{name}_bn")(x)
    x = layers.Activation("relu", name=f"{name}_relu")(x)
    x = layers.Conv2D(int(x.shape[-1] * reduction), 1, use_bias=False, name=f"{name}_conv")(x)
    if stride == 2:
        return layers.AveragePooling2D(2, strides=2, name=f"{name}_pool")(x)
    return x


def densenet(depth: int = 121, include_top: bool = True, weights: str | os.PathLike | None = None,
             input_tensor: keras.KerasTensor | None = None,
             input_shape: tuple[int | None, int | None, int] | None = None, pooling: str | None = None,
             classes: int = 1000, classifier_activation: str | None = "softmax", features_only: bool = False,
             output_stride: int = 32, blocks: tuple[int, ...] | None = None, growth_rate: int = 32,
             stem_filters: int = 64, name: str | None = None) -> keras.Model:
    """The DenseNet family builder (121, 169, 201), keras.applications arguments plus
    features_only (P1..P5) and output_stride (16 / 8 drop the last transitions' pooling
    and dilate the blocks after them).

    Args:
        depth: 121 (the default), 169 or 201.
        include_top: end in the classifier, global pooling and a `classes`-way Dense layer (True, the
            default), or stop at the last feature map (False).
        weights: None (random initialisation, the default), "imagenet" or the path to an existing weights file.
            "imagenet": keras.applications' weights, for the standard configuration only
            (they need 3 input channels, and classes=1000 with the top).
        input_tensor: an existing Keras tensor to build on instead of a new `keras.Input` (`input_shape` is then
            ignored).
        input_shape: (height, width, channels) of the input; height and width may be None (any size, the
            default: (None, None, 3)), and must be at least 32 pixels.
        pooling: with include_top=False, None (the 4-D feature map, the default), "avg" or "max" (global pooling
            to (N, channels)).
        classes: number of classes of the top's Dense layer (1000, ImageNet's); used with include_top only.
        classifier_activation: activation of the top's Dense layer ("softmax", the default; None for logits).
        features_only: True returns the feature-pyramid model instead (what a segmenter's encoder is): a dict of
            outputs "P1".."P5", Pn at stride 2**n (or at `output_stride` past it). Default False.
        output_stride: 32 (the default), 16 or 8: past it the stages keep their resolution and dilate their
            convolutions instead (atrous convolution), so the receptive field grows as if downsampled and
            pretrained weights stay valid.
        blocks: dense layers per block; None (the default): the depth's, e.g. (6, 12, 24, 16) for 121.
        growth_rate: channels each dense layer adds (32).
        stem_filters: channels of the 7x7 stem convolution (64). `blocks`, `growth_rate` and `stem_filters`
            are the configuration (tiny variants); ImageNet weights need the standard one.
        name: the model's name; None: "densenet{depth}".

    Returns:
        A `keras.Model` taking (N, H, W, 3) RGB pixels in [0, 255] (the preprocessing is inside the model) and
        giving (N, classes) class probabilities with the top, without it the (N, h, w, channels) last feature
        map or, with `pooling`, (N, channels); with `features_only` the dict {"P1": ..., "P5": ...}.

    Raises:
        ValueError: an unknown `depth`;
            `weights` neither None, "imagenet" nor an existing file; "imagenet" with classes != 1000 and the top,
            or without 3 input channels; an unknown `pooling` or `output_stride`; an input smaller than
            32 pixels.

    Example:
        ```python
        model = kerasseg.models.densenet121(weights="imagenet")
        pyramid = kerasseg.models.densenet(depth=169, features_only=True, output_stride=16)
        ```
    """
    if depth not in BLOCKS:
        raise ValueError(f"depth must be one of {tuple(BLOCKS)}. Received: depth={depth!r}")
    standard = blocks is None and growth_rate == 32 and stem_filters == 64
    blocks = blocks or BLOCKS[depth]
    name = name or f"densenet{depth}"
    backbone.check_classifier_args(weights, include_top, classes, pooling, output_stride)
    inputs = backbone.classifier_input(input_shape, input_tensor, weights, min_size=32)
    pyramid = backbone.Pyramid(output_stride)

    x = PixelNormalization("torch", name="preprocess")(inputs)
    x = layers.ZeroPadding2D(3, name="conv1_pad")(x)
    x = layers.Conv2D(stem_filters, 7, strides=2, use_bias=False, name="conv1_conv")(x)
    x = layers.BatchNormalization(**_BN, name="conv1_bn")(x)
    x = layers.Activation("relu", name="conv1_relu")(x)
    pyramid.close(x)
    x = layers.ZeroPadding2D(1, name="pool1_pad")(x)
    x = layers.MaxPooling2D(3, strides=2, name="pool1")(x)
    dilation = 1
    for stage, count in enumerate(blocks, start=2):
        for i in range(count):
            x = dense_layer(x, growth_rate, dilation, name=f"conv{stage}_block{i + 1}")
        if stage < 5:
            stride, dilation = pyramid.close(x)
            x = transition(x, 0.5, stride, name=f"pool{stage}")
    x = layers.BatchNormalization(**_BN, name="bn")(x)
    x = layers.Activation("relu", name="relu")(x)
    pyramid.close(x)

    model = backbone.finish(inputs, x, pyramid, include_top=include_top, pooling=pooling, classes=classes,
                            classifier_activation=classifier_activation, features_only=features_only, name=name)
    return backbone.load_weights(model, weights, _pretrained(depth) if standard else None,
                                 include_top and not features_only)


__all__ = ["densenet"]


def _encoder(depth, blocks=None, growth_rate=32, stem_filters=64):
    """P1 the stem; P2..P4 each dense block's output before its transition halves it; P5 the last block."""
    channels, width = {"P1": stem_filters}, stem_filters
    for stage, count in enumerate(blocks or BLOCKS[depth], start=2):
        width += count * growth_rate
        channels[f"P{stage}"] = width
        width //= 2
    return Encoder(channels, pretrained=None if blocks else _pretrained(depth))


@register("classification", encoder=_encoder(121))
def densenet121(**kwargs):
    """DenseNet-121: blocks (6, 12, 24, 16), growth 32, 8.1M parameters."""
    return densenet(**{"depth": 121, **kwargs})


@register("classification", encoder=_encoder(169))
def densenet169(**kwargs):
    """DenseNet-169: blocks (6, 12, 32, 32), 14.3M parameters."""
    return densenet(**{"depth": 169, **kwargs})


@register("classification", encoder=_encoder(201))
def densenet201(**kwargs):
    """DenseNet-201: blocks (6, 12, 48, 32), 20.2M parameters."""
    return densenet(**{"depth": 201, **kwargs})


@register("classification", tiny=True, encoder=_encoder(121, (1, 1, 1, 1), 4, 8))
def densenet_tiny(**kwargs):
    """A tiny DenseNet (one layer per block, growth 4) for tests."""
    config = dict(depth=121, blocks=(1, 1, 1, 1), growth_rate=4, stem_filters=8, name="densenet_tiny")
    return densenet(**{**config, **kwargs})
