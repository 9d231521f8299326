"""LR-ASPP, Lite Reduced Atrous Spatial Pyramid Pooling (Howard et al., "Searching for MobileNetV3", 2019).

DeepLab v3's ASPP runs three dilated 3x3 branches of 256 channels over the
stride-16 features: on a phone that head costs more than the MobileNetV3
under it. LR-ASPP keeps two cheap paths:

- the stride-16 features through one 128-channel 1x1 convolution (batch
  norm, ReLU), *gated* by the image's context: a global average pool, a 1x1
  convolution and a sigmoid give each of the 128 channels a weight in (0,
  1), a squeeze-and-excitation over the whole picture in place of ASPP's
  image-pooling branch (the paper pools 49x49 windows at stride (16, 20) on
  1024x2048 Cityscapes crops: at the smaller sizes phones run, the whole
  map); the gated map is upsampled to stride 8 and scored per class;
- the stride-8 features scored per class by a 1x1 convolution, the skip
  connection that brings back the boundaries a stride-16 map blurs.

The two score maps are added and upsampled to the input. The backbone runs
at output stride 16 (its last stage dilated, as DeepLab does). Every op is
an int8 kernel of LiteRT and, on the minimalistic backbone (`edge=True`),
of the Edge TPU.
"""

from __future__ import annotations

import os

import keras
from keras import layers

from kerasseg.layers import ResizeToMatch, conv_bn_act, image_input
from kerasseg.models.backbone import encoder_pyramid
from kerasseg.models.heads import check_segmenter_args, segmenter
from kerasseg.models.registry import register


def lraspp(classes: int = 21, backbone: str = "mobilenet_v3_large",
           backbone_weights: str | os.PathLike | None = None,
           input_shape: tuple[int | None, int | None, int] | None = None,
           input_tensor: keras.KerasTensor | None = None, filters: int = 128, output_stride: int = 16,
           activation: str | None = None, backbone_kwargs: dict | None = None, edge: bool = False,
           name: str = "lraspp") -> keras.Model:
    """LR-ASPP on any registered classifier: P5 (at `output_stride`, 16 by the paper) through a `filters`-channel
    1x1 branch gated by global pooling, scored and added to P3's class scores.

    The gate (global average pool, 1x1 convolution, sigmoid) brings the whole
    image's context at the cost of one vector; P3's scores are the skip
    connection at stride 8 that restores the boundaries.

    Args:
        classes: number of output classes, the channels of the logits (a positive integer; 21: Pascal VOC).
        backbone: name of a registered classifier used as the encoder ("mobilenet_v3_large", the paper's),
            built with `features_only=True`.
        backbone_weights: the backbone's weights: None (random initialisation, the default), "imagenet" (its
            published ImageNet weights; a ValueError if it has none) or the path to a weights file.
        input_shape: (height, width, channels) of the input; height and width may be None. None (the default):
            (None, None, 3), RGB pixels of any size.
        input_tensor: an existing Keras tensor to build the model on instead of a new `keras.Input`; when given,
            `input_shape` is ignored.
        filters: channels of the 1x1 branch on P5 and of its gate (128, the paper's).
        output_stride: the backbone's output stride, where P5 is read: 16 (the default, the paper's: the last
            stage dilated), or 8 or 32 where the backbone builds them.
        activation: None for logits (the default), "softmax" or "sigmoid" for probabilities (softmax needs
            classes > 1).
        backbone_kwargs: more keyword arguments for the backbone's builder (e.g. `{"minimalistic": True}`), or None.
        edge: Edge TPU operators only: the backbone's edge variant (MobileNetV3 minimalistic), resizes lowered.
            Default False. It exists because Keras' bilinear resize is written as the
            `RESIZE_BILINEAR` version the Edge TPU compilers reject; the logits are the same wherever the sizes
            divide evenly.
        name: the model's name.

    Returns:
        A `keras.Model` taking (N, H, W, 3) RGB pixels in [0, 255] and giving (N, H, W, classes) float32 logits
        (probabilities with `activation`) at the input's size.

    Raises:
        ValueError: an invalid `classes`, `activation` or `input_shape`, an output stride the backbone does not
            build, or `backbone_weights="imagenet"` for a backbone without ImageNet weights.

    Example:
        ```python
        model = kerasseg.models.lraspp(classes=19, backbone="mobilenet_v3_small")
        model = kerasseg.models.lraspp(classes=4, edge=True, input_shape=(256, 256, 3))  # for the Edge TPU
        ```
    """
    check_segmenter_args(classes, activation)
    inputs = image_input(input_shape, input_tensor)
    features = encoder_pyramid(inputs, backbone, backbone_weights, backbone_kwargs, edge, output_stride=output_stride,
                               levels=("P3", "P5"))
    high = conv_bn_act(features["P5"], filters, 1, name="lraspp_branch")
    gate = layers.GlobalAveragePooling2D(keepdims=True, name="lraspp_pool")(features["P5"])
    gate = layers.Conv2D(filters, 1, activation="sigmoid", name="lraspp_gate")(gate)
    high = layers.Multiply(name="lraspp_gated")([high, gate])
    high = ResizeToMatch(edge=edge, name="lraspp_upsample")(high, features["P3"])
    high = layers.Conv2D(classes, 1, name="lraspp_high_logits")(high)
    low = layers.Conv2D(classes, 1, name="lraspp_low_logits")(features["P3"])
    x = layers.Add(name="lraspp_logits")([high, low])
    return segmenter(inputs, x, classes, activation, name=name, edge=edge, scores=True)


register("segmentation")(lraspp)


@register("segmentation", tiny=True)
def lraspp_tiny(**kwargs):
    """A tiny LR-ASPP (16 channels) on the tiny MobileNetV3 for tests."""
    return lraspp(**{"backbone": "mobilenet_v3_tiny", "filters": 16, "name": "lraspp_tiny", **kwargs})
