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


def deeplab_v1(classes=21, backbone="vgg16", backbone_weights=None, input_shape=None, input_tensor=None,
               fc_units=1024, fc6_rate=12, dropout=0.5, activation=None, backbone_kwargs=None, edge=False,
               name="deeplab_v1"):
    """DeepLab-LargeFOV: atrous backbone at stride 8, fc6 3x3 dilated 12, fc7 1x1, scores, bilinear upsampling."""
    check_segmenter_args(classes, activation)
    inputs = image_input(input_shape, input_tensor)
    x = encoder_pyramid(inputs, backbone, backbone_weights, backbone_kwargs, edge, output_stride=8)["P5"]
    x = layers.Conv2D(fc_units, 3, dilation_rate=fc6_rate, padding="same", activation="relu", name="fc6")(x)
    x = layers.Dropout(dropout, name="drop6")(x)
    x = layers.Conv2D(fc_units, 1, activation="relu", name="fc7")(x)
    x = layers.Dropout(dropout, name="drop7")(x)
    return segmenter(inputs, x, classes, activation, name=name, edge=edge)


def deeplab_v2(classes=21, backbone="resnet101", backbone_weights=None, input_shape=None, input_tensor=None,
               rates=(6, 12, 18, 24), activation=None, backbone_kwargs=None, edge=False, name="deeplab_v2"):
    """DeepLab v2: ASPP of parallel 3x3 atrous class-score branches, summed, on a stride-8 backbone."""
    check_segmenter_args(classes, activation)
    inputs = image_input(input_shape, input_tensor)
    x = encoder_pyramid(inputs, backbone, backbone_weights, backbone_kwargs, edge, output_stride=8)["P5"]
    scores = [layers.Conv2D(classes, 3, dilation_rate=rate, padding="same", name=f"aspp_rate{rate}")(x)
              for rate in rates]
    x = layers.Add(name="aspp_sum")(scores) if len(scores) > 1 else scores[0]
    return segmenter(inputs, x, classes, activation, name=name, edge=edge, scores=True)


def deeplab_v3(classes=21, backbone="resnet101", backbone_weights=None, input_shape=None, input_tensor=None,
               output_stride=16, multi_grid=(1, 2, 4), aspp_filters=256, aspp_rates=None, activation=None,
               backbone_kwargs=None, edge=False, name="deeplab_v3"):
    """DeepLab v3: ASPP (1x1, three atrous 3x3, image pooling; batch norm) on a stride-16 or -8 backbone.

    multi_grid (the paper's (1, 2, 4)) is passed to the backbone, which must
    be of the ResNet family; use multi_grid=None with other backbones.
    aspp_rates defaults to the paper's rates for the output stride (tuned for
    513x513 crops); on small images scale them with the feature map, since a
    rate far beyond the map only sees padding.
    """
    check_segmenter_args(classes, activation)
    if output_stride not in ASPP_RATES:
        raise ValueError(f"output_stride must be 8, 16 or 32. Received: output_stride={output_stride!r}")
    inputs = image_input(input_shape, input_tensor)
    x = encoder_pyramid(inputs, backbone, backbone_weights, backbone_kwargs, edge, output_stride=output_stride,
                        multi_grid=multi_grid)["P5"]
    x = aspp(x, aspp_filters, aspp_rates or ASPP_RATES[output_stride], edge=edge)
    return segmenter(inputs, x, classes, activation, name=name, edge=edge)


def deeplab_v3_plus(classes=21, backbone="resnet101", backbone_weights=None, input_shape=None, input_tensor=None,
                    output_stride=16, multi_grid=None, aspp_filters=256, aspp_rates=None, low_level_filters=48,
                    decoder_filters=256, activation=None, backbone_kwargs=None, edge=False, name="deeplab_v3_plus"):
    """DeepLab v3+: the v3 encoder, then a decoder fusing P2 (projected to 48 channels) through
    two 3x3 depthwise-separable convolutions."""
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
