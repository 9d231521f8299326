"""EfficientNet-B0..B7 (Tan and Le, 2019).

Compound scaling: instead of making a network only deeper (ResNet-152),
only wider or only fed larger images, scale all three together, with
depth d = 1.2^phi, width w = 1.1^phi, resolution r = 1.15^phi from one
coefficient phi. B0 is a searched MobileNetV2-like network of MBConv blocks
(inverted residuals with squeeze-and-excitation and the swish activation);
B1..B7 are B0 scaled up. Stochastic depth drops whole residual branches at
random while training, more often in deeper blocks.

Layer names and order are keras.applications', whose ImageNet weight files
load unchanged. `edge=True` swaps swish for ReLU6, which int8 kernels and the
Edge TPU run well (the "EfficientNet-Lite" change), at some accuracy cost.
"""

from __future__ import annotations

import math
import os

import numpy as np

import keras
from keras import layers

from kerasseg.layers import squeeze_excite
from kerasseg.models import backbone
from kerasseg.models.registry import Encoder, register

# (kernel, repeats, filters_in, filters_out, expand_ratio, stride), Table 1 of the paper; SE ratio 0.25
BLOCKS = ((3, 1, 32, 16, 1, 1), (3, 2, 16, 24, 6, 2), (5, 2, 24, 40, 6, 2), (3, 3, 40, 80, 6, 2),
          (5, 3, 80, 112, 6, 1), (5, 4, 112, 192, 6, 2), (3, 1, 192, 320, 6, 1))
# width, depth, default resolution, dropout
VARIANTS = {"b0": (1.0, 1.0, 224, 0.2), "b1": (1.0, 1.1, 240, 0.2), "b2": (1.1, 1.2, 260, 0.3),
            "b3": (1.2, 1.4, 300, 0.3), "b4": (1.4, 1.8, 380, 0.4), "b5": (1.6, 2.2, 456, 0.4),
            "b6": (1.8, 2.6, 528, 0.5), "b7": (2.0, 3.1, 600, 0.5)}
_HASHES = {
    "b0": ("902e53a9f72be733fc0bcb005b3ebbac", "50bc09e76180e00e4465e1a485ddc09d"),
    "b1": ("1d254153d4ab51201f1646940f018540", "74c4e6b3e1f6a1eea24c589628592432"),
    "b2": ("b15cce36ff4dcbd00b6dd88e7857a6ad", "111f8e2ac8aa800a7a99e3239f7bfb39"),
    "b3": ("ffd1fdc53d0ce67064dc6a9c7960ede0", "af6d107764bb5b1abb91932881670226"),
    "b4": ("18c95ad55216b8f92d7e70b3a046e2fc", "ebc24e6d6c33eaebbd558eafbeedf1ba"),
    "b5": ("ace28f2a6363774853a83a0b21b9421a", "38879255a25d3c92d5e44e04ae6cec6f"),
    "b6": ("165f6e37dce68623721b423839de8be5", "9ecce42647a20130c1f39a5d4cb75743"),
    "b7": ("8c03f828fec3ef71311cd463b6759d99", "cbcfe4450ddf6f3ad90b1b398090fe4a"),
}
_BASE = "https://storage.googleapis.com/keras-applications/"
_IMAGENET_STD = (0.229, 0.224, 0.225)


def _pretrained(variant):
    top, notop = _HASHES[variant]
    return backbone.PretrainedWeights(_BASE, f"efficientnet{variant}.h5", top, f"efficientnet{variant}_notop.h5",
                                      notop)


def round_filters(filters, width, divisor=8):
    filters *= width
    new = max(divisor, int(filters + divisor / 2) // divisor * divisor)
    return int(new + divisor if new < 0.9 * filters else new)


def mbconv(x, activation, drop_rate, kernel, filters_in, filters_out, expand_ratio, stride, dilation, name):
    """Inverted residual with squeeze-and-excitation (MBConv), keras.applications' `block`."""
    filters = filters_in * expand_ratio
    y = x
    if expand_ratio != 1:
        y = layers.Conv2D(filters, 1, padding="same", use_bias=False, name=f"{name}expand_conv")(y)
        y = layers.BatchNormalization(name=f"{name}expand_bn")(y)
        y = layers.Activation(activation, name=f"{name}expand_activation")(y)
    y = layers.DepthwiseConv2D(kernel, strides=stride, padding="same", dilation_rate=dilation, use_bias=False,
                               name=f"{name}dwconv")(y)
    y = layers.BatchNormalization(name=f"{name}bn")(y)
    y = layers.Activation(activation, name=f"{name}activation")(y)
    y = squeeze_excite(y, max(1, int(filters_in * 0.25)), activation=activation, name=name)
    y = layers.Conv2D(filters_out, 1, padding="same", use_bias=False, name=f"{name}project_conv")(y)
    y = layers.BatchNormalization(name=f"{name}project_bn")(y)
    if stride == 1 and filters_in == filters_out:
        if drop_rate > 0:  # stochastic depth: drop the whole branch for a sample
            y = layers.Dropout(drop_rate, noise_shape=(None, 1, 1, 1), name=f"{name}drop")(y)
        y = layers.Add(name=f"{name}add")([y, x])
    return y


def efficientnet(variant: str = "b0", include_top: bool = True, weights: str | os.PathLike | None = None,
                 input_tensor: keras.KerasTensor | None = None,
                 input_shape: tuple[int | None, int | None, int] | None = None, pooling: str | None = None,
                 classes: int = 1000, classifier_activation: str | None = "softmax", features_only: bool = False,
                 output_stride: int = 32, drop_connect_rate: float = 0.2, edge: bool = False,
                 width: float | None = None, depth: float | None = None, blocks: tuple = BLOCKS,
                 name: str | None = None) -> keras.Model:
    """The EfficientNet family builder, B0..B7 (`variant`), keras.applications arguments
    plus features_only, output_stride and edge (ReLU6 instead of swish).

    Args:
        variant: "b0" (the default) .. "b7": the width and depth multipliers, the top's dropout and the
            resolution the ImageNet weights were trained at (224 .. 600).
        include_top: end in the classifier, global pooling and a `classes`-way Dense layer (True, the
            default), or stop at the last feature map (False).
        weights: None (random initialisation, the default), "imagenet" or the path to an existing weights file.
            "imagenet": keras.applications' weights, for the standard configuration without edge
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
        drop_connect_rate: the largest stochastic-depth rate, reached by the last block and scaled linearly from
            0 at the first (0.2).
        edge: ReLU6 instead of swish, the Edge TPU-friendly variant (what a segmenter's edge=True selects);
            ImageNet weights do not apply. Default False.
        width: channel multiplier; None (the default): the variant's.
        depth: block-repeat multiplier; None (the default): the variant's.
        blocks: the stages (kernel, repeats, filters in, filters out, expansion, stride); the default is B0's.
            `width`, `depth` and `blocks` are the configuration (tiny variants).
        name: the model's name; None: "efficientnet{variant}".

    Returns:
        A `keras.Model` taking (N, H, W, 3) RGB pixels in [0, 255] (the preprocessing is inside the model) and
        giving (N, classes) class probabilities with the top, without it the (N, h, w, channels) last feature
        map or, with `pooling`, (N, channels); with `features_only` the dict {"P1": ..., "P5": ...}.

    Raises:
        ValueError: an unknown `variant`;
            `weights` neither None, "imagenet" nor an existing file; "imagenet" with classes != 1000 and the top,
            or without 3 input channels; an unknown `pooling` or `output_stride`; an input smaller than
            32 pixels.

    Example:
        ```python
        model = kerasseg.models.efficientnet_b0(weights="imagenet")
        pyramid = kerasseg.models.efficientnet(variant="b3", features_only=True, edge=True)
        ```
    """
    if variant not in VARIANTS:
        raise ValueError(f"variant must be one of {tuple(VARIANTS)}. Received: variant={variant!r}")
    default_width, default_depth, _, dropout = VARIANTS[variant]
    width, depth = width or default_width, depth or default_depth
    activation = "relu6" if edge else "swish"
    standard = (width, depth) == (default_width, default_depth) and blocks == BLOCKS and not edge
    name = name or f"efficientnet{variant}"
    backbone.check_classifier_args(weights, include_top, classes, pooling, output_stride)
    inputs = backbone.classifier_input(input_shape, input_tensor, weights, min_size=32)

    # keras.applications' preprocessing layers, kept so that its weight files (which hold the
    # Normalization layer's mean and variance) load unchanged
    x = layers.Rescaling(1.0 / 255.0, name="rescaling")(inputs)
    x = layers.Normalization(axis=-1, name="normalization")(x)
    x = layers.Conv2D(round_filters(32, width), 3, strides=2, padding="same", use_bias=False, name="stem_conv")(x)
    x = layers.BatchNormalization(name="stem_bn")(x)
    x = layers.Activation(activation, name="stem_activation")(x)

    total = sum(math.ceil(depth * b[1]) for b in blocks)
    pyramid, dilation, index = backbone.Pyramid(output_stride), 1, 0
    for i, (kernel, repeats, f_in, f_out, expand, stride) in enumerate(blocks):
        if stride == 2:
            stride, dilation = pyramid.close(x)
        f_in, f_out = round_filters(f_in, width), round_filters(f_out, width)
        for j in range(math.ceil(depth * repeats)):
            x = mbconv(x, activation, drop_connect_rate * index / total, kernel, f_in if j == 0 else f_out, f_out,
                       expand, stride if j == 0 else 1, dilation, name=f"block{i + 1}{chr(j + 97)}_")
            index += 1
    x = layers.Conv2D(round_filters(1280, width), 1, padding="same", use_bias=False, name="top_conv")(x)
    x = layers.BatchNormalization(name="top_bn")(x)
    x = layers.Activation(activation, name="top_activation")(x)
    pyramid.close(x)

    def top(x):
        x = layers.GlobalAveragePooling2D(name="avg_pool")(x)
        return layers.Dropout(dropout, name="top_dropout")(x) if dropout > 0 else x

    model = backbone.finish(inputs, x, pyramid, include_top=include_top, pooling=pooling, classes=classes,
                            classifier_activation=classifier_activation, features_only=features_only,
                            name=name, top=top)
    backbone.load_weights(model, weights, _pretrained(variant) if standard else None,
                          include_top and not features_only)
    return _fix_imagenet_variance(model)


def _fix_imagenet_variance(model):
    """keras.applications' EfficientNet files store ImageNet's std where the Normalization layer's variance
    belongs (keras.applications adds a Rescaling by 1/sqrt(std) when weights="imagenet", and only then).
    Here the stored variance itself is corrected to std**2, so a file loaded by path, by "imagenet", or
    saved again from this model normalises alike: (x / 255 - mean) / std."""
    norm = model.get_layer("normalization")
    mean, variance, count = norm.get_weights()
    if np.allclose(variance, _IMAGENET_STD):
        norm.set_weights([mean, np.square(variance), count])
        norm.finalize_state()  # (Normalization computes from copies that set_weights does not refresh)
    return model


__all__ = ["efficientnet"]


def _encoder(variant, blocks=BLOCKS, width=None, pretrained=True):
    """P1..P4 the input of each stride-2 stage, P5 the top 1x1 convolution (round_filters(1280))."""
    width = width or VARIANTS[variant][0]
    levels = [f_out for (*_, f_out, _, _), (*_, stride) in zip(blocks, blocks[1:]) if stride == 2]
    channels = {f"P{i}": round_filters(f, width) for i, f in enumerate(levels, start=1)}
    return Encoder({**channels, "P5": round_filters(1280, width)}, edge=True,
                   pretrained=_pretrained(variant) if pretrained else None)


@register("classification", encoder=_encoder("b0"))
def efficientnet_b0(**kwargs):
    """EfficientNet-B0: the searched baseline, 5.3M parameters, trained at 224x224."""
    return efficientnet(**{"variant": "b0", **kwargs})


@register("classification", encoder=_encoder("b1"))
def efficientnet_b1(**kwargs):
    """EfficientNet-B1: depth x1.1, trained at 240x240."""
    return efficientnet(**{"variant": "b1", **kwargs})


@register("classification", encoder=_encoder("b2"))
def efficientnet_b2(**kwargs):
    """EfficientNet-B2: width x1.1, depth x1.2, trained at 260x260."""
    return efficientnet(**{"variant": "b2", **kwargs})


@register("classification", encoder=_encoder("b3"))
def efficientnet_b3(**kwargs):
    """EfficientNet-B3: width x1.2, depth x1.4, trained at 300x300."""
    return efficientnet(**{"variant": "b3", **kwargs})


@register("classification", encoder=_encoder("b4"))
def efficientnet_b4(**kwargs):
    """EfficientNet-B4: width x1.4, depth x1.8, trained at 380x380."""
    return efficientnet(**{"variant": "b4", **kwargs})


@register("classification", encoder=_encoder("b5"))
def efficientnet_b5(**kwargs):
    """EfficientNet-B5: width x1.6, depth x2.2, trained at 456x456."""
    return efficientnet(**{"variant": "b5", **kwargs})


@register("classification", encoder=_encoder("b6"))
def efficientnet_b6(**kwargs):
    """EfficientNet-B6: width x1.8, depth x2.6, trained at 528x528."""
    return efficientnet(**{"variant": "b6", **kwargs})


@register("classification", encoder=_encoder("b7"))
def efficientnet_b7(**kwargs):
    """EfficientNet-B7: width x2.0, depth x3.1, trained at 600x600."""
    return efficientnet(**{"variant": "b7", **kwargs})


_TINY_BLOCKS = ((3, 1, 8, 8, 1, 1), (3, 1, 8, 8, 2, 2), (5, 1, 8, 16, 2, 2), (3, 1, 16, 16, 2, 2),
                (5, 1, 16, 24, 2, 1), (5, 1, 24, 32, 2, 2), (3, 1, 32, 32, 2, 1))


@register("classification", tiny=True, encoder=_encoder("b0", _TINY_BLOCKS, 0.25, pretrained=False))
def efficientnet_tiny(**kwargs):
    """A tiny EfficientNet (one narrow MBConv per stage) for tests."""
    config = dict(variant="b0", blocks=_TINY_BLOCKS, width=0.25, depth=1.0, name="efficientnet_tiny")
    return efficientnet(**{**config, **kwargs})
