"""The normalisation a model's weights expect, inside the model (pixels in [0, 255] in).

Keeping it in the graph means a user never has to know which of the four
conventions a backbone was trained with, and an exported model can take
uint8 camera frames directly.
"""

import keras
import numpy as np
from keras import ops

_IMAGENET_MEAN_RGB = (0.485, 0.456, 0.406)
_IMAGENET_STD_RGB = (0.229, 0.224, 0.225)
MODES = ("unit", "tf", "torch", "caffe")


@keras.saving.register_keras_serializable(package="kerasseg")
class PixelNormalization(keras.layers.Layer):
    """Maps RGB pixels in [0, 255] to what a family's weights were trained on.

    Modes (as in keras.applications' `preprocess_input`):
        "unit":  x / 255                                   (models trained here)
        "tf":    x / 127.5 - 1                             (MobileNetV2)
        "torch": (x / 255 - ImageNet mean) / ImageNet std  (DenseNet)
        "caffe": RGB -> BGR, minus the ImageNet BGR mean   (VGG, ResNet v1)
    """

    def __init__(self, mode="unit", **kwargs):
        super().__init__(**kwargs)
        if mode not in MODES:
            raise ValueError(f"mode must be one of {MODES}. Received: mode={mode!r}")
        self.mode = mode

    def call(self, x):
        x = ops.cast(x, self.compute_dtype)
        if self.mode == "unit":
            return x / 255.0
        if self.mode == "tf":
            return x / 127.5 - 1.0
        if self.mode == "torch":
            mean = ops.convert_to_tensor(_IMAGENET_MEAN_RGB, self.compute_dtype)
            std = ops.convert_to_tensor(_IMAGENET_STD_RGB, self.compute_dtype)
            return (x / 255.0 - mean) / std
        mean_bgr = ops.convert_to_tensor((103.939, 116.779, 123.68), self.compute_dtype)
        # RGB -> BGR as a 1x1 convolution with a permutation kernel (exact in float and in int8), not
        # ops.flip or slices: TFLite's int8 converter gives REVERSE_V2 / CONCATENATION after the pixel
        # input one range with the subtraction after them, so the file read a pixel p as (p - 83) * 1.485
        reverse = ops.convert_to_tensor(np.eye(3)[::-1].reshape(1, 1, 3, 3), self.compute_dtype)
        return ops.conv(x, reverse) - mean_bgr

    def get_config(self):
        return {**super().get_config(), "mode": self.mode}
