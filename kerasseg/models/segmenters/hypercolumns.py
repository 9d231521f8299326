"""Hypercolumns (Hariharan, Arbelaez, Girshick and Malik, 2015).

The hypercolumn at a pixel is the stack of the activations of *all* the
chosen layers above that pixel: early layers say precisely where edges are,
deep layers say what the object is, and neither alone segments well. Each
chosen pyramid level is upsampled (bilinear) to the finest one, the maps are
concatenated, and a small per-pixel classifier (1x1 convolutions) labels
every position, whose scores are upsampled to the input.
"""

from keras import layers

from kerasseg.layers import ResizeToMatch, conv_bn_act, image_input
from kerasseg.models.backbone import encoder_pyramid
from kerasseg.models.heads import check_segmenter_args, segmenter
from kerasseg.models.registry import register


def hypercolumns(classes=21, backbone="vgg16", backbone_weights=None, levels=("P2", "P3", "P4", "P5"),
                 hidden=512, input_shape=None, input_tensor=None, activation=None, backbone_kwargs=None,
                 edge=False, name="hypercolumns"):
    """Hypercolumn segmenter on any registered classifier.

    Args:
        levels: pyramid levels whose features form the hypercolumn (the
            paper used pool2, conv4 and fc7 of an AlexNet-like network).
        hidden: width of the per-pixel classifier's hidden 1x1 layer.
        edge: Edge TPU operators only: resizes lowered, the backbone's edge variant (docs/android-coral.md,
            "Edge TPU").
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
