"""Blocks shared by several model families (backend-agnostic: keras.layers and keras.ops only)."""

from kerasseg.layers.aspp import aspp
from kerasseg.layers.attention import squeeze_excite
from kerasseg.layers.blocks import ZeroPadShortcut, conv_bn_act, image_input, scale_pixels
from kerasseg.layers.inception import inception_module
from kerasseg.layers.preprocessing import PixelNormalization
from kerasseg.layers.quantization import ChannelScale, ChannelShift, FakeQuant, FixedScaleActivation, QuantizedConv
from kerasseg.layers.resize import CenterCropToMatch, ResizeToMatch, Upsample, bilinear_resize

__all__ = [
    "ChannelScale",
    "ChannelShift",
    "FakeQuant",
    "FixedScaleActivation",
    "PixelNormalization",
    "QuantizedConv",
    "squeeze_excite",
    "CenterCropToMatch",
    "ResizeToMatch",
    "Upsample",
    "ZeroPadShortcut",
    "aspp",
    "bilinear_resize",
    "conv_bn_act",
    "image_input",
    "inception_module",
    "scale_pixels",
]
