"""VGG-16 and VGG-19 (Simonyan and Zisserman, 2014).

Only 3x3 convolutions, stacked: two 3x3 layers see a 5x5 window and three
see 7x7, with fewer parameters and more non-linearities than one large
kernel. Depth comes from repeating the same simple block, which is why VGG
(with ResNet) became the default backbone of detection and segmentation
(FCN and DeepLab v1 are built on VGG-16).

Layer names and order are keras.applications', whose ImageNet weight files
load unchanged. The top (flatten, fc1, fc2: 4096 each) needs a fixed 224x224
input; without it the network takes any size.
"""

from __future__ import annotations

import os

import keras
from keras import layers

from kerasseg.layers import PixelNormalization
from kerasseg.models import backbone
from kerasseg.models.registry import Encoder, register

CONFIGS = {16: (2, 2, 3, 3, 3), 19: (2, 2, 4, 4, 4)}
_BASE = "https://storage.googleapis.com/tensorflow/keras-applications/vgg16/"
_BASE19 = "https://storage.googleapis.com/tensorflow/keras-applications/vgg19/"
PRETRAINED = {
    16: backbone.PretrainedWeights(_BASE, "vgg16_weights_tf_dim_ordering_tf_kernels.h5",
                                   "64373286793e3c8b2b4e3219cbf3544b",
                                   "vgg16_weights_tf_dim_ordering_tf_kernels_notop.h5",
                                   "6d6bbae143d832006294945121d1f1fc"),
    19: backbone.PretrainedWeights(_BASE19, "vgg19_weights_tf_dim_ordering_tf_kernels.h5",
                                   "cbe5617147190e668d6c5d5026f83318",
                                   "vgg19_weights_tf_dim_ordering_tf_kernels_notop.h5",
                                   "253f8cb515780f3b799900260a226db6"),
}


def vgg(depth: int = 16, include_top: bool = True, weights: str | os.PathLike | None = None,
        input_tensor: keras.KerasTensor | None = None, input_shape: tuple[int | None, int | None, int] | None = None,
        pooling: str | None = None, classes: int = 1000, classifier_activation: str | None = "softmax",
        features_only: bool = False, output_stride: int = 32, widths: tuple[int, ...] = (64, 128, 256, 512, 512),
        convs: tuple[int, ...] | None = None, fc_units: int = 4096, name: str | None = None) -> keras.Model:
    """The VGG family builder.

    Takes keras.applications' arguments and more.

    Args:
        depth: 16 (the default) or 19.
        include_top: end in the classifier, global pooling and a `classes`-way Dense layer (True, the
            default), or stop at the last feature map (False).
        weights: None (random initialisation, the default), "imagenet" or the path to an existing weights file.
            "imagenet": keras.applications' published ImageNet weights, downloaded once and cached
            (they need 3 input channels, and classes=1000 with the top).
        input_tensor: an existing Keras tensor to build on instead of a new `keras.Input` (`input_shape` is then
            ignored).
        input_shape: (height, width, channels) of the input; height and width may be None (any size, the
            default: (None, None, 3)), and must be at least 32 pixels.
            With include_top (and no features_only) the input size must be fixed: the top flattens the
            feature map; None then means (224, 224, 3).
        pooling: with include_top=False, None (the 4-D feature map, the default), "avg" or "max" (global pooling
            to (N, channels)).
        classes: number of classes of the top's Dense layer (1000, ImageNet's); used with include_top only.
        classifier_activation: activation of the top's Dense layer ("softmax", the default; None for logits).
        features_only: the pyramid model; P1..P5 are block1_pool..block5_pool
            (FCN's pool3/pool4/pool5 are P3/P4/P5). Its pooling rounds odd
            sides up (any size segments); the classifier's rounds down, as
            keras.applications' does, whose weights then give equal outputs.
        output_stride: 16 or 8 keeps pool5 (and pool4) at stride 1 (3x3
            pooling, as DeepLab does) and dilates the convolutions after them.
        widths: channels of the five blocks ((64, 128, 256, 512, 512)).
        convs: 3x3 convolutions per block; None (the default): the depth's ((2, 2, 3, 3, 3) for 16).
        fc_units: units of fc1 and fc2 (4096). `widths`, `convs` and `fc_units` are the configuration (tiny
            variants); ImageNet weights need the standard one.
        name: the model's name; None: "vgg{depth}".

    Returns:
        A `keras.Model` taking (N, H, W, 3) RGB pixels in [0, 255] (the preprocessing is inside the model) and
        giving (N, classes) class probabilities with the top, without it the (N, h, w, channels) last feature
        map or, with `pooling`, (N, channels); with `features_only` the dict {"P1": ..., "P5": ...}.

    Raises:
        ValueError: an unknown `depth`; include_top=True with an input of no fixed size;
            `weights` neither None, "imagenet" nor an existing file; "imagenet" with classes != 1000 and the top,
            or without 3 input channels; an unknown `pooling` or `output_stride`; an input smaller than
            32 pixels.

    Example:
        ```python
        model = kerasseg.models.vgg16(weights="imagenet")  # 224x224 in, 1000 classes out
        pyramid = kerasseg.models.vgg16(features_only=True, output_stride=8)  # DeepLab v1's encoder
        ```
    """
    if depth not in CONFIGS:
        raise ValueError(f"depth must be one of {tuple(CONFIGS)}. Received: depth={depth!r}")
    convs = convs or CONFIGS[depth]
    name = name or f"vgg{depth}"
    backbone.check_classifier_args(weights, include_top, classes, pooling, output_stride)
    if include_top and input_shape is None and input_tensor is None:
        input_shape = (224, 224, 3)  # the fully connected top fixes the input size
    inputs = backbone.classifier_input(input_shape, input_tensor, weights, min_size=32)
    if include_top and not features_only and None in inputs.shape[1:3]:
        raise ValueError(
            "include_top=True needs a fixed input height and width (the top flattens the feature map). "
            f"Received: input_shape={tuple(inputs.shape[1:])}"
        )
    standard = tuple(widths) == (64, 128, 256, 512, 512) and tuple(convs) == CONFIGS[depth] and fc_units == 4096
    plan = backbone.stage_strides(output_stride)

    x = PixelNormalization("caffe", name="preprocess")(inputs)
    pyramid, dilation = {}, 1
    for block, (filters, count) in enumerate(zip(widths, convs), start=1):
        for i in range(count):
            x = layers.Conv2D(filters, 3, padding="same", dilation_rate=dilation, activation="relu",
                              name=f"block{block}_conv{i + 1}")(x)
        stride, dilation = plan[block - 1]
        if stride == 2:
            # the classifier pools as keras.applications does ("valid": odd sides round down), so its
            # weights give the same features at every size; the pyramid of a segmenter pools "same"
            # (odd sides round up), so an odd-sized or small image never pools away to nothing
            x = layers.MaxPooling2D(2, strides=2, padding="same" if features_only else "valid",
                                    name=f"block{block}_pool")(x)
        else:
            x = layers.MaxPooling2D(3, strides=1, padding="same", name=f"block{block}_pool")(x)
        pyramid[f"P{block}"] = x

    def top(x):
        x = layers.Flatten(name="flatten")(x)
        x = layers.Dense(fc_units, activation="relu", name="fc1")(x)
        return layers.Dense(fc_units, activation="relu", name="fc2")(x)

    model = backbone.finish(inputs, x, pyramid, include_top=include_top, pooling=pooling, classes=classes,
                            classifier_activation=classifier_activation, features_only=features_only,
                            name=name, top=top)
    return backbone.load_weights(model, weights, PRETRAINED[depth] if standard else None,
                                 include_top and not features_only)


__all__ = ["vgg"]


def _encoder(widths=(64, 128, 256, 512, 512), depth=None):
    """P1..P5 are block1_pool..block5_pool: each block's width."""
    return Encoder(dict(zip(("P1", "P2", "P3", "P4", "P5"), widths)), pretrained=PRETRAINED.get(depth))


@register("classification", encoder=_encoder(depth=16))
def vgg16(**kwargs):
    """VGG-16: 13 convolutions + 3 fully connected layers, 138.4M parameters."""
    return vgg(**{"depth": 16, **kwargs})


@register("classification", encoder=_encoder(depth=19))
def vgg19(**kwargs):
    """VGG-19: 16 convolutions + 3 fully connected layers, 143.7M parameters."""
    return vgg(**{"depth": 19, **kwargs})


@register("classification", tiny=True, encoder=_encoder((4, 8, 16, 32, 32)))
def vgg_tiny(**kwargs):
    """A tiny VGG (one conv per block, 4..32 channels, fc 32) for tests."""
    config = dict(depth=16, widths=(4, 8, 16, 32, 32), convs=(1, 1, 1, 1, 1), fc_units=32, name="vgg_tiny",
                  input_shape=(32, 32, 3))
    return vgg(**{**config, **kwargs})
