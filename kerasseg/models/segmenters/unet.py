"""U-Net (Ronneberger, Fischer and Brox, 2015).

A contracting path of two 3x3 convolutions and a 2x2 max pool per step doubles
the channels while it halves the resolution, so each level sees a wider context
(a larger receptive field) at a coarser scale. An expanding path upsamples step
by step ("up-convolution": upsample, then halve the channels) and concatenates
the same-resolution features of the contracting path: these skip connections
bring back the fine localisation that pooling threw away, and the classifier
at the end decides every pixel from both "what" (deep) and "where" (shallow).

Pixels in [0, 255] in, per-pixel float32 logits out at the input's size.
"""

from __future__ import annotations

import os

import keras
from keras import layers

from kerasseg.layers import CenterCropToMatch, ResizeToMatch, Upsample, conv_bn_act, image_input, scale_pixels
from kerasseg.models.backbone import encoder_pyramid
from kerasseg.models.heads import check_segmenter_args, segmenter
from kerasseg.models.registry import register

UPSAMPLING = ("transpose", "bilinear")
PADDING = ("same", "valid")


def valid_output_size(size, depth):
    """Output side of a valid-padding U-Net for input side `size`, or None.

    Every 3x3 valid convolution trims 2 pixels and every pool needs an even
    side, which is why the paper's 572x572 tile gives a 388x388 map.
    """
    for _ in range(depth):
        size -= 4
        if size <= 0 or size % 2:
            return None
        size //= 2
    size -= 4
    if size <= 0:
        return None
    for _ in range(depth):
        size = 2 * size - 4
    return size if size > 0 else None


def _nearest_valid_sizes(size, depth):
    below = next((s for s in range(size - 1, 0, -1) if valid_output_size(s, depth)), None)
    above = next(s for s in range(size + 1, size + 2 ** (depth + 3)) if valid_output_size(s, depth))
    return [s for s in (below, above) if s]


def _check_valid_padding_input(inputs, depth):
    for axis, size in zip(("height", "width"), inputs.shape[1:3]):
        if size is None:
            raise ValueError(
                "A valid-padding U-Net needs a fixed input height and width; "
                f"the paper's tile is 572x572. Received: input_shape={tuple(inputs.shape[1:])}"
            )
        if valid_output_size(size, depth) is None:
            raise ValueError(
                f"A valid-padding U-Net of depth {depth} cannot take input {axis} {size}: "
                f"nearest accepted sizes are {_nearest_valid_sizes(size, depth)}. "
                f"Received: input_shape={tuple(inputs.shape[1:])}"
            )


def _double_conv(x, filters, padding, batch_norm, name):
    x = conv_bn_act(x, filters, padding=padding, batch_norm=batch_norm, name=f"{name}_1")
    return conv_bn_act(x, filters, padding=padding, batch_norm=batch_norm, name=f"{name}_2")


def _upsample(x, filters, mode, batch_norm, edge, name):
    """The up-convolution: upsample 2x, halving the channels.

    Bilinear mode runs its 1x1 convolution (and batch norm) *before* the
    upsampling and the ReLU after it: both are linear and the interpolation
    weights sum to 1, so the result is the same as upsampling first, while
    the full-resolution tensor has half the channels (at 513x513 the edge
    upsampling's largest RESHAPE is 4 MiB instead of 8, under the Edge TPU's
    8 MiB of on-chip memory).
    """
    if mode == "transpose":
        return layers.Conv2DTranspose(filters, 2, strides=2, name=f"{name}_upconv")(x)
    x = conv_bn_act(x, filters, kernel_size=1, batch_norm=batch_norm, activation=None, name=f"{name}_upconv")
    x = Upsample(2, edge=edge, name=f"{name}_upsample")(x)
    return layers.Activation("relu", name=f"{name}_upconv_relu")(x)


def _backbone_unet(inputs, classes, backbone, backbone_weights, backbone_kwargs, decoder_filters, activation, edge,
                   name):
    """Encoder-decoder U-Net on a classifier's pyramid: P5 is upsampled through P4..P1 to the input."""
    features = encoder_pyramid(inputs, backbone, backbone_weights, backbone_kwargs, edge)
    x = features["P5"]
    skips = [features[f"P{level}"] for level in (4, 3, 2, 1)] + [None]
    for stage, (skip, filters) in enumerate(zip(skips, decoder_filters), start=1):
        x = Upsample(2, edge=edge, name=f"decoder_stage{stage}_upsample")(x)
        x = ResizeToMatch(edge=edge, name=f"decoder_stage{stage}_resize")(x, inputs if skip is None else skip)
        if skip is not None:
            x = layers.Concatenate(name=f"decoder_stage{stage}_concat")([x, skip])
        x = _double_conv(x, filters, "same", True, f"decoder_stage{stage}")
    return segmenter(inputs, x, classes, activation, name=name, edge=edge, resize=False)


@register("segmentation")
def unet(classes: int = 2, input_shape: tuple[int | None, int | None, int] | None = None,
         input_tensor: keras.KerasTensor | None = None, base_filters: int = 64, depth: int = 4,
         upsampling: str = "transpose", padding: str = "same", batch_norm: bool = False,
         activation: str | None = None, backbone: str | None = None,
         backbone_weights: str | os.PathLike | None = None, backbone_kwargs: dict | None = None,
         decoder_filters: tuple[int, ...] = (256, 128, 64, 32, 16), edge: bool = False,
         name: str = "unet") -> keras.Model:
    """U-Net; the defaults are the paper's network (Ronneberger et al., 2015).

    Args:
        classes: number of output classes, the channels of the logits (a positive integer; the paper segments
            cells: 2).
        input_shape: (height, width, channels); any height and width by default (None: (None, None, 3)). A
            valid-padding U-Net needs a fixed height and width that every step divides evenly (572 at depth 4).
        input_tensor: optional Keras tensor to build on instead of a new Input (`input_shape` is then ignored).
        base_filters: channels of the first level, doubled at every step down (64). Ignored with a `backbone`.
        depth: number of down (and up) steps, a positive integer (4); each step down halves the resolution and
            widens the receptive field. Ignored with a `backbone` (always five stages).
        upsampling: "transpose" (the paper's learnt 2x2 up-convolution) or
            "bilinear" (fixed bilinear upsampling and a 1x1 convolution; computed 1x1 first, which gives the
            same result with half the full-resolution channels). Ignored with a `backbone`.
        padding: "same" keeps the input's size; "valid" is the paper's
            unpadded network (572x572 in, 388x388 out; skips are cropped).
        batch_norm: batch normalisation after every convolution (not in the
            paper, which predates it; it makes small U-Nets train much faster). Default False; the decoder on a
            `backbone` always has it.
        activation: None for logits (the default), or "softmax" / "sigmoid" (softmax needs classes > 1).
        backbone: a registered classifier to use as the encoder instead (its
            P1..P5 are the skips; `backbone_weights` its weights); the decoder
            has five upsampling stages of `decoder_filters` channels with batch
            norm, the last one at the input's resolution. None (the default): the paper's own encoder.
            Needs padding="same".
        backbone_weights: the backbone's weights: None (random initialisation, the default), "imagenet" (its
            published ImageNet weights; a ValueError if it has none) or the path to a weights file.
            Used only with a `backbone`.
        backbone_kwargs: more keyword arguments for the backbone's builder (e.g. `{"alpha": 0.35}` for
            MobileNetV2), or None. Used only with a `backbone`.
        decoder_filters: channels of the five decoder stages on a `backbone`, from P4's resolution to the
            input's ((256, 128, 64, 32, 16)). Used only with a `backbone`.
        edge: Edge TPU operators only: resizes lowered, the backbone's edge variant (docs/android-coral.md,
            "Edge TPU"). Default False. It exists because Keras' bilinear resize is written as the
            `RESIZE_BILINEAR` version the Edge TPU compilers reject; the logits are the same wherever the sizes
            divide evenly.
        name: the model's name.

    Returns:
        A `keras.Model` taking (N, H, W, 3) RGB pixels in [0, 255] and giving (N, H', W', classes) float32
        logits (probabilities with `activation`): H' = H and W' = W with padding="same", smaller with
        padding="valid" (`valid_output_size`: 388 for 572).

    Raises:
        ValueError: an unknown `upsampling` or `padding`, a `depth` that is not a positive integer, an invalid
            `classes` or `activation`, padding="valid" with a `backbone`, or a valid-padding input size the
            network cannot take (the message names the nearest accepted sizes).

    Example:
        ```python
        model = kerasseg.models.unet(classes=4, base_filters=16)
        model(np.zeros((1, 97, 131, 3))).shape  # TensorShape([1, 97, 131, 4])
        model = kerasseg.models.unet(classes=2, padding="valid", input_shape=(572, 572, 3))  # 388x388 out
        model = kerasseg.models.unet(classes=4, backbone="efficientnet_b0", edge=True)
        ```
    """
    check_segmenter_args(classes, activation)
    if upsampling not in UPSAMPLING:
        raise ValueError(f"upsampling must be one of {UPSAMPLING}. Received: upsampling={upsampling!r}")
    if padding not in PADDING:
        raise ValueError(f"padding must be one of {PADDING}. Received: padding={padding!r}")
    if not isinstance(depth, int) or depth < 1:
        raise ValueError(f"depth must be a positive integer. Received: depth={depth!r}")
    inputs = image_input(input_shape, input_tensor)
    if backbone is not None:
        if padding != "same":
            raise ValueError(f"A U-Net on a backbone uses padding='same'. Received: padding={padding!r}")
        return _backbone_unet(inputs, classes, backbone, backbone_weights, backbone_kwargs, decoder_filters,
                              activation, edge, name)
    if padding == "valid":
        _check_valid_padding_input(inputs, depth)

    x = scale_pixels(inputs)
    skips = []
    for level in range(depth):
        x = _double_conv(x, base_filters * 2**level, padding, batch_norm, f"encoder_stage{level + 1}")
        skips.append(x)
        # "same" pooling rounds odd sides up; the decoder resizes back to the skip.
        x = layers.MaxPooling2D(2, padding=padding, name=f"encoder_stage{level + 1}_pool")(x)
    x = _double_conv(x, base_filters * 2**depth, padding, batch_norm, "bottleneck")

    for level in reversed(range(depth)):
        stage = f"decoder_stage{depth - level}"
        x = _upsample(x, base_filters * 2**level, upsampling, batch_norm, edge, stage)
        skip = skips[level]
        if padding == "valid":
            skip = CenterCropToMatch(name=f"{stage}_crop")(skip, x)
        else:
            x = ResizeToMatch(edge=edge, name=f"{stage}_resize")(x, skip)
        x = layers.Concatenate(name=f"{stage}_concat")([skip, x])
        x = _double_conv(x, base_filters * 2**level, padding, batch_norm, stage)

    return segmenter(inputs, x, classes, activation, name=name, edge=edge, resize=False)


@register("segmentation")
def unet_edge(**kwargs) -> keras.Model:
    """An edge-sized U-Net: 16 base filters, batch norm, bilinear upsampling, edge=True.

    About 1.9M parameters instead of 31M; every op (conv, max pool, bilinear
    upsampling as depthwise convolutions, concatenation) has an int8 kernel on
    phones and maps to the Edge TPU. Takes every argument of `unet` (these
    settings are its defaults, which any keyword overrides) and returns its
    `keras.Model`.

    Example:
        ```python
        model = kerasseg.models.unet_edge(classes=4, input_shape=(256, 256, 3))
        ```
    """
    config = dict(base_filters=16, depth=4, upsampling="bilinear", batch_norm=True, edge=True, name="unet_edge")
    return unet(**{**config, **kwargs})


@register("segmentation", tiny=True)
def unet_backbone_tiny(**kwargs):
    """A tiny encoder-decoder U-Net on the tiny EfficientNet, for tests."""
    config = dict(backbone="efficientnet_tiny", decoder_filters=(16, 16, 8, 8, 8), name="unet_backbone_tiny")
    return unet(**{**config, **kwargs})


@register("segmentation", tiny=True)
def unet_tiny(**kwargs):
    """The smallest U-Net (4 base filters, 2 levels), for fast tests."""
    config = dict(base_filters=4, depth=2, batch_norm=True, name="unet_tiny")
    return unet(**{**config, **kwargs})
