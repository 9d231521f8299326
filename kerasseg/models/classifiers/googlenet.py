"""GoogLeNet, Inception v1 (Szegedy et al., 2014), with its auxiliary classifiers.

A stem of plain convolutions, then nine Inception modules (parallel 1x1,
3x3, 5x5 and pooling branches, with 1x1 bottlenecks in front of the
expensive ones), average pooling and one fully connected classifier: 22
layers deep with 6.8M weights, 12x fewer than AlexNet.

Auxiliary classifiers: at that depth (before batch norm and residual
connections) gradients fade on their way to the lower layers. Two small
classifiers after inception 4a and 4d inject extra gradient there during
training (their losses weighted 0.3); at test time they are removed.
`googlenet(aux_logits=True)` builds the three-output training model and
`googlenet_inference(model)` the deployable one that shares its weights.

As in the paper the convolutions have biases and no batch norm; the local
response normalisation of the paper is left out (later work found it
useless). `batch_norm=True` adds batch norm after every convolution.
"""

from __future__ import annotations

import os

import keras
from keras import layers

from kerasseg.layers import PixelNormalization, conv_bn_act, inception_module
from kerasseg.models import backbone
from kerasseg.models.registry import Encoder, register

# Table 1: #1x1, #3x3 reduce, #3x3, #5x5 reduce, #5x5, pool proj
MODULES = {
    "3a": (64, 96, 128, 16, 32, 32), "3b": (128, 128, 192, 32, 96, 64),
    "4a": (192, 96, 208, 16, 48, 64), "4b": (160, 112, 224, 24, 64, 64), "4c": (128, 128, 256, 24, 64, 64),
    "4d": (112, 144, 288, 32, 64, 64), "4e": (256, 160, 320, 32, 128, 128),
    "5a": (256, 160, 320, 32, 128, 128), "5b": (384, 192, 384, 48, 128, 128),
}
AUX_AFTER = ("4a", "4d")
AUX_LOSS_WEIGHTS = (1.0, 0.3, 0.3)


def _auxiliary_classifier(x, classes, classifier_activation, fc_units, name):
    """5x5/3 average pool, 1x1 conv 128 + ReLU, FC 1024 + ReLU, dropout 0.7, FC classes."""
    x = layers.AveragePooling2D(5, strides=3, name=f"{name}_pool")(x)
    x = layers.Conv2D(128, 1, activation="relu", name=f"{name}_conv")(x)
    x = layers.Flatten(name=f"{name}_flatten")(x)
    x = layers.Dense(fc_units, activation="relu", name=f"{name}_fc")(x)
    x = layers.Dropout(0.7, name=f"{name}_dropout")(x)
    return layers.Dense(classes, activation=classifier_activation, name=f"{name}_predictions")(x)


def googlenet(include_top: bool = True, weights: str | os.PathLike | None = None,
              input_tensor: keras.KerasTensor | None = None,
              input_shape: tuple[int | None, int | None, int] | None = None, pooling: str | None = None,
              classes: int = 1000, classifier_activation: str | None = "softmax", features_only: bool = False,
              output_stride: int = 32, aux_logits: bool = False, batch_norm: bool = False,
              modules: dict | None = None, stem: tuple[int, int, int] = (64, 64, 192), aux_fc_units: int = 1024,
              name: str = "googlenet") -> keras.Model:
    """GoogLeNet (Table 1 of the paper).

    Takes keras.applications' arguments and more; keras.applications
    publishes no GoogLeNet weights, so `weights` is None or a file.

    Args:
        include_top: end in the classifier, global pooling and a `classes`-way Dense layer (True, the
            default), or stop at the last feature map (False).
        weights: None (random initialisation, the default) or the path to an existing weights file; "imagenet"
            is a ValueError (there are no published GoogLeNet weights).
        input_tensor: an existing Keras tensor to build on instead of a new `keras.Input` (`input_shape` is then
            ignored).
        input_shape: (height, width, channels) of the input; height and width may be None (any size, the
            default: (None, None, 3)), and must be at least 32 pixels.
            With aux_logits the size must be fixed, at least 65 (None: 224x224).
        pooling: with include_top=False, None (the 4-D feature map, the default), "avg" or "max" (global pooling
            to (N, channels)).
        classes: number of classes of the top's Dense layer (1000, ImageNet's); used with include_top only.
        classifier_activation: activation of the top's Dense layer ("softmax", the default; None for logits).
        aux_logits: also return the two auxiliary classifiers' predictions,
            as outputs [main, aux1 (after 4a), aux2 (after 4d)]; train with
            `compile(loss=[...] * 3, loss_weights=AUX_LOSS_WEIGHTS)`. Needs a
            fixed input size (the auxiliary heads flatten a 4x4 map at 224).
            Default False.
        batch_norm: batch norm after every convolution (not in the paper). Default False.
        features_only, output_stride: the pyramid model (P3 = 3b, P4 = 4e,
            P5 = 5b) and dilated last stages (output_stride 32, the default, 16 or 8).
        modules: the Inception modules' branch widths, {"3a": (1x1, 3x3 reduce, 3x3, 5x5 reduce, 5x5, pool
            projection), ...}; None (the default): the paper's `MODULES`.
        stem: channels of conv1 (7x7), conv2's 1x1 reduction and conv2 (3x3) ((64, 64, 192)).
        aux_fc_units: units of the auxiliary classifiers' fully connected layer (1024). `modules`, `stem` and
            `aux_fc_units` are the configuration (tiny variants).
        name: the model's name.

    Returns:
        A `keras.Model` taking (N, H, W, 3) RGB pixels in [0, 255] and giving (N, classes) class probabilities
        with the top (with `aux_logits` the list [main, aux1, aux2] of three), without it the last feature map
        or, with `pooling`, (N, channels); with `features_only` the dict {"P1": ..., "P5": ...}.

    Raises:
        ValueError: weights="imagenet"; aux_logits without the top, with features_only, or with an input of no
            fixed size; an unknown `pooling` or `output_stride`; an input smaller than 32 (65 with aux_logits).

    Example:
        ```python
        model = kerasseg.models.googlenet(aux_logits=True, classes=10)
        model.compile(loss=["sparse_categorical_crossentropy"] * 3, loss_weights=kerasseg.models.AUX_LOSS_WEIGHTS)
        deployable = kerasseg.models.googlenet_inference(model)  # the main classifier only
        ```
    """
    if weights == "imagenet":
        raise ValueError(
            "keras.applications publishes no GoogLeNet weights; use weights=None or the path to a weights "
            "file saved from this model. Received: weights='imagenet'"
        )
    backbone.check_classifier_args(weights, include_top, classes, pooling, output_stride)
    if aux_logits and (not include_top or features_only):
        raise ValueError("aux_logits=True needs include_top=True and features_only=False. Received: aux_logits=True")
    if aux_logits and input_shape is None and input_tensor is None:
        input_shape = (224, 224, 3)
    # the auxiliary heads' 5x5 pool needs a 5x5 map at stride 16
    inputs = backbone.classifier_input(input_shape, input_tensor, weights, min_size=65 if aux_logits else 32)
    if aux_logits and None in inputs.shape[1:3]:
        raise ValueError(
            "aux_logits=True needs a fixed input height and width (the auxiliary classifiers flatten "
            f"their pooled map). Received: input_shape={tuple(inputs.shape[1:])}"
        )
    modules = modules or MODULES
    plan = backbone.stage_strides(output_stride)

    def pool(x, stage, name):
        stride, _ = plan[stage - 1]
        return layers.MaxPooling2D(3, strides=stride, padding="same", name=name)(x)

    x = PixelNormalization("unit", name="preprocess")(inputs)
    pyramid = {"P1": conv_bn_act(x, stem[0], 7, strides=2, batch_norm=batch_norm, name="conv1_7x7_s2")}
    x = pool(pyramid["P1"], 2, "pool1_3x3_s2")
    x = conv_bn_act(x, stem[1], 1, batch_norm=batch_norm, name="conv2_3x3_reduce")
    pyramid["P2"] = x = conv_bn_act(x, stem[2], 3, batch_norm=batch_norm, name="conv2_3x3")
    x = pool(x, 3, "pool2_3x3_s2")
    aux_outputs = []
    for stage, keys in ((3, ("3a", "3b")), (4, ("4a", "4b", "4c", "4d", "4e")), (5, ("5a", "5b"))):
        if stage > 3:
            x = pool(x, stage, f"pool{stage - 1}_3x3_s2")
        dilation = plan[stage - 1][1]
        for key in keys:
            x = inception_module(x, *modules[key], dilation=dilation, batch_norm=batch_norm, name=f"inception_{key}")
            if aux_logits and key in AUX_AFTER:
                aux_outputs.append(_auxiliary_classifier(x, classes, classifier_activation, aux_fc_units,
                                                         f"aux{len(aux_outputs) + 1}"))
        pyramid[f"P{stage}"] = x

    def top(x):
        x = layers.GlobalAveragePooling2D(name="avg_pool")(x)
        return layers.Dropout(0.4, name="dropout")(x)

    model = backbone.finish(inputs, x, pyramid, include_top=include_top, pooling=pooling, classes=classes,
                            classifier_activation=classifier_activation, features_only=features_only,
                            name=name, top=top)
    if aux_logits:
        model = keras.Model(inputs, [model.output, *aux_outputs], name=name)
    return backbone.load_weights(model, weights)


def googlenet_inference(model: keras.Model) -> keras.Model:
    """The deployable GoogLeNet: the main classifier only, sharing the trained weights."""
    main = model.get_layer("predictions").output
    return keras.Model(model.inputs, main, name=model.name)


def _encoder(modules=MODULES, stem=(64, 64, 192)):
    """P1 conv1, P2 conv2, P3..P5 the last inception module of each stage (3b, 4e, 5b): its four branches."""
    width = {key: c1 + c3 + c5 + pp for key, (c1, _, c3, _, c5, pp) in modules.items()}
    return Encoder({"P1": stem[0], "P2": stem[2], "P3": width["3b"], "P4": width["4e"], "P5": width["5b"]})


__all__ = ["AUX_LOSS_WEIGHTS", "googlenet_inference"]
register("classification", encoder=_encoder())(googlenet)
_TINY_MODULES = {k: (4, 4, 8, 4, 4, 4) for k in MODULES}


@register("classification", tiny=True, encoder=_encoder(_TINY_MODULES, (8, 8, 16)))
def googlenet_tiny(**kwargs):
    """A tiny GoogLeNet (every module 4..8 channels per branch, batch norm) for tests."""
    config = dict(modules=_TINY_MODULES, stem=(8, 8, 16), aux_fc_units=16, batch_norm=True, name="googlenet_tiny")
    return googlenet(**{**config, **kwargs})
