"""Squeeze-and-excitation (Hu et al., 2018), shared by SE-ResNet and EfficientNet."""

from keras import layers


def squeeze_excite(x, reduced_filters, activation="relu", name=""):
    """Reweights the channels of `x` by a gate computed from their global averages.

    Squeeze: global average pooling summarises each channel over the whole
    image (context a 3x3 convolution never sees). Excite: a bottleneck of two
    fully connected layers (as 1x1 convolutions) with a sigmoid gives one
    weight per channel, which scales the feature map. Layer names follow
    keras.applications' EfficientNet (`{name}se_reduce`, `{name}se_expand`).
    """
    filters = x.shape[-1]
    s = layers.GlobalAveragePooling2D(name=f"{name}se_squeeze")(x)
    s = layers.Reshape((1, 1, filters), name=f"{name}se_reshape")(s)
    s = layers.Conv2D(reduced_filters, 1, padding="same", activation=activation,
                      kernel_initializer="he_normal", name=f"{name}se_reduce")(s)
    s = layers.Conv2D(filters, 1, padding="same", activation="sigmoid",
                      kernel_initializer="glorot_uniform", name=f"{name}se_expand")(s)
    return layers.Multiply(name=f"{name}se_excite")([x, s])
