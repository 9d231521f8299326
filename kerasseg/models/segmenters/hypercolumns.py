"""Hypercolumns (Hariharan, Arbelaez, Girshick and Malik, 2015).

The hypercolumn at a pixel is the stack of the activations of *all* the
chosen layers above that pixel: early layers say precisely where edges are,
deep layers say what the object is, and neither alone segments well. Each
chosen pyramid level is upsampled (bilinear) to the finest one, the maps are
concatenated, and a small per-pixel classifier (1x1 convolutions) labels
every position, whose scores are upsampled to the input.
"""

from __future__ import annotations

import os

import keras
from keras import layers

from kerasseg.layers import ResizeToMatch, conv_bn_act, image_input
from kerasseg.models.backbone import encoder_pyramid
from kerasseg.models.heads import check_segmenter_args, segmenter
from kerasseg.models.registry import register


def hypercolumns(classes: int = 21, backbone: str = "vgg16", backbone_weights: str | os.PathLike | None = None,
                 levels: tuple[str, ...] = ("P2", "P3", "P4", "P5"), hidden: int = 512,
                 input_shape: tuple[int | None, int | None, int] | None = None,
                 input_tensor: keras.KerasTensor | None = None, activation: str | None = None,
                 backbone_kwargs: dict | None = None, edge: bool = False, name: str = "hypercolumns") -> keras.Model:
    """Hypercolumn segmenter on any registered classifier.

    Each chosen pyramid level is resized (bilinear) to the finest of them and
    concatenated: shallow levels locate edges precisely, deep ones say what the
    object is. A per-pixel classifier (a hidden 1x1 convolution with batch norm
    and ReLU, then 1x1 to the classes) scores every position at the finest
    level's stride, and the scores are upsampled to the input.

    Args:
        classes: number of output classes, the channels of the logits (a positive integer; 21: Pascal VOC).
        backbone: name of a registered classifier used as the encoder ("vgg16"), built with
            `features_only=True`.
        backbone_weights: the backbone's weights: None (random initialisation, the default), "imagenet" (its
            published ImageNet weights; a ValueError if it has none) or the path to a weights file.
        levels: pyramid levels whose features form the hypercolumn, a non-empty
            subset of "P1".."P5" (P2..P5 by default; the paper used pool2, conv4
            and fc7 of an AlexNet-like network).
        hidden: width of the per-pixel classifier's hidden 1x1 layer (512).
        input_shape: (height, width, channels) of the input; height and width may be None. None (the default):
            (None, None, 3), RGB pixels of any size.
        input_tensor: an existing Keras tensor to build the model on instead of a new `keras.Input`; when given,
            `input_shape` is ignored.
        activation: None for logits (the default), "softmax" or "sigmoid" for probabilities (softmax needs
            classes > 1).
        backbone_kwargs: more keyword arguments for the backbone's builder (e.g. `{"alpha": 0.35}` for
            MobileNetV2), or None.
        edge: Edge TPU operators only: resizes lowered, the backbone's edge variant (docs/android-coral.md,
            "Edge TPU"). Default False. It exists because Keras' bilinear resize is written as the
            `RESIZE_BILINEAR` version the Edge TPU compilers reject; the logits are the same wherever the sizes
            divide evenly.
        name: the model's name.

    Returns:
        A `keras.Model` taking (N, H, W, 3) RGB pixels in [0, 255] and giving (N, H, W, classes) float32 logits
        (probabilities with `activation`) at the input's size.

    Raises:
        ValueError: empty `levels` or a level the backbone does not have, an invalid `classes`, `activation`
            or `input_shape`, or `backbone_weights="imagenet"` for a backbone without ImageNet weights.

    Example:
        ```python
        model = kerasseg.models.hypercolumns(classes=21, backbone="resnet50", levels=("P2", "P4", "P5"))
        ```
    """
    check_segmenter_args(classes, activation)
    if not levels:
        raise ValueError(f"levels must be a non-empty subset of P1..P5. Received: levels={levels!r}")
    inputs = image_input(input_shape, input_tensor)
    features = encoder_pyramid(inputs, backbone, backbone_weights, backbone_kwargs, edge, levels=levels)
    finest = features[min(levels, key=lambda key: int(key[1]))]
    columns = [ResizeToMatch(edge=edge, name=f"hypercolumn_{key}_resize")(features[key], finest) for key in levels]
    x = layers.Concatenate(name="hypercolumn")(columns) if len(columns) > 1 else columns[0]
    x = conv_bn_act(x, hidden, 1, name="classifier_hidden")
    return segmenter(inputs, x, classes, activation, name=name, edge=edge, head="classifier")


register("segmentation")(hypercolumns)


@register("segmentation", tiny=True)
def hypercolumns_tiny(**kwargs):
    """A tiny hypercolumn segmenter on the tiny ResNet (hidden width 16) for tests."""
    config = dict(backbone="resnet_tiny", hidden=16, name="hypercolumns_tiny")
    return hypercolumns(**{**config, **kwargs})
