"""DeepLab v1, v2, v3 and v3+ (Chen et al., 2014-2018): atrous convolution for segmentation.

Classification networks shrink the image 32x; upsampling a 32x-coarse map
loses detail. DeepLab removes the last downsamplings and *dilates* the
convolutions after them (atrous convolution: the 3x3 kernel samples every
r-th pixel), so the features stay at stride 8 or 16 while every filter keeps
the receptive field, and the pretrained weights, it was trained with.

- v1 (LargeFOV): atrous VGG16 at stride 8; fc6 is a 3x3 convolution dilated
  by 12 (a large field of view with few weights), then bilinear upsampling.
- v2: ASPP, parallel 3x3 atrous classifiers at rates 6, 12, 18, 24 over a
  ResNet-101, their scores summed: objects at several scales.
- v3: ASPP with batch norm, a 1x1 branch and image-level pooling, on a
  backbone at output stride 16 (rates 6/12/18) or 8 (12/24/36); multi-grid
  dilates the last ResNet blocks by (1, 2, 4) x the stage rate. Output
  stride 32 keeps the backbone undilated (rates 3/6/9), as keras-hub's
  DeepLabV3 builds it: a quarter of the pixels in stage 5 of stride 16's.
- v3+: v3 as the encoder plus a decoder that upsamples its output 4x and
  fuses it with 48-channel projected low-level features (P2) through 3x3
  depthwise-separable convolutions, for sharper boundaries.
  `deeplab_v3_plus(backbone="mobilenet_v2")` is the edge configuration.
"""

from __future__ import annotations

import os

import keras
from keras import layers

from kerasseg.layers import ResizeToMatch, aspp, conv_bn_act, image_input
from kerasseg.models.backbone import encoder_pyramid
from kerasseg.models.heads import check_segmenter_args, segmenter
from kerasseg.models.registry import register

# the paper's rates for 513x513 crops at output stride 16 and 8; at 32 (no dilation: keras-hub's DeepLabV3
# configuration) the same field of view over a map half as fine
ASPP_RATES = {32: (3, 6, 9), 16: (6, 12, 18), 8: (12, 24, 36)}


def separable_conv_bn_act(x, filters, name):
    """3x3 depthwise then 1x1 pointwise convolution, each with batch norm and ReLU."""
    x = layers.DepthwiseConv2D(3, padding="same", use_bias=False, name=f"{name}_depthwise")(x)
    x = layers.BatchNormalization(momentum=0.9, name=f"{name}_depthwise_bn")(x)
    x = layers.Activation("relu", name=f"{name}_depthwise_relu")(x)
    return conv_bn_act(x, filters, 1, name=f"{name}_pointwise")


def deeplab_v1(classes: int = 21, backbone: str = "vgg16", backbone_weights: str | os.PathLike | None = None,
               input_shape: tuple[int | None, int | None, int] | None = None,
               input_tensor: keras.KerasTensor | None = None, fc_units: int = 1024, fc6_rate: int = 12,
               dropout: float = 0.5, activation: str | None = None, backbone_kwargs: dict | None = None,
               edge: bool = False, name: str = "deeplab_v1") -> keras.Model:
    """DeepLab-LargeFOV: atrous backbone at stride 8, fc6 3x3 dilated 12, fc7 1x1, scores, bilinear upsampling.

    The backbone's last downsamplings are replaced by dilation (output stride 8), so its pretrained filters
    keep their receptive field; fc6, a 3x3 convolution dilated by `fc6_rate`, then sees a large field of view
    with few weights (the paper's LargeFOV).

    Args:
        classes: number of output classes, the channels of the logits (a positive integer; 21: Pascal VOC's 20
            classes and background).
        backbone: name of the registered classifier used as the encoder (`kerasseg.models.list_models(encoder=True)`
            lists them), built with `features_only=True`.
        backbone_weights: the backbone's weights: None (random initialisation, the default), "imagenet" (its
            published ImageNet weights; a ValueError if it has none) or the path to a weights file.
        input_shape: (height, width, channels) of the input; height and width may be None. None (the default):
            (None, None, 3), RGB pixels of any size.
        input_tensor: an existing Keras tensor to build the model on instead of a new `keras.Input`; when given,
            `input_shape` is ignored.
        fc_units: channels of fc6 (3x3, dilated by `fc6_rate`) and fc7 (1x1), both with ReLU (1024, the
            paper's LargeFOV).
        fc6_rate: dilation rate of fc6 (12).
        dropout: dropout rate after fc6 and after fc7 (0.5).
        activation: None for logits (the default), "softmax" or "sigmoid" for probabilities (softmax needs
            classes > 1).
        backbone_kwargs: more keyword arguments for the backbone's builder (e.g. `{"alpha": 0.35}` for
            MobileNetV2), or None.
        edge: Edge TPU operators only (default False): resizes lowered to fixed depthwise convolutions and the
            backbone's edge variant where it has one (docs/android-coral.md, "Edge TPU"). It exists because
            Keras' bilinear resize is written as the `RESIZE_BILINEAR` version the Edge TPU compilers reject;
            the logits are the same wherever the sizes divide evenly.
        name: the model's name.

    Returns:
        A `keras.Model` taking (N, H, W, 3) RGB pixels in [0, 255] and giving (N, H, W, classes) float32 logits
        (probabilities with `activation`) at the input's size.

    Raises:
        ValueError: an invalid `classes`, `activation` or `input_shape`, or a backbone that cannot run at
            output stride 8 or has no ImageNet weights when `backbone_weights="imagenet"`.

    Example:
        ```python
        model = kerasseg.models.deeplab_v1(classes=21)  # atrous VGG16, stride 8
        logits = model(np.zeros((1, 321, 321, 3)))  # (1, 321, 321, 21)
        ```
    """
    check_segmenter_args(classes, activation)
    inputs = image_input(input_shape, input_tensor)
    x = encoder_pyramid(inputs, backbone, backbone_weights, backbone_kwargs, edge, output_stride=8)["P5"]
    x = layers.Conv2D(fc_units, 3, dilation_rate=fc6_rate, padding="same", activation="relu", name="fc6")(x)
    x = layers.Dropout(dropout, name="drop6")(x)
    x = layers.Conv2D(fc_units, 1, activation="relu", name="fc7")(x)
    x = layers.Dropout(dropout, name="drop7")(x)
    return segmenter(inputs, x, classes, activation, name=name, edge=edge)


def deeplab_v2(classes: int = 21, backbone: str = "resnet101", backbone_weights: str | os.PathLike | None = None,
               input_shape: tuple[int | None, int | None, int] | None = None,
               input_tensor: keras.KerasTensor | None = None, rates: tuple[int, ...] = (6, 12, 18, 24),
               activation: str | None = None, backbone_kwargs: dict | None = None, edge: bool = False,
               name: str = "deeplab_v2") -> keras.Model:
    """DeepLab v2: ASPP of parallel 3x3 atrous class-score branches, summed, on a stride-8 backbone.

    Each branch is a 3x3 convolution to class scores dilated by one of `rates`: the same features seen through
    windows of several sizes, so objects at several scales are scored; the branches' scores are summed.

    Args:
        classes: number of output classes, the channels of the logits (a positive integer; 21: Pascal VOC's 20
            classes and background).
        backbone: name of the registered classifier used as the encoder (`kerasseg.models.list_models(encoder=True)`
            lists them), built with `features_only=True`.
        backbone_weights: the backbone's weights: None (random initialisation, the default), "imagenet" (its
            published ImageNet weights; a ValueError if it has none) or the path to a weights file.
        input_shape: (height, width, channels) of the input; height and width may be None. None (the default):
            (None, None, 3), RGB pixels of any size.
        input_tensor: an existing Keras tensor to build the model on instead of a new `keras.Input`; when given,
            `input_shape` is ignored.
        rates: dilation rates of the parallel 3x3 score branches, one branch per rate ((6, 12, 18, 24), the
            paper's ASPP-L); a single rate gives a single branch and no sum.
        activation: None for logits (the default), "softmax" or "sigmoid" for probabilities (softmax needs
            classes > 1).
        backbone_kwargs: more keyword arguments for the backbone's builder (e.g. `{"alpha": 0.35}` for
            MobileNetV2), or None.
        edge: Edge TPU operators only (default False): resizes lowered to fixed depthwise convolutions and the
            backbone's edge variant where it has one (docs/android-coral.md, "Edge TPU"). It exists because
            Keras' bilinear resize is written as the `RESIZE_BILINEAR` version the Edge TPU compilers reject;
            the logits are the same wherever the sizes divide evenly.
        name: the model's name.

    Returns:
        A `keras.Model` taking (N, H, W, 3) RGB pixels in [0, 255] and giving (N, H, W, classes) float32 logits
        (probabilities with `activation`) at the input's size.

    Raises:
        ValueError: an invalid `classes`, `activation` or `input_shape`, or a backbone that cannot run at
            output stride 8 or has no ImageNet weights when `backbone_weights="imagenet"`.

    Example:
        ```python
        model = kerasseg.models.deeplab_v2(classes=21, backbone="resnet50")
        ```
    """
    check_segmenter_args(classes, activation)
    inputs = image_input(input_shape, input_tensor)
    x = encoder_pyramid(inputs, backbone, backbone_weights, backbone_kwargs, edge, output_stride=8)["P5"]
    scores = [layers.Conv2D(classes, 3, dilation_rate=rate, padding="same", name=f"aspp_rate{rate}")(x)
              for rate in rates]
    x = layers.Add(name="aspp_sum")(scores) if len(scores) > 1 else scores[0]
    return segmenter(inputs, x, classes, activation, name=name, edge=edge, scores=True)


def deeplab_v3(classes: int = 21, backbone: str = "resnet101", backbone_weights: str | os.PathLike | None = None,
               input_shape: tuple[int | None, int | None, int] | None = None,
               input_tensor: keras.KerasTensor | None = None, output_stride: int = 16,
               multi_grid: tuple[int, ...] | None = (1, 2, 4), aspp_filters: int = 256,
               aspp_rates: tuple[int, ...] | None = None, activation: str | None = None,
               backbone_kwargs: dict | None = None, edge: bool = False, name: str = "deeplab_v3") -> keras.Model:
    """DeepLab v3: ASPP (1x1, three atrous 3x3, image pooling; batch norm) on a stride-16 or -8 backbone.

    multi_grid (the paper's (1, 2, 4)) is passed to the backbone, which must
    be of the ResNet family; use multi_grid=None with other backbones.
    aspp_rates defaults to the paper's rates for the output stride (tuned for
    513x513 crops); on small images scale them with the feature map, since a
    rate far beyond the map only sees padding.

    Args:
        classes: number of output classes, the channels of the logits (a positive integer; 21: Pascal VOC's 20
            classes and background).
        backbone: name of the registered classifier used as the encoder (`kerasseg.models.list_models(encoder=True)`
            lists them), built with `features_only=True`.
        backbone_weights: the backbone's weights: None (random initialisation, the default), "imagenet" (its
            published ImageNet weights; a ValueError if it has none) or the path to a weights file.
        input_shape: (height, width, channels) of the input; height and width may be None. None (the default):
            (None, None, 3), RGB pixels of any size.
        input_tensor: an existing Keras tensor to build the model on instead of a new `keras.Input`; when given,
            `input_shape` is ignored.
        output_stride: the backbone's output stride, 8, 16 (the default) or 32: past it the backbone's stages
            dilate instead of downsampling. 8 is finer and slower; 32 keeps the backbone undilated (keras-hub's
            DeepLabV3 configuration). It must be one the backbone declares.
        multi_grid: dilation multipliers of the last ResNet stage's blocks, times the stage's rate ((1, 2, 4),
            the paper's); None for backbones outside the ResNet family.
        aspp_filters: channels of every ASPP branch and of its projection (256).
        aspp_rates: dilation rates of ASPP's 3x3 branches, one branch per rate; None (the default): the paper's for
            the output stride, (6, 12, 18) at 16, (12, 24, 36) at 8, (3, 6, 9) at 32.
        activation: None for logits (the default), "softmax" or "sigmoid" for probabilities (softmax needs
            classes > 1).
        backbone_kwargs: more keyword arguments for the backbone's builder (e.g. `{"alpha": 0.35}` for
            MobileNetV2), or None.
        edge: Edge TPU operators only (default False): resizes lowered to fixed depthwise convolutions and the
            backbone's edge variant where it has one (docs/android-coral.md, "Edge TPU"). It exists because
            Keras' bilinear resize is written as the `RESIZE_BILINEAR` version the Edge TPU compilers reject;
            the logits are the same wherever the sizes divide evenly.
        name: the model's name.

    Returns:
        A `keras.Model` taking (N, H, W, 3) RGB pixels in [0, 255] and giving (N, H, W, classes) float32 logits
        (probabilities with `activation`) at the input's size.

    Raises:
        ValueError: an `output_stride` other than 8, 16 or 32, an invalid `classes`, `activation` or
            `input_shape`, or a backbone that does not build the output stride, take `multi_grid` or have
            ImageNet weights when `backbone_weights="imagenet"`.

    Example:
        ```python
        model = kerasseg.models.deeplab_v3(classes=21, output_stride=16)
        model = kerasseg.models.deeplab_v3(classes=4, backbone="mobilenet_v2", multi_grid=None)
        ```
    """
    check_segmenter_args(classes, activation)
    if output_stride not in ASPP_RATES:
        raise ValueError(f"output_stride must be 8, 16 or 32. Received: output_stride={output_stride!r}")
    inputs = image_input(input_shape, input_tensor)
    x = encoder_pyramid(inputs, backbone, backbone_weights, backbone_kwargs, edge, output_stride=output_stride,
                        multi_grid=multi_grid)["P5"]
    x = aspp(x, aspp_filters, aspp_rates or ASPP_RATES[output_stride], edge=edge)
    return segmenter(inputs, x, classes, activation, name=name, edge=edge)


def deeplab_v3_plus(classes: int = 21, backbone: str = "resnet101",
                    backbone_weights: str | os.PathLike | None = None,
                    input_shape: tuple[int | None, int | None, int] | None = None,
                    input_tensor: keras.KerasTensor | None = None, output_stride: int = 16,
                    multi_grid: tuple[int, ...] | None = None, aspp_filters: int = 256,
                    aspp_rates: tuple[int, ...] | None = None, low_level_filters: int = 48,
                    decoder_filters: int = 256, activation: str | None = None, backbone_kwargs: dict | None = None,
                    edge: bool = False, name: str = "deeplab_v3_plus") -> keras.Model:
    """DeepLab v3+: the v3 encoder, then a decoder fusing P2 (projected to 48 channels) through
    two 3x3 depthwise-separable convolutions.

    The ASPP output (at `output_stride`) is upsampled to P2 (stride 4), concatenated with P2's projected
    low-level features, a skip connection that brings back the boundaries the coarse map blurs, and refined
    before the logits are upsampled to the input. `backbone="mobilenet_v2"` (with `edge=True` for a Coral
    Edge TPU) is the edge configuration.

    Args:
        classes: number of output classes, the channels of the logits (a positive integer; 21: Pascal VOC's 20
            classes and background).
        backbone: name of the registered classifier used as the encoder (`kerasseg.models.list_models(encoder=True)`
            lists them), built with `features_only=True`.
        backbone_weights: the backbone's weights: None (random initialisation, the default), "imagenet" (its
            published ImageNet weights; a ValueError if it has none) or the path to a weights file.
        input_shape: (height, width, channels) of the input; height and width may be None. None (the default):
            (None, None, 3), RGB pixels of any size.
        input_tensor: an existing Keras tensor to build the model on instead of a new `keras.Input`; when given,
            `input_shape` is ignored.
        output_stride: the backbone's output stride, 8, 16 (the default) or 32: past it the backbone's stages
            dilate instead of downsampling. It must be one the backbone declares.
        multi_grid: dilation multipliers of the last ResNet stage's blocks (e.g. the paper's (1, 2, 4)); None
            (the default) for none, and for backbones outside the ResNet family.
        aspp_filters: channels of every ASPP branch and of its projection (256).
        aspp_rates: dilation rates of ASPP's 3x3 branches, one branch per rate; None (the default): the paper's for
            the output stride, (6, 12, 18) at 16, (12, 24, 36) at 8, (3, 6, 9) at 32.
        low_level_filters: channels P2 is projected to by a 1x1 convolution before the fusion (48, the paper's:
            few, so the low-level features do not outweigh the encoder's).
        decoder_filters: channels of the decoder's two 3x3 depthwise-separable convolutions (256).
        activation: None for logits (the default), "softmax" or "sigmoid" for probabilities (softmax needs
            classes > 1).
        backbone_kwargs: more keyword arguments for the backbone's builder (e.g. `{"alpha": 0.35}` for
            MobileNetV2), or None.
        edge: Edge TPU operators only (default False): resizes lowered to fixed depthwise convolutions and the
            backbone's edge variant where it has one (docs/android-coral.md, "Edge TPU"). It exists because
            Keras' bilinear resize is written as the `RESIZE_BILINEAR` version the Edge TPU compilers reject;
            the logits are the same wherever the sizes divide evenly.
        name: the model's name.

    Returns:
        A `keras.Model` taking (N, H, W, 3) RGB pixels in [0, 255] and giving (N, H, W, classes) float32 logits
        (probabilities with `activation`) at the input's size.

    Raises:
        ValueError: an `output_stride` other than 8, 16 or 32, an invalid `classes`, `activation` or
            `input_shape`, or a backbone that does not build the output stride, take `multi_grid` or have
            ImageNet weights when `backbone_weights="imagenet"`.

    Example:
        ```python
        model = kerasseg.models.deeplab_v3_plus(classes=4, backbone="mobilenet_v2")
        model = kerasseg.models.deeplab_v3_plus(classes=4, backbone="mobilenet_v2", edge=True,
                                                input_shape=(513, 513, 3))  # for the Edge TPU
        ```
    """
    check_segmenter_args(classes, activation)
    if output_stride not in ASPP_RATES:
        raise ValueError(f"output_stride must be 8, 16 or 32. Received: output_stride={output_stride!r}")
    inputs = image_input(input_shape, input_tensor)
    features = encoder_pyramid(inputs, backbone, backbone_weights, backbone_kwargs, edge, output_stride=output_stride,
                               multi_grid=multi_grid, levels=("P2", "P5"))
    x = aspp(features["P5"], aspp_filters, aspp_rates or ASPP_RATES[output_stride], edge=edge)
    low = conv_bn_act(features["P2"], low_level_filters, 1, name="decoder_low_level")
    x = ResizeToMatch(edge=edge, name="decoder_upsample")(x, low)
    x = layers.Concatenate(name="decoder_concat")([x, low])
    x = separable_conv_bn_act(x, decoder_filters, name="decoder_conv1")
    x = separable_conv_bn_act(x, decoder_filters, name="decoder_conv2")
    return segmenter(inputs, x, classes, activation, name=name, edge=edge)


for _builder in (deeplab_v1, deeplab_v2, deeplab_v3, deeplab_v3_plus):
    register("segmentation")(_builder)


@register("segmentation", tiny=True)
def deeplab_v3_plus_tiny(**kwargs):
    """A tiny DeepLab v3+ on the tiny MobileNetV2 (16-channel ASPP and decoder) for tests."""
    config = dict(backbone="mobilenet_v2_tiny", aspp_filters=16, low_level_filters=8, decoder_filters=16,
                  name="deeplab_v3_plus_tiny")
    return deeplab_v3_plus(**{**config, **kwargs})


@register("segmentation", tiny=True)
def deeplab_v3_tiny(**kwargs):
    """A tiny DeepLab v3 on the tiny ResNet, with multi-grid, for tests."""
    config = dict(backbone="resnet_tiny", aspp_filters=16, multi_grid=(1, 2, 4), name="deeplab_v3_tiny")
    return deeplab_v3(**{**config, **kwargs})


@register("segmentation", tiny=True)
def deeplab_v2_tiny(**kwargs):
    """A tiny DeepLab v2 on the tiny ResNet for tests."""
    return deeplab_v2(**{"backbone": "resnet_tiny", "name": "deeplab_v2_tiny", **kwargs})


@register("segmentation", tiny=True)
def deeplab_v1_tiny(**kwargs):
    """A tiny DeepLab v1 (LargeFOV) on the tiny VGG for tests."""
    return deeplab_v1(**{"backbone": "vgg_tiny", "fc_units": 32, "name": "deeplab_v1_tiny", **kwargs})
