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

from keras import layers

from kerasseg.layers import ResizeToMatch, conv_bn_act, image_input
from kerasseg.models.backbone import encoder_pyramid
from kerasseg.models.heads import check_segmenter_args, segmenter
from kerasseg.models.registry import register


def lraspp(classes=21, backbone="mobilenet_v3_large", backbone_weights=None, input_shape=None, input_tensor=None,
           filters=128, output_stride=16, activation=None, backbone_kwargs=None, edge=False, name="lraspp"):
    """LR-ASPP on any registered classifier: P5 (at `output_stride`, 16 by the paper) through a `filters`-channel
    1x1 branch gated by global pooling, scored and added to P3's class scores.

    edge: Edge TPU operators only: the backbone's edge variant (MobileNetV3 minimalistic), resizes lowered.
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
