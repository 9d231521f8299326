"""Atrous Spatial Pyramid Pooling (Chen et al., DeepLab v2 / v3)."""

from keras import layers

from kerasseg.layers.blocks import conv_bn_act
from kerasseg.layers.resize import ResizeToMatch


def aspp(x, filters=256, rates=(6, 12, 18), image_pooling=True, dropout=0.1, edge=False, name="aspp"):
    """DeepLab v3's ASPP: parallel views of the same features at several receptive fields.

    A 1x1 convolution, three 3x3 convolutions dilated by `rates` (each sees
    a wider window with the same nine weights), and image pooling (global
    average, 1x1 convolution, broadcast back: context from the whole image,
    which a 3x3 dilated far beyond the map degenerates into), all with batch
    norm, concatenated and projected by a 1x1 convolution. `edge`: the
    broadcast in Edge TPU operators (see ResizeToMatch).
    """
    branches = [conv_bn_act(x, filters, 1, name=f"{name}_1x1")]
    for rate in rates:
        branches.append(conv_bn_act(x, filters, 3, dilation_rate=rate, name=f"{name}_3x3_rate{rate}"))
    if image_pooling:
        pooled = layers.GlobalAveragePooling2D(keepdims=True, name=f"{name}_image_pool")(x)
        pooled = conv_bn_act(pooled, filters, 1, name=f"{name}_image_pool_1x1")
        branches.append(ResizeToMatch(edge=edge, name=f"{name}_image_pool_resize")(pooled, x))
    x = layers.Concatenate(name=f"{name}_concat")(branches)
    x = conv_bn_act(x, filters, 1, name=f"{name}_projection")
    return layers.Dropout(dropout, name=f"{name}_dropout")(x) if dropout else x
