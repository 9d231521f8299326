"""MobileNetV3 (Howard et al., "Searching for MobileNetV3", 2019): what phones run today.

MobileNetV2's inverted residual blocks, with what a search over blocks and
a hand-tuned start and end found: squeeze-and-excitation in some blocks (a
global-pooled gate on the expanded channels, as in SE-ResNet but through a
hard sigmoid), 5x5 depthwise kernels in the later stages, and hard-swish,
x * ReLU6(x + 3) / 6, a cheap swish, where the feature maps are small
enough to afford it. The last stage computes on pooled features (1x1 at
224): a quarter of the head's multiply-adds of V2's. Large (5.5 M
parameters, 219 M multiply-adds at 224) and Small (2.6 M, 57 M).

`minimalistic=True` (the paper's "minimalistic" models) drops SE, hard-swish
and 5x5 kernels: ReLU and 3x3 everywhere, every op an int8 kernel of the
Edge TPU; it is the backbone's edge variant (`edge=True` in a segmenter).

Layer names and order are keras.applications', whose ImageNet files (Large
and Small at alpha 0.75 and 1.0, minimalistic at 1.0) load unchanged.
"""

from __future__ import annotations

import keras
from keras import layers

from kerasseg.layers import PixelNormalization
from kerasseg.models import backbone
from kerasseg.models.classifiers.mobilenet import make_divisible
from kerasseg.models.registry import Encoder, register

# (expansion, filters, kernel, stride, squeeze-excite, hard-swish) per block: Tables 1 and 2 of the paper
LARGE = ((1, 16, 3, 1, False, False), (4, 24, 3, 2, False, False), (3, 24, 3, 1, False, False),
         (3, 40, 5, 2, True, False), (3, 40, 5, 1, True, False), (3, 40, 5, 1, True, False),
         (6, 80, 3, 2, False, True), (2.5, 80, 3, 1, False, True), (2.3, 80, 3, 1, False, True),
         (2.3, 80, 3, 1, False, True), (6, 112, 3, 1, True, True), (6, 112, 3, 1, True, True),
         (6, 160, 5, 2, True, True), (6, 160, 5, 1, True, True), (6, 160, 5, 1, True, True))
SMALL = ((1, 16, 3, 2, True, False), (72 / 16, 24, 3, 2, False, False), (88 / 24, 24, 3, 1, False, False),
         (4, 40, 5, 2, True, True), (6, 40, 5, 1, True, True), (6, 40, 5, 1, True, True),
         (3, 48, 5, 1, True, True), (3, 48, 5, 1, True, True), (6, 96, 5, 2, True, True),
         (6, 96, 5, 1, True, True), (6, 96, 5, 1, True, True))
SE_RATIO = 0.25
_BASE = "https://storage.googleapis.com/tensorflow/keras-applications/mobilenet_v3/"
# keras.applications' files and hashes: (top, no top) by "{size}[_minimalistic]_224_{alpha}_float"
_HASHES = {
    "large_224_0.75_float": ("765b44a33ad4005b3ac83185abf1d0eb", "40af19a13ebea4e2ee0c676887f69a2e"),
    "large_224_1.0_float": ("59e551e166be033d707958cf9e29a6a7", "07fb09a5933dd0c8eaafa16978110389"),
    "large_minimalistic_224_1.0_float": ("675e7b876c45c57e9e63e6d90a36599c", "ec5221f64a2f6d1ef965a614bdae7973"),
    "small_224_0.75_float": ("cb65d4e5be93758266aa0a7f2c6708b7", "ebdb5cc8e0b497cd13a7c275d475c819"),
    "small_224_1.0_float": ("8768d4c2e7dee89b9d02b2d03d65d862", "d3e8ec802a04aa4fc771ee12a9a9b836"),
    "small_minimalistic_224_1.0_float": ("99cd97fb2fcdad2bf028eb838de69e37", "cde8136e733e811080d9fcd8a252f7e4"),
}


def _pretrained(size, alpha, minimalistic):
    key = f"{size}{'_minimalistic' if minimalistic else ''}_224_{float(alpha)}_float"
    if key not in _HASHES:
        return None
    top, notop = _HASHES[key]
    return backbone.PretrainedWeights(_BASE, f"weights_mobilenet_v3_{key}.h5", top,
                                      f"weights_mobilenet_v3_{key}_no_top_v2.h5", notop)


def _activation(x, hard_swish):
    return layers.Activation("hard_swish")(x) if hard_swish else layers.ReLU()(x)


def _squeeze_excite(x, filters, prefix):
    """SE on the expanded channels: global average, 1x1 to a quarter (ReLU), 1x1 back, hard sigmoid, scale."""
    gate = layers.GlobalAveragePooling2D(keepdims=True, name=f"{prefix}squeeze_excite_avg_pool")(x)
    gate = layers.Conv2D(make_divisible(filters * SE_RATIO), 1, padding="same",
                         name=f"{prefix}squeeze_excite_conv")(gate)
    gate = layers.ReLU(name=f"{prefix}squeeze_excite_relu")(gate)
    gate = layers.Conv2D(filters, 1, padding="same", name=f"{prefix}squeeze_excite_conv_1")(gate)
    gate = layers.Activation("hard_sigmoid")(gate)
    return layers.Multiply(name=f"{prefix}squeeze_excite_mul")([x, gate])


def inverted_residual(x, expansion, filters, kernel, stride, dilation, squeeze_excite, hard_swish, block_id, bn):
    """MobileNetV2's block with V3's options: optional SE after the depthwise step, hard-swish or ReLU."""
    prefix = f"expanded_conv_{block_id}_" if block_id else "expanded_conv_"
    in_channels = x.shape[-1]
    y = x
    if block_id:
        y = layers.Conv2D(make_divisible(in_channels * expansion), 1, padding="same", use_bias=False,
                          name=f"{prefix}expand")(y)
        y = layers.BatchNormalization(**bn, name=f"{prefix}expand_bn")(y)
        y = _activation(y, hard_swish)
    # ("same" padding equals keras.applications' correct_pad then "valid" for 3x3 and 5x5, at any size)
    y = layers.DepthwiseConv2D(kernel, strides=stride, padding="same", dilation_rate=dilation, use_bias=False,
                               name=f"{prefix}depthwise")(y)
    y = layers.BatchNormalization(**bn, name=f"{prefix}depthwise_bn")(y)
    y = _activation(y, hard_swish)
    if squeeze_excite:
        y = _squeeze_excite(y, y.shape[-1], prefix)
    y = layers.Conv2D(filters, 1, padding="same", use_bias=False, name=f"{prefix}project")(y)
    y = layers.BatchNormalization(**bn, name=f"{prefix}project_bn")(y)
    if stride == 1 and in_channels == filters:
        return layers.Add(name=f"{prefix}add")([x, y])
    return y


def mobilenet_v3(blocks, last_point, alpha=1.0, minimalistic=False, include_top=True, weights=None,
                 input_tensor=None, input_shape=None, pooling=None, classes=1000, classifier_activation="softmax",
                 dropout_rate=0.2, features_only=False, output_stride=32, edge=False, bn_momentum=0.999,
                 pretrained=None, name=None):
    """A MobileNetV3 of `blocks` (LARGE, SMALL); `edge`: the minimalistic variant. bn_momentum: 0.999 as
    keras.applications (fine-tuning); from scratch, 0.9 (as MobileNetV2's: at 0.999 the running statistics
    average over ~1000 steps, and a short training validates on statistics of its first weights)."""
    minimalistic = minimalistic or edge
    bn = dict(epsilon=1e-3, momentum=bn_momentum)
    backbone.check_classifier_args(weights, include_top, classes, pooling, output_stride)
    if weights == "imagenet" and pretrained is None:
        raise ValueError("ImageNet weights exist for alpha 0.75 and 1.0, minimalistic at 1.0 only. Received: "
                         f"alpha={alpha}, minimalistic={minimalistic}")
    inputs = backbone.classifier_input(input_shape, input_tensor, weights, min_size=32)
    x = PixelNormalization("tf", name="preprocess")(inputs)
    x = layers.Conv2D(16, 3, strides=2, padding="same", use_bias=False, name="conv")(x)
    x = layers.BatchNormalization(**bn, name="conv_bn")(x)
    x = _activation(x, not minimalistic)
    pyramid, dilation = backbone.Pyramid(output_stride), 1
    for block_id, (expansion, filters, kernel, stride, squeeze_excite, hard_swish) in enumerate(blocks):
        if stride == 2:
            stride, dilation = pyramid.close(x)
        if minimalistic:
            kernel, squeeze_excite, hard_swish = 3, False, False
        x = inverted_residual(x, expansion, make_divisible(filters * alpha), kernel, stride, dilation,
                              squeeze_excite, hard_swish, block_id, bn)
    x = layers.Conv2D(make_divisible(x.shape[-1] * 6), 1, padding="same", use_bias=False, name="conv_1")(x)
    x = layers.BatchNormalization(**bn, name="conv_1_bn")(x)
    x = _activation(x, not minimalistic)
    pyramid.close(x)
    last_point = make_divisible(last_point * alpha) if alpha > 1.0 else last_point

    def top(x):  # (the efficient last stage: pooled first, then a 1x1 convolution with a bias)
        x = layers.GlobalAveragePooling2D(keepdims=True)(x)
        x = _activation(layers.Conv2D(last_point, 1, padding="same", name="conv_2")(x), not minimalistic)
        if dropout_rate > 0:
            x = layers.Dropout(dropout_rate)(x)
        x = layers.Flatten()(layers.Conv2D(classes, 1, padding="same", name="logits")(x))
        return layers.Activation(classifier_activation, name="predictions")(x)

    model = backbone.finish(inputs, x, pyramid, include_top=include_top, pooling=pooling, classes=classes,
                            classifier_activation=classifier_activation, features_only=features_only, name=name,
                            top=top, top_is_head=True)
    return backbone.load_weights(model, weights, pretrained, include_top and not features_only)


def _encoder(blocks, last_channels, size):
    """P1..P4 the input of each stride-2 block (alpha 1.0; Small's P1 is its stem), P5 the last 1x1."""
    inputs = [16] + [filters for _, filters, _, _, _, _ in blocks]
    levels = [inputs[i] for i, block in enumerate(blocks) if block[3] == 2]
    channels = {f"P{i}": make_divisible(c) for i, c in enumerate(levels, start=1)}
    pretrained = {(alpha, minimal): _pretrained(size, alpha, minimal) for alpha in (0.75, 1.0) for minimal in (0, 1)}
    return Encoder({**channels, "P5": last_channels}, edge=True,
                   pretrained={key: value for key, value in pretrained.items() if value})


@register("classification", encoder=_encoder(LARGE, 960, "large"))
def mobilenet_v3_large(alpha: float = 1.0, minimalistic: bool = False, **kwargs) -> keras.Model:
    """MobileNetV3-Large (5.5 M parameters): 15 blocks, P5 960 channels, pooled head of 1280.
    features_only gives P1 (stride 2, 16 channels) .. P5 (stride 32, 960); output_stride 16 / 8 dilates the
    last stages; `minimalistic` (or edge=True): ReLU, 3x3, no SE.

    Args:
        alpha: width multiplier of the blocks' channels (1.0; ImageNet weights for 0.75 and 1.0).
        minimalistic: the paper's minimalistic model: ReLU instead of hard-swish, 3x3 kernels only, no
            squeeze-and-excitation (False); every op then maps to the Edge TPU.
        **kwargs: the other arguments of the family builder `mobilenet_v3`, keras.applications' (include_top,
            weights, input_tensor, input_shape, pooling, classes, classifier_activation) and dropout_rate (0.2,
            before the head's logits), features_only (the pyramid model, outputs "P1".."P5"), output_stride (32,
            16 or 8), edge (False; True implies `minimalistic`, the Edge TPU variant), bn_momentum (0.999) and
            name. weights: None (the default), "imagenet" (keras.applications' weights, for alpha 0.75 and 1.0,
            minimalistic at 1.0 only; 3 input channels, classes=1000 with the top) or the path to a weights
            file. Input pixels in [0, 255], at least 32 on each side.

    Returns:
        A `keras.Model` taking (N, H, W, 3) RGB pixels in [0, 255] and giving (N, classes) class probabilities
        with the top, without it the last feature map (or, with `pooling`, (N, channels)); with `features_only`
        the dict {"P1": ..., "P5": ...}.

    Raises:
        ValueError: weights="imagenet" for an alpha or minimalistic setting without published weights, or any
            of the keras.applications argument checks (unknown `pooling` or `output_stride`, an input smaller
            than 32, an invalid `weights`).

    Example:
        ```python
        model = kerasseg.models.mobilenet_v3_large(weights="imagenet")
        pyramid = kerasseg.models.mobilenet_v3_large(features_only=True, output_stride=16, edge=True)
        ```
    """
    minimal = minimalistic or kwargs.get("edge", False)
    name = kwargs.pop("name", None) or f"MobileNetV3Large{'Minimalistic' if minimal else ''}"
    return mobilenet_v3(LARGE, 1280, alpha, minimalistic, pretrained=_pretrained("large", alpha, minimal),
                        name=name, **kwargs)


@register("classification", encoder=_encoder(SMALL, 576, "small"))
def mobilenet_v3_small(alpha: float = 1.0, minimalistic: bool = False, **kwargs) -> keras.Model:
    """MobileNetV3-Small (2.6 M parameters): 11 blocks, P5 576 channels, pooled head of 1024 (P1 is the
    stem: its first block already halves the map).

    Args:
        alpha: width multiplier of the blocks' channels (1.0; ImageNet weights for 0.75 and 1.0).
        minimalistic: the paper's minimalistic model: ReLU instead of hard-swish, 3x3 kernels only, no
            squeeze-and-excitation (False); every op then maps to the Edge TPU.
        **kwargs: the other arguments of the family builder `mobilenet_v3`, keras.applications' (include_top,
            weights, input_tensor, input_shape, pooling, classes, classifier_activation) and dropout_rate (0.2,
            before the head's logits), features_only (the pyramid model, outputs "P1".."P5"), output_stride (32,
            16 or 8), edge (False; True implies `minimalistic`, the Edge TPU variant), bn_momentum (0.999) and
            name. weights: None (the default), "imagenet" (keras.applications' weights, for alpha 0.75 and 1.0,
            minimalistic at 1.0 only; 3 input channels, classes=1000 with the top) or the path to a weights
            file. Input pixels in [0, 255], at least 32 on each side.

    Returns:
        A `keras.Model` taking (N, H, W, 3) RGB pixels in [0, 255] and giving (N, classes) class probabilities
        with the top, without it the last feature map (or, with `pooling`, (N, channels)); with `features_only`
        the dict {"P1": ..., "P5": ...}.

    Raises:
        ValueError: weights="imagenet" for an alpha or minimalistic setting without published weights, or any
            of the keras.applications argument checks (unknown `pooling` or `output_stride`, an input smaller
            than 32, an invalid `weights`).

    Example:
        ```python
        model = kerasseg.models.mobilenet_v3_small(weights="imagenet", minimalistic=True)
        ```
    """
    minimal = minimalistic or kwargs.get("edge", False)
    name = kwargs.pop("name", None) or f"MobileNetV3Small{'Minimalistic' if minimal else ''}"
    return mobilenet_v3(SMALL, 1024, alpha, minimalistic, pretrained=_pretrained("small", alpha, minimal),
                        name=name, **kwargs)


_TINY = ((1, 8, 3, 2, True, False), (2, 8, 3, 2, False, False), (2, 16, 5, 2, True, True),
         (2, 16, 3, 1, True, True), (2, 24, 5, 2, True, True))


@register("classification", tiny=True, encoder=_encoder(_TINY, 144, "small"))
def mobilenet_v3_tiny(**kwargs):
    """A tiny MobileNetV3 (Small's shape: SE, hard-swish, a 5x5; one block a stage) for tests."""
    name = kwargs.pop("name", None) or "mobilenet_v3_tiny"
    return mobilenet_v3(_TINY, 64, name=name, **{k: v for k, v in kwargs.items() if k != "alpha"})
