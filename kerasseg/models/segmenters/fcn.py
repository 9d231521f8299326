"""Fully Convolutional Networks: FCN-32s, FCN-16s, FCN-8s (Long, Shelhamer and Darrell, 2015).

A classifier's fully connected layers throw the spatial layout away. Seen
as convolutions, they keep it: fc6 is a 7x7 convolution over pool5 and fc7 a
1x1, so the network runs on any image size and outputs a coarse *score map*
(one class vector per 32x32-pixel cell) instead of one vector
(`convolutionalize()` does this to any trained classifier, weights
included). Learnable transposed convolutions, initialised to bilinear
interpolation, upsample the scores to the input; because stride-32 scores
are coarse, FCN-16s and FCN-8s first fuse them with scores from pool4 and
pool3 (skip connections from finer, shallower layers).

Any registered classifier is a backbone: the decoder reads P3, P4 and P5
from its feature pyramid (VGG's pool3, pool4, pool5).
"""

from __future__ import annotations

import os

import keras
import numpy as np
from keras import layers, ops

from kerasseg.layers import ResizeToMatch, image_input
from kerasseg.models.backbone import encoder_pyramid
from kerasseg.models.heads import check_segmenter_args, segmenter
from kerasseg.models.registry import create_model, register


@keras.saving.register_keras_serializable(package="kerasseg")
class BilinearUpsampling(keras.initializers.Initializer):
    """Conv2DTranspose kernel (k, k, channels, channels) that performs bilinear upsampling per channel."""

    def __call__(self, shape, dtype=None):
        size, _, out_channels, in_channels = shape
        factor = (size + 1) // 2
        center = factor - 1 if size % 2 == 1 else factor - 0.5
        grid = np.ogrid[:size, :size]
        kernel = (1 - abs(grid[0] - center) / factor) * (1 - abs(grid[1] - center) / factor)
        weights = np.zeros(shape, dtype="float32")
        for c in range(min(out_channels, in_channels)):
            weights[:, :, c, c] = kernel
        return ops.convert_to_tensor(weights, dtype=dtype)

    def get_config(self):
        return {}


def _upsample(x, classes, factor, name, dtype=None):
    return layers.Conv2DTranspose(classes, 2 * factor, strides=factor, padding="same", use_bias=False,
                                  kernel_initializer=BilinearUpsampling(), dtype=dtype, name=name)(x)


def fcn(stride: int = 8, classes: int = 21, backbone: str = "vgg16", backbone_weights: str | os.PathLike | None = None,
        input_shape: tuple[int | None, int | None, int] | None = None, input_tensor: keras.KerasTensor | None = None,
        fc_units: int | None = 4096, fc_kernel: int = 7, dropout: float = 0.5, activation: str | None = None,
        backbone_kwargs: dict | None = None, edge: bool = False, name: str | None = None) -> keras.Model:
    """FCN-`stride`s on any registered classifier.

    The stride-32 class scores of P5 are upsampled by transposed convolutions initialised to bilinear
    interpolation; FCN-16s and FCN-8s first fuse them, 2x at a time, with 1x1 scores of P4 (pool4) and P3
    (pool3), skip connections from finer layers that recover detail the coarse scores lack.

    Args:
        stride: 32, 16 or 8 (the default): the finest scores fused (pool5, + pool4, + pool3), and the factor of
            the final upsampling.
        classes: number of output classes, the channels of the logits (a positive integer; Pascal VOC: 21).
        backbone: name of a registered classifier used as the encoder ("vgg16", the paper's); the decoder reads
            P3, P4 and P5 of its feature pyramid.
        backbone_weights: the backbone's weights: None (random initialisation, the default), "imagenet" or the
            path to a weights file. With "imagenet" and a classifier whose top is fully connected (VGG), fc6 and
            fc7 start from its fc1 and fc2, reshaped into convolutions, as in the paper.
        input_shape: (height, width, channels) of the input; height and width may be None. None (the default):
            (None, None, 3), RGB pixels of any size.
        input_tensor: an existing Keras tensor to build the model on instead of a new `keras.Input`; when given,
            `input_shape` is ignored.
        fc_units: channels of fc6 (a `fc_kernel` x `fc_kernel` convolution on P5) and fc7 (1x1), both with ReLU
            (4096, VGG's fc1 and fc2); None or 0 leaves them out (e.g. on ResNet) and scores P5 directly.
        fc_kernel: kernel size of fc6 (7: VGG's fc1 over its 7x7 pool5).
        dropout: dropout rate after fc6 and after fc7 (0.5).
        activation: None for logits (the default), "softmax" or "sigmoid" for probabilities (softmax needs
            classes > 1).
        backbone_kwargs: more keyword arguments for the backbone's builder, or None.
        edge: Edge TPU operators only (default False): resizes lowered to fixed depthwise convolutions and the
            backbone's edge variant where it has one (docs/android-coral.md, "Edge TPU"). It exists because
            Keras' bilinear resize is written as the `RESIZE_BILINEAR` version the Edge TPU compilers reject.
        name: the model's name; None (the default): "fcn{stride}s".

    Returns:
        A `keras.Model` taking (N, H, W, 3) RGB pixels in [0, 255] and giving (N, H, W, classes) float32 logits
        (probabilities with `activation`) at the input's size.

    Raises:
        ValueError: a `stride` other than 8, 16 or 32, an invalid `classes`, `activation` or `input_shape`,
            or `backbone_weights="imagenet"` for a backbone without published ImageNet weights.

    Example:
        ```python
        model = kerasseg.models.fcn8s(classes=21)  # 134.5M parameters
        model(np.zeros((1, 97, 131, 3))).shape  # any size in, same size out: (1, 97, 131, 21)
        model = kerasseg.models.fcn(stride=16, classes=4, backbone="resnet50", fc_units=None)
        ```
    """
    if stride not in (8, 16, 32):
        raise ValueError(f"stride must be 8, 16 or 32. Received: stride={stride!r}")
    check_segmenter_args(classes, activation)
    inputs = image_input(input_shape, input_tensor)
    features = encoder_pyramid(inputs, backbone, backbone_weights, backbone_kwargs, edge,
                               levels=("P3", "P4", "P5"))

    x = features["P5"]
    if fc_units:
        x = layers.Conv2D(fc_units, fc_kernel, padding="same", activation="relu", name="fc6")(x)
        x = layers.Dropout(dropout, name="drop6")(x)
        x = layers.Conv2D(fc_units, 1, activation="relu", name="fc7")(x)
        x = layers.Dropout(dropout, name="drop7")(x)
    score = layers.Conv2D(classes, 1, name="score_fr")(x)
    for level, key in ((16, "P4"), (8, "P3")):
        if stride > level:
            break
        skip = layers.Conv2D(classes, 1, name=f"score_pool{key[1]}")(features[key])
        up = _upsample(score, classes, 2, name=f"upscore_to_pool{key[1]}")
        up = ResizeToMatch(edge=edge, name=f"upscore_to_pool{key[1]}_resize")(up, skip)
        score = layers.Add(name=f"fuse_pool{key[1]}")([up, skip])
    logits = _upsample(score, classes, stride, name=f"upscore{stride}", dtype="float32")
    model = segmenter(inputs, logits, classes, activation, name=name or f"fcn{stride}s", edge=edge, scores=True)
    if backbone_weights == "imagenet" and fc_units:
        _init_fc_from_classifier(model, backbone, fc_kernel)
    return model


def _init_fc_from_classifier(model, backbone, fc_kernel):
    """fc6/fc7 from the ImageNet classifier's fc1/fc2, when it has such layers of the same size."""
    classifier = create_model(backbone, weights="imagenet")
    dense = [layer for layer in classifier.layers if isinstance(layer, layers.Dense)][:2]
    if len(dense) < 2:
        return
    convs = convolutionalize(classifier, keep_top=False)
    for target, source in zip(("fc6", "fc7"), [convs.get_layer(d.name) for d in dense]):
        if tuple(model.get_layer(target).kernel.shape) == tuple(source.kernel.shape):
            model.get_layer(target).set_weights(source.get_weights())


def convolutionalize(model: keras.Model, keep_top: bool = True) -> keras.Model:
    """The classifier `model` with its Dense layers as equivalent convolutions, for any input size.

    The first Dense after a Flatten of an (h, w, c) map becomes an h x w
    convolution (its kernel reshaped); later Dense layers become 1x1
    convolutions; a global pooling before the first Dense is dropped and the
    Dense layers apply per position instead. The result maps an image of the
    training size to a 1x1 score map equal to the classifier's output, and a
    larger image to a spatial score map. `keep_top=False` stops before the
    last Dense layer (the class scores).

    Args:
        model: a classifier with Dense layers after a Flatten or a global pooling (e.g. VGG16 with its top).
        keep_top: keep the last Dense layer (the class scores) as a 1x1 convolution (True, the default), or
            stop before it (False).

    Returns:
        A `keras.Model` named "{model.name}_convolutional", taking images of any height and width (the
        classifier's channels) and giving a score map with the Dense layers' units as channels, its weights
        those of `model`.

    Raises:
        ValueError: `model` has no Dense layers, or no Flatten or global pooling before them.

    Example:
        ```python
        vgg = kerasseg.models.vgg16(weights="imagenet")
        scores = kerasseg.models.convolutionalize(vgg)(np.zeros((1, 384, 384, 3)))  # (1, 6, 6, 1000)
        ```
    """
    dense = [layer for layer in model.layers if isinstance(layer, layers.Dense)]
    if not dense:
        raise ValueError(f"{model.name} has no Dense layers to convolutionalize.")
    # the Flatten / global pooling that feeds the classifier: the last one before the first Dense
    # (squeeze-and-excitation blocks have global poolings of their own further up)
    first_dense = model.layers.index(dense[0])
    pools = (layers.Flatten, layers.GlobalAveragePooling2D, layers.GlobalMaxPooling2D)
    flatten = next((layer for layer in reversed(model.layers[:first_dense]) if isinstance(layer, pools)), None)
    if flatten is None:
        raise ValueError(f"{model.name} has no Flatten or global pooling before its Dense layers.")
    body = keras.Model(model.inputs, flatten.input)
    config = body.get_config()
    config["layers"][0]["config"]["batch_shape"] = (None, None, None, model.inputs[0].shape[-1])
    body_any_size = keras.Model.from_config(config)
    body_any_size.set_weights(body.get_weights())

    x = body_any_size.output
    height, width = flatten.input.shape[1:3] if isinstance(flatten, layers.Flatten) else (1, 1)
    for i, layer in enumerate(dense if keep_top else dense[:-1]):
        kernel, *bias = layer.get_weights()
        size = (height, width) if i == 0 else (1, 1)
        conv = layers.Conv2D(layer.units, size, activation=layer.activation, use_bias=bool(bias), name=layer.name)
        x = conv(x)
        conv.set_weights([kernel.reshape(*size, -1, layer.units), *bias])
    return keras.Model(body_any_size.inputs, x, name=f"{model.name}_convolutional")


__all__ = ["BilinearUpsampling", "convolutionalize", "fcn"]


@register("segmentation")
def fcn32s(**kwargs) -> keras.Model:
    """FCN-32s: scores from pool5 only, upsampled 32x.

    Takes every argument of `fcn` but `stride` (see there) and returns its `keras.Model`.
    """
    return fcn(**{"stride": 32, **kwargs})


@register("segmentation")
def fcn16s(**kwargs) -> keras.Model:
    """FCN-16s: pool5 scores fused with pool4's, upsampled 16x.

    Takes every argument of `fcn` but `stride` (see there) and returns its `keras.Model`.
    """
    return fcn(**{"stride": 16, **kwargs})


@register("segmentation")
def fcn8s(**kwargs) -> keras.Model:
    """FCN-8s: pool5 + pool4 + pool3 scores, upsampled 8x (the paper's best).

    Takes every argument of `fcn` but `stride` (see there) and returns its `keras.Model`.
    """
    return fcn(**{"stride": 8, **kwargs})


@register("segmentation", tiny=True)
def fcn8s_tiny(**kwargs):
    """A tiny FCN-8s on the tiny VGG (fc6/fc7: 3x3 and 1x1, 32 channels) for tests."""
    config = dict(stride=8, backbone="vgg_tiny", fc_units=32, fc_kernel=3, name="fcn8s_tiny")
    return fcn(**{**config, **kwargs})
