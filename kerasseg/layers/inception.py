"""The Inception module (Szegedy et al., 2014), GoogLeNet's building block."""

from keras import layers

from kerasseg.layers.blocks import conv_bn_act


def inception_module(x, c1, c3_reduce, c3, c5_reduce, c5, pool_proj, dilation=1, batch_norm=False, name=None):
    """Four parallel branches over the same input, concatenated along channels.

    1x1, 3x3 and 5x5 convolutions and a 3x3 max pool look at several scales
    at once; the 1x1 "reduce" convolutions in front of the 3x3 and 5x5 (and
    behind the pool) are bottlenecks that cut the channels first, which is
    what keeps GoogLeNet at 6.8M weights against VGG-16's 138M.
    """
    conv = dict(batch_norm=batch_norm, dilation_rate=dilation)
    b1 = conv_bn_act(x, c1, 1, batch_norm=batch_norm, name=f"{name}_1x1")
    b3 = conv_bn_act(x, c3_reduce, 1, batch_norm=batch_norm, name=f"{name}_3x3_reduce")
    b3 = conv_bn_act(b3, c3, 3, **conv, name=f"{name}_3x3")
    b5 = conv_bn_act(x, c5_reduce, 1, batch_norm=batch_norm, name=f"{name}_5x5_reduce")
    b5 = conv_bn_act(b5, c5, 5, **conv, name=f"{name}_5x5")
    bp = layers.MaxPooling2D(3, strides=1, padding="same", name=f"{name}_pool")(x)
    bp = conv_bn_act(bp, pool_proj, 1, batch_norm=batch_norm, name=f"{name}_pool_proj")
    return layers.Concatenate(name=f"{name}_output")([b1, b3, b5, bp])
