"""How TFLite's int8 file computes each layer, by the layer's class: the registry kerasseg.qat plans by.

`layer_kind(layer)` is one of KINDS, or None where kerasseg.qat has no faithful simulation of the layer
(it is then refused by name). Keras's own layers and kerasseg's are registered here; a user's own layer
that computes one int8 op of a known kind is declared with `register` (kerasseg.qat.register), after
tensorflow-model-optimization's QuantizeConfig.
"""

import keras

from kerasseg.errors import InputError
from kerasseg.layers.quantization import FIXED_SCALE_ACTIVATIONS, HARD_ACTIVATIONS

ACTIVATIONS = ("linear", "relu", "relu6", *FIXED_SCALE_ACTIVATIONS, *HARD_ACTIVATIONS)
# how the file computes a layer, by its class (see `register`)
KINDS = ("convolution", "batch_norm", "activation", "learned", "same_scale", "interpolating", "pixels")
USER_KINDS = ("learned", "same_scale", "interpolating", "pixels")
_RULES = {}


def register(layer_class, kind):
    """Declares how TFLite's int8 file computes the layers of `layer_class` (that class exactly: a subclass
    may compute something else, and is refused until it is registered itself). The hook for a user's own
    layers, after tensorflow-model-optimization's QuantizeConfig; `kind` is

        "same_scale"     one op whose int8 kernel writes its input's scale and zero point: a crop, a
                         padding, a reshape, a max pooling, an identity
        "interpolating"  the same, computing new values the file rounds to that scale: an average pooling,
                         a bilinear resize
        "learned"        one op with an int8 output of its own range, which the simulation rounds and
                         learns: an addition, a product, a mean, a concatenation
        "pixels"         the normalization of the input pixels (left in float: the converter folds it)

    or a function of the layer returning one of them, or None where its configuration is one the
    simulation cannot compute (the layer is then refused by name). Convolutions, batch normalizations
    and activations are rewritten by kerasseg.qat itself and are registered here, below.
    """
    if not (isinstance(layer_class, type) and issubclass(layer_class, keras.layers.Layer)):
        raise InputError(f"expected a keras.layers.Layer subclass; received {layer_class!r}")
    builtin = layer_class in _RULES and _RULES[layer_class] in (_convolution, _batch_norm, _activation_kind)
    if builtin or not callable(kind) and kind not in USER_KINDS:
        raise InputError(f"{layer_class.__name__}: kind must be one of {', '.join(USER_KINDS)}, or a function of the "
                         f"layer returning one; received {kind!r}")
    _RULES[layer_class] = kind


def layer_kind(layer):
    """How the file computes `layer` (one of KINDS), or None: kerasseg.qat has no faithful simulation of it."""
    rule = _RULES.get(type(layer))
    return rule(layer) if callable(rule) else rule


def keeps_scale(layer):
    """Whether `layer`'s int8 output has its input's scale (no range of its own)."""
    return layer_kind(layer) in ("same_scale", "interpolating")


def activation_name(layer):
    """The activation a layer applies: its `activation` (Activation, convolutions), "relu" / "relu6" for a
    plain ReLU layer, None for a ReLU with a slope or threshold (no int8 kernel of TFLite's fuses it)."""
    config = layer.get_config()
    if type(layer).__name__ == "ReLU":
        plain = not config.get("negative_slope") and not config.get("threshold")
        return {None: "relu", 6.0: "relu6"}.get(config.get("max_value")) if plain else None
    activation = config.get("activation", "linear")
    return activation if isinstance(activation, str) else getattr(activation, "__name__", str(activation))


def _convolution(layer):
    return "convolution" if activation_name(layer) in ACTIVATIONS else None


def _batch_norm(layer):
    return "batch_norm" if layer.axis in (-1, 3) or layer.axis == [3] else None


def _activation_kind(layer):
    activation = activation_name(layer)
    if activation == "linear" and isinstance(layer, keras.layers.Activation):
        return "same_scale"
    return "activation" if activation in ACTIVATIONS else None


def _resize(layer):
    """A resize keeps its input's scale; a bilinear one computes new values (the Edge TPU's own resize has
    int8 tensors of its own inside, which calibration sets)."""
    config = layer.get_config()
    if config.get("crop_to_aspect_ratio") or config.get("pad_to_aspect_ratio") or \
            config.get("interpolation", "bilinear") not in ("bilinear", "nearest"):
        return None  # (keras.layers.Resizing's other modes: no one int8 op of TFLite's)
    return "same_scale" if config.get("edge") or config.get("interpolation") == "nearest" else "interpolating"


def _register_builtins():
    from keras import layers

    from kerasseg.layers.blocks import ZeroPadShortcut
    from kerasseg.layers.preprocessing import PixelNormalization
    from kerasseg.layers.resize import CenterCropToMatch, ResizeToMatch, Upsample

    rules = {_convolution: (layers.Conv2D, layers.DepthwiseConv2D, layers.Conv2DTranspose),
             _batch_norm: (layers.BatchNormalization,), _activation_kind: (layers.Activation, layers.ReLU),
             _resize: (layers.UpSampling2D, layers.Resizing, ResizeToMatch, Upsample),
             "interpolating": (layers.AveragePooling2D,),
             "same_scale": (layers.Dropout, layers.SpatialDropout2D, layers.MaxPooling2D, layers.ZeroPadding2D,
                            layers.Cropping2D, layers.Reshape, layers.InputLayer, layers.Identity, CenterCropToMatch,
                            ZeroPadShortcut),
             "learned": (layers.Add, layers.Multiply, layers.GlobalAveragePooling2D, layers.Concatenate),
             "pixels": (PixelNormalization, layers.Rescaling, layers.Normalization)}
    _RULES.update((cls, rule) for rule, classes in rules.items() for cls in classes)


_register_builtins()
