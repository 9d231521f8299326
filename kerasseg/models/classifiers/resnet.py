"""ResNet (He et al., 2015), SE-ResNet (Hu et al., 2018) and the plain networks they are measured against.

The degradation problem: past some depth, a plain stack of convolutions gets
*worse* training error as layers are added. Overfitting cannot explain that
(training error rises too), and a deeper network could copy a shallower one
by making its extra layers identities, so the solvers are failing to find
such solutions. A residual block asks its layers for F(x) = H(x) - x and adds
x back through a shortcut: an identity is then just F = 0, and gradients flow
through the additions unattenuated, so depth helps again (34 beats 18, 152
beats 50). Measured here (benchmarks/degradation.py, `resnet_cifar` on the
shape classification data, 12 epochs): plain-56 ends at 62.9% training
error against plain-20's 0.9%; ResNet-56 at 0.4% against ResNet-20's 1.5%.

Two block types: the *basic* block (two 3x3 convolutions; ResNet-18/34) and
the *bottleneck* block (1x1 reduces the channels 4x, 3x3 works on the thin
tensor, 1x1 restores them; ResNet-50/101/152), which makes depth affordable.

SE-ResNet is the same network with a squeeze-and-excitation gate on the
residual branch of every block (`attention="se"`), not a second ResNet.
`shortcut=False` removes the shortcuts: the paper's plain baseline.

Layer names and order are keras.applications' for ResNet-50/101/152, whose
published ImageNet weight files load unchanged (`weights="imagenet"`).
"""

from __future__ import annotations

import os

import keras
from keras import layers

from kerasseg.layers import PixelNormalization, ZeroPadShortcut, conv_bn_act, squeeze_excite
from kerasseg.models import backbone
from kerasseg.models.registry import Encoder, register

_BN_EPSILON = 1.001e-5  # keras.applications' value
BLOCKS = {18: ("basic", (2, 2, 2, 2)), 34: ("basic", (3, 4, 6, 3)), 50: ("bottleneck", (3, 4, 6, 3)),
          101: ("bottleneck", (3, 4, 23, 3)), 152: ("bottleneck", (3, 8, 36, 3))}
ATTENTION = (None, "se")
SHORTCUTS = (True, False, "A", "B")  # True: the default, B (projection where the shape changes); False: plain
_BASE = "https://storage.googleapis.com/tensorflow/keras-applications/resnet/"
_HASHES = {
    "resnet50": ("2cb95161c43110f7111970584f804107", "4d473c1dd8becc155b73f8504c6f6626"),
    "resnet101": ("f1aeb4b969a6efcfb50fad2f0c20cfc5", "88cf7a10940856eca736dc7b7e228a21"),
    "resnet152": ("100835be76be38e30d865e96f2aaae62", "ee4c566cf9a93f14d82f913c2dc6dd0c"),
}
PRETRAINED = {
    name: backbone.PretrainedWeights(_BASE, f"{name}_weights_tf_dim_ordering_tf_kernels.h5", top,
                                     f"{name}_weights_tf_dim_ordering_tf_kernels_notop.h5", notop)
    for name, (top, notop) in _HASHES.items()
}


def _conv_bn(x, filters, kernel_size, strides, dilation, use_bias, name, activation=True):
    return conv_bn_act(x, filters, kernel_size, strides=strides, dilation_rate=dilation,
                       padding="same" if kernel_size > 1 else "valid", use_bias=use_bias,
                       bn_epsilon=_BN_EPSILON, activation="relu" if activation else None, name=name)


def residual_block(x, filters, kind, stride=1, dilation=1, shortcut=True, attention=None, se_ratio=16,
                   use_bias=True, name=None):
    """One basic or bottleneck block; `filters` is the bottleneck (inner) width."""
    out_filters = filters * (4 if kind == "bottleneck" else 1)
    if shortcut == "A" and (stride != 1 or x.shape[-1] != out_filters):
        identity = ZeroPadShortcut(stride, out_filters, name=f"{name}_0_pad")(x)  # option A: no parameters
    elif shortcut and (stride != 1 or x.shape[-1] != out_filters):
        # projection shortcut (the paper's option B): a strided 1x1 convolution.
        # Built first, as keras.applications does, so weight files load in order.
        identity = _conv_bn(x, out_filters, 1, stride, 1, use_bias, f"{name}_0", activation=False)
    else:
        identity = x
    if kind == "bottleneck":
        y = _conv_bn(x, filters, 1, stride, 1, use_bias, f"{name}_1")
        y = _conv_bn(y, filters, 3, 1, dilation, use_bias, f"{name}_2")
        y = _conv_bn(y, out_filters, 1, 1, 1, use_bias, f"{name}_3", activation=False)
    else:
        y = _conv_bn(x, filters, 3, stride, dilation, use_bias, f"{name}_1")
        y = _conv_bn(y, filters, 3, 1, dilation, use_bias, f"{name}_2", activation=False)
    if attention == "se":
        y = squeeze_excite(y, max(out_filters // se_ratio, 1), name=f"{name}_")
    if shortcut:
        y = layers.Add(name=f"{name}_add")([identity, y])
    return layers.Activation("relu", name=f"{name}_out")(y)


def resnet(depth: int = 50, include_top: bool = True, weights: str | os.PathLike | None = None,
           input_tensor: keras.KerasTensor | None = None,
           input_shape: tuple[int | None, int | None, int] | None = None, pooling: str | None = None,
           classes: int = 1000, classifier_activation: str | None = "softmax", features_only: bool = False,
           output_stride: int = 32, shortcut: bool | str = True, attention: str | None = None, se_ratio: int = 16,
           widths: tuple[int, ...] = (64, 128, 256, 512), blocks: tuple[int, ...] | None = None,
           stem_filters: int = 64, use_bias: bool | None = None, multi_grid: tuple[int, ...] | None = None,
           name: str | None = None) -> keras.Model:
    """The ResNet family builder: ResNet-18..152, SE-ResNet, plain networks.

    Takes keras.applications' arguments (include_top, weights, input_tensor,
    input_shape, pooling, classes, classifier_activation) and more. ImageNet
    weights exist for the standard ResNet-50, -101 and -152 only.

    Args:
        depth: 18, 34 (basic blocks), 50 (the default), 101, 152 (bottleneck blocks).
        include_top: end in the classifier, global pooling and a `classes`-way Dense layer (True, the
            default), or stop at the last feature map (False).
        weights: None (random initialisation, the default), "imagenet" or the path to an existing weights file.
            "imagenet": keras.applications' ResNet-50/101/152 weights, for the standard configuration only
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
        shortcut: False builds the plain network of the same depth; True or
            "B" projects where the shape changes; "A" zero-pads instead.
        attention: None (the default) or "se" (squeeze-and-excitation, reduction `se_ratio`).
        se_ratio: the squeeze-and-excitation's channel reduction (16); used with attention="se" only.
        widths: channels of the four stages' blocks ((64, 128, 256, 512); bottleneck blocks output 4x).
        blocks: blocks per stage; None (the default): the depth's, e.g. (3, 4, 6, 3) for 50.
        stem_filters: channels of the 7x7 stem convolution (64). `widths`, `blocks` and `stem_filters` are
            the stage configuration (tiny variants).
        use_bias: conv biases; keras.applications' ResNet-50+ have them (so
            their weights load), the paper's and torchvision's ResNet-18/34 do not.
            None (the default): biases for bottleneck depths (50+) only.
        multi_grid: DeepLab v3's per-block multipliers of the last stage's
            dilation, e.g. (1, 2, 4); only with output_stride 8 or 16. None (the default): none.
        name: the model's name; None: "resnet{depth}", "se_resnet{depth}" or "plain{depth}".

    Returns:
        A `keras.Model` taking (N, H, W, 3) RGB pixels in [0, 255] (the preprocessing is inside the model) and
        giving (N, classes) class probabilities with the top, without it the (N, h, w, channels) last feature
        map or, with `pooling`, (N, channels); with `features_only` the dict {"P1": ..., "P5": ...}.

    Raises:
        ValueError: an unknown `depth` or `attention`; `multi_grid` with output_stride 32;
            `weights` neither None, "imagenet" nor an existing file; "imagenet" with classes != 1000 and the top,
            or without 3 input channels; an unknown `pooling` or `output_stride`; an input smaller than
            32 pixels.

    Example:
        ```python
        model = kerasseg.models.resnet50(weights="imagenet")
        pyramid = kerasseg.models.resnet50(features_only=True, output_stride=16)
        plain = kerasseg.models.resnet(depth=34, shortcut=False)  # the plain network of the same depth
        ```
    """
    if depth not in BLOCKS:
        raise ValueError(f"depth must be one of {tuple(BLOCKS)}. Received: depth={depth!r}")
    if multi_grid and output_stride == 32:
        raise ValueError("multi_grid needs a dilated last stage (output_stride 8 or 16). "
                         f"Received: multi_grid={multi_grid}")
    if attention not in ATTENTION:
        raise ValueError(f"attention must be one of {ATTENTION}. Received: attention={attention!r}")
    kind, default_blocks = BLOCKS[depth]
    blocks = blocks or default_blocks
    use_bias = (kind == "bottleneck") if use_bias is None else use_bias
    name = name or f"{'se_' if attention else ''}{'plain' if not shortcut else 'resnet'}{depth}"
    backbone.check_classifier_args(weights, include_top, classes, pooling, output_stride)
    standard = shortcut and not attention and blocks == default_blocks and tuple(widths) == (64, 128, 256, 512)
    pretrained = PRETRAINED.get(f"resnet{depth}") if standard else None
    inputs = backbone.classifier_input(input_shape, input_tensor, weights, min_size=32)
    plan = backbone.stage_strides(output_stride)

    x = PixelNormalization("caffe", name="preprocess")(inputs)
    x = layers.ZeroPadding2D(3, name="conv1_pad")(x)
    pyramid = {"P1": conv_bn_act(x, stem_filters, 7, strides=2, padding="valid", use_bias=use_bias,
                                 bn_epsilon=_BN_EPSILON, name="conv1")}
    x = layers.ZeroPadding2D(1, name="pool1_pad")(pyramid["P1"])
    x = layers.MaxPooling2D(3, strides=2, name="pool1_pool")(x)
    for stage, (filters, count) in enumerate(zip(widths, blocks), start=2):
        # stage 2 is already downsampled by the max pool, so it never strides itself
        stride, dilation = (1, 1) if stage == 2 else plan[stage - 1]
        grid = multi_grid if multi_grid and stage == 5 else (1,) * count
        for block in range(count):
            x = residual_block(x, filters, kind, stride=stride if block == 0 else 1,
                               dilation=dilation * grid[block % len(grid)],
                               shortcut=shortcut, attention=attention, se_ratio=se_ratio, use_bias=use_bias,
                               name=f"conv{stage}_block{block + 1}")
        pyramid[f"P{stage}"] = x

    model = backbone.finish(inputs, x, pyramid, include_top=include_top, pooling=pooling, classes=classes,
                            classifier_activation=classifier_activation, features_only=features_only, name=name)
    return backbone.load_weights(model, weights, pretrained, include_top and not features_only)


__all__ = ["resnet", "residual_block"]


def _encoder(depth, widths=(64, 128, 256, 512), stem_filters=64, pretrained=True):
    """P1 is the stem (conv1), P2..P5 each stage's last block; multi-grid in the last stage."""
    scale = 4 if BLOCKS[depth][0] == "bottleneck" else 1
    channels = {"P1": stem_filters, **{f"P{i}": scale * w for i, w in enumerate(widths, start=2)}}
    return Encoder(channels, multi_grid=True, pretrained=PRETRAINED.get(f"resnet{depth}") if pretrained else None)


@register("classification")
def resnet_cifar(depth: int = 20, classes: int = 10,
                 input_shape: tuple[int | None, int | None, int] | None = (32, 32, 3),
                 input_tensor: keras.KerasTensor | None = None, weights: str | os.PathLike | None = None,
                 include_top: bool = True, pooling: str | None = None, classifier_activation: str | None = "softmax",
                 shortcut: bool | str = True, name: str | None = None) -> keras.Model:
    """The CIFAR ResNet of He et al. (Sec. 4.2) used to show the degradation problem.

    A 3x3 conv with 16 filters, then three stages of n basic blocks (16, 32,
    64 filters on 32, 16, 8 pixel maps), global pooling and a classifier:
    depth = 6n + 2 (20, 32, 44, 56, 110). `shortcut=False` is the paper's
    plain network of the same depth. Where the channels double, the shortcut
    is a strided 1x1 projection by default (`shortcut=True` or "B", the
    paper's option B) or, with `shortcut="A"`, the subsampled input with
    zero-padded channels (option A, what the paper's CIFAR runs used; no
    parameters: ResNet-20 then has the paper's 0.27M).

    Args:
        depth: 6n + 2, n >= 1 (20, the default; 32, 44, 56, 110 in the paper).
        classes: number of classes of the top's Dense layer (10, CIFAR-10's).
        input_shape: (height, width, channels) of the input ((32, 32, 3), CIFAR's; height and width may be
            None and must be at least 8).
        input_tensor: an existing Keras tensor to build on instead of a new `keras.Input`.
        weights: None (random initialisation, the default) or the path to an existing weights file (there are
            no published weights).
        include_top: end in global pooling and the `classes`-way Dense layer (True, the default).
        pooling: with include_top=False, None (the feature map), "avg" or "max".
        classifier_activation: activation of the Dense layer ("softmax", the default; None for logits).
        shortcut: True or "B" (projection where the channels double, the default), "A" (zero-padded identity,
            no parameters) or False (the plain network).
        name: the model's name; None: "resnet{depth}_cifar" or "plain{depth}_cifar".

    Returns:
        A `keras.Model` taking (N, H, W, 3) pixels in [0, 255] and giving (N, classes) class probabilities with
        the top.

    Raises:
        ValueError: a `depth` that is not 6n + 2, an unknown `shortcut`, `pooling` or `weights`.

    Example:
        ```python
        model = kerasseg.models.resnet_cifar(depth=20, shortcut="A")  # the paper's 0.27M parameters
        plain = kerasseg.models.resnet_cifar(depth=56, shortcut=False)  # shows the degradation problem
        ```
    """
    if (depth - 2) % 6 or depth < 8:
        raise ValueError(f"depth must be 6n + 2 (20, 32, 44, 56, 110). Received: depth={depth!r}")
    if shortcut not in SHORTCUTS:
        raise ValueError(f"shortcut must be one of {SHORTCUTS}. Received: shortcut={shortcut!r}")
    backbone.check_classifier_args(weights, include_top, classes, pooling)
    inputs = backbone.classifier_input(input_shape, input_tensor, weights, min_size=8)
    x = PixelNormalization("unit", name="preprocess")(inputs)
    x = _conv_bn(x, 16, 3, 1, 1, False, "conv1")
    for stage, filters in enumerate((16, 32, 64), start=2):
        for block in range((depth - 2) // 6):
            x = residual_block(x, filters, "basic", stride=2 if block == 0 and stage > 2 else 1, shortcut=shortcut,
                               use_bias=False, name=f"conv{stage}_block{block + 1}")
    name = name or f"{'resnet' if shortcut else 'plain'}{depth}_cifar"
    model = backbone.finish(inputs, x, {}, include_top=include_top, pooling=pooling, classes=classes,
                            classifier_activation=classifier_activation, features_only=False, name=name)
    return backbone.load_weights(model, weights)


@register("classification", encoder=_encoder(18))
def resnet18(**kwargs):
    """ResNet-18: basic blocks (2, 2, 2, 2), 11.7M parameters."""
    return resnet(**{"depth": 18, **kwargs})


@register("classification", encoder=_encoder(34))
def resnet34(**kwargs):
    """ResNet-34: basic blocks (3, 4, 6, 3), 21.8M parameters."""
    return resnet(**{"depth": 34, **kwargs})


@register("classification", encoder=_encoder(50))
def resnet50(**kwargs):
    """ResNet-50: bottleneck blocks (3, 4, 6, 3), 25.6M parameters; keras.applications weights."""
    return resnet(**{"depth": 50, **kwargs})


@register("classification", encoder=_encoder(101))
def resnet101(**kwargs):
    """ResNet-101: bottleneck blocks (3, 4, 23, 3), 44.7M parameters; keras.applications weights."""
    return resnet(**{"depth": 101, **kwargs})


@register("classification", encoder=_encoder(152))
def resnet152(**kwargs):
    """ResNet-152: bottleneck blocks (3, 8, 36, 3), 60.4M parameters; keras.applications weights."""
    return resnet(**{"depth": 152, **kwargs})


@register("classification", encoder=_encoder(50, pretrained=False))
def se_resnet50(**kwargs):
    """SE-ResNet-50: ResNet-50 with squeeze-and-excitation (reduction 16) in every block."""
    return resnet(**{"depth": 50, "attention": "se", **kwargs})


@register("classification", encoder=_encoder(101, pretrained=False))
def se_resnet101(**kwargs):
    """SE-ResNet-101."""
    return resnet(**{"depth": 101, "attention": "se", **kwargs})


@register("classification", encoder=_encoder(152, pretrained=False))
def se_resnet152(**kwargs):
    """SE-ResNet-152."""
    return resnet(**{"depth": 152, "attention": "se", **kwargs})


@register("classification", tiny=True, encoder=_encoder(50, (4, 8, 16, 32), 8, pretrained=False))
def resnet_tiny(**kwargs):
    """A tiny bottleneck ResNet (one block per stage, 4..32 channels) for tests."""
    config = dict(depth=50, blocks=(1, 1, 1, 1), widths=(4, 8, 16, 32), stem_filters=8, name="resnet_tiny")
    return resnet(**{**config, **kwargs})


@register("classification", tiny=True, encoder=_encoder(50, (4, 8, 16, 32), 8, pretrained=False))
def se_resnet_tiny(**kwargs):
    """A tiny SE-ResNet for tests."""
    config = dict(depth=50, blocks=(1, 1, 1, 1), widths=(4, 8, 16, 32), stem_filters=8, attention="se",
                  se_ratio=4, name="se_resnet_tiny")
    return resnet(**{**config, **kwargs})
