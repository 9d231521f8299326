"""MobileNetV2 (Sandler et al., 2018): the edge backbone.

A depthwise-separable convolution splits a 3x3 convolution into a per-channel
3x3 (depthwise) and a 1x1 mixing step (pointwise): about 8-9x fewer
multiply-adds. MobileNetV2's inverted residual block expands the channels
6x with a 1x1, filters them depthwise, and projects back to a thin
*linear* bottleneck (no activation: ReLU on few channels destroys
information); the shortcut joins the thin ends. ReLU6 keeps activations in a
range that quantizes well, and every op maps to int8 kernels and the Edge TPU.

Layer names and order are keras.applications', whose ImageNet weight files
(alpha 0.35..1.4, 224x224) load unchanged.
"""

from __future__ import annotations

import os

import keras
from keras import layers

from kerasseg.layers import PixelNormalization
from kerasseg.models import backbone
from kerasseg.models.registry import Encoder, register

# (expansion, filters, repeats, first stride) per stage, Table 2 of the paper
BLOCKS = ((1, 16, 1, 1), (6, 24, 2, 2), (6, 32, 3, 2), (6, 64, 4, 2), (6, 96, 3, 1), (6, 160, 3, 2),
          (6, 320, 1, 1))
ALPHAS = (0.35, 0.5, 0.75, 1.0, 1.3, 1.4)
_BASE = "https://storage.googleapis.com/tensorflow/keras-applications/mobilenet_v2/"
_BN_EPSILON = 1e-3


def make_divisible(value, divisor=8):
    """Rounds channels to a multiple of 8 (hardware-friendly), never below 90% of `value`."""
    new = max(divisor, int(value + divisor / 2) // divisor * divisor)
    return new + divisor if new < 0.9 * value else new


def _pretrained(alpha):
    stem = f"mobilenet_v2_weights_tf_dim_ordering_tf_kernels_{float(alpha)}_224"
    return backbone.PretrainedWeights(_BASE, f"{stem}.h5", None, f"{stem}_no_top.h5", None)


def inverted_residual(x, expansion, filters, stride, dilation, block_id, bn_momentum=0.999):
    bn = dict(epsilon=_BN_EPSILON, momentum=bn_momentum)
    prefix = f"block_{block_id}_" if block_id else "expanded_conv_"
    in_channels = x.shape[-1]
    y = x
    if block_id:
        y = layers.Conv2D(expansion * in_channels, 1, padding="same", use_bias=False, name=f"{prefix}expand")(y)
        y = layers.BatchNormalization(**bn, name=f"{prefix}expand_BN")(y)
        y = layers.ReLU(6.0, name=f"{prefix}expand_relu")(y)
    # "same" padding equals keras.applications' explicit correct_pad for any size
    y = layers.DepthwiseConv2D(3, strides=stride, padding="same", dilation_rate=dilation, use_bias=False,
                               name=f"{prefix}depthwise")(y)
    y = layers.BatchNormalization(**bn, name=f"{prefix}depthwise_BN")(y)
    y = layers.ReLU(6.0, name=f"{prefix}depthwise_relu")(y)
    y = layers.Conv2D(filters, 1, padding="same", use_bias=False, name=f"{prefix}project")(y)
    y = layers.BatchNormalization(**bn, name=f"{prefix}project_BN")(y)
    if stride == 1 and in_channels == filters:
        return layers.Add(name=f"{prefix}add")([x, y])
    return y


def mobilenet_v2(alpha: float = 1.0, include_top: bool = True, weights: str | os.PathLike | None = None,
                 input_tensor: keras.KerasTensor | None = None,
                 input_shape: tuple[int | None, int | None, int] | None = None, pooling: str | None = None,
                 classes: int = 1000, classifier_activation: str | None = "softmax", features_only: bool = False,
                 output_stride: int = 32, blocks: tuple = BLOCKS, last_filters: int = 1280,
                 bn_momentum: float = 0.999, name: str | None = None) -> keras.Model:
    """MobileNetV2 with width multiplier `alpha` (0.35, 0.5, 0.75, 1.0, 1.3, 1.4 have ImageNet weights).

    features_only gives P1 (stride 2, 16*alpha channels) .. P5 (stride 32,
    1280); output_stride 16 / 8 dilates the last stages (DeepLab v3+ edge).
    bn_momentum: 0.999 as keras.applications (fine-tuning); from scratch on
    a few thousand steps, 0.9 lets the running statistics catch up with the
    weights (at 0.999 they average over ~1000 steps and validation suffers).

    Args:
        alpha: width multiplier of every block's channels (1.0).
        include_top: end in the classifier, global pooling and a `classes`-way Dense layer (True, the
            default), or stop at the last feature map (False).
        weights: None (random initialisation, the default), "imagenet" or the path to an existing weights file.
            "imagenet": keras.applications' weights for the alphas above, standard configuration
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
        blocks: the stages (expansion, filters, repeats, stride); the default is the paper's.
        last_filters: channels of the last 1x1 convolution, P5 (1280). `blocks` and `last_filters` are the
            configuration (tiny variants).
        bn_momentum: the batch norms' momentum (0.999; see above).
        name: the model's name; None: "mobilenetv2_{alpha:0.2f}" (e.g. "mobilenetv2_1.00").

    Returns:
        A `keras.Model` taking (N, H, W, 3) RGB pixels in [0, 255] (the preprocessing is inside the model) and
        giving (N, classes) class probabilities with the top, without it the (N, h, w, channels) last feature
        map or, with `pooling`, (N, channels); with `features_only` the dict {"P1": ..., "P5": ...}.

    Raises:
        ValueError: weights="imagenet" with an alpha that has none;
            `weights` neither None, "imagenet" nor an existing file; "imagenet" with classes != 1000 and the top,
            or without 3 input channels; an unknown `pooling` or `output_stride`; an input smaller than
            32 pixels.

    Example:
        ```python
        model = kerasseg.models.mobilenet_v2(alpha=0.35, weights="imagenet")
        pyramid = kerasseg.models.mobilenet_v2(features_only=True, output_stride=16)  # DeepLab v3+ edge
        ```
    """
    bn = dict(epsilon=_BN_EPSILON, momentum=bn_momentum)
    backbone.check_classifier_args(weights, include_top, classes, pooling, output_stride)
    if weights == "imagenet" and alpha not in ALPHAS:
        raise ValueError(f"ImageNet weights exist for alpha in {ALPHAS}. Received: alpha={alpha}")
    inputs = backbone.classifier_input(input_shape, input_tensor, weights, min_size=32)
    name = name or f"mobilenetv2_{alpha:0.2f}"

    x = PixelNormalization("tf", name="preprocess")(inputs)
    x = layers.Conv2D(make_divisible(32 * alpha), 3, strides=2, padding="same", use_bias=False, name="Conv1")(x)
    x = layers.BatchNormalization(**bn, name="bn_Conv1")(x)
    x = layers.ReLU(6.0, name="Conv1_relu")(x)
    pyramid, dilation, block_id = backbone.Pyramid(output_stride), 1, 0
    for expansion, filters, repeats, stride in blocks:
        if stride == 2:
            stride, dilation = pyramid.close(x)
        for i in range(repeats):
            x = inverted_residual(x, expansion, make_divisible(int(filters * alpha)), stride if i == 0 else 1,
                                  dilation, block_id, bn_momentum)
            block_id += 1
    last = make_divisible(last_filters * alpha) if alpha > 1.0 else last_filters
    x = layers.Conv2D(last, 1, use_bias=False, name="Conv_1")(x)
    x = layers.BatchNormalization(**bn, name="Conv_1_bn")(x)
    x = layers.ReLU(6.0, name="out_relu")(x)
    pyramid.close(x)

    model = backbone.finish(inputs, x, pyramid, include_top=include_top, pooling=pooling, classes=classes,
                            classifier_activation=classifier_activation, features_only=features_only, name=name)
    standard = blocks == BLOCKS and last_filters == 1280 and alpha in ALPHAS
    return backbone.load_weights(model, weights, _pretrained(alpha) if standard else None,
                                 include_top and not features_only)


def _encoder(blocks=BLOCKS, last_filters=1280, pretrained=None):
    """P1..P4 the input of each stride-2 stage (alpha 1.0), P5 the last 1x1 convolution."""
    levels = [filters for (_, filters, _, stride), (_, _, _, next_stride) in zip(blocks, blocks[1:])
              if next_stride == 2]
    channels = {f"P{i}": make_divisible(filters) for i, filters in enumerate(levels, start=1)}
    return Encoder({**channels, "P5": last_filters}, pretrained=pretrained)


register("classification", encoder=_encoder(pretrained={alpha: _pretrained(alpha) for alpha in ALPHAS}))(mobilenet_v2)
_TINY_BLOCKS = ((1, 8, 1, 1), (2, 8, 1, 2), (2, 8, 1, 2), (2, 16, 1, 2), (2, 16, 1, 1), (2, 32, 1, 2), (2, 32, 1, 1))


@register("classification", tiny=True, encoder=_encoder(_TINY_BLOCKS, 64))
def mobilenet_v2_tiny(**kwargs):
    """A tiny MobileNetV2 (one block per stage, expansion 2) for tests."""
    config = dict(alpha=1.0, blocks=_TINY_BLOCKS, last_filters=64, name="mobilenet_v2_tiny")
    return mobilenet_v2(**{**config, **kwargs})
