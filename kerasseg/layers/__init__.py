"""Blocks shared by several model families (backend-agnostic: keras.layers and keras.ops only)."""

from kerasseg.layers.blocks import conv_bn_act, image_input, scale_pixels
from kerasseg.layers.resize import CenterCropToMatch, ResizeToMatch, Upsample, bilinear_resize

__all__ = [
    "CenterCropToMatch",
    "ResizeToMatch",
    "Upsample",
    "bilinear_resize",
    "conv_bn_act",
    "image_input",
    "scale_pixels",
]
