"""What a model costs: multiply-adds of one forward pass, counted from the layers' static shapes.

Used by `python -m kerasseg.models` (the zoo table) and the benchmarks.
"""

import math


def multiply_adds(model):
    """Multiply-adds of one forward pass, from the layers' static output shapes."""
    import keras

    total = 0
    for layer in model.layers:
        if isinstance(layer, keras.Model):  # a segmenter's encoder: rebuilt at the image's size, counted too
            config = layer.get_config()
            config["layers"][0]["config"]["batch_shape"] = (None, *model.inputs[0].shape[1:])
            total += multiply_adds(keras.Model.from_config(config))
        elif isinstance(layer, keras.layers.DepthwiseConv2D):
            kh, kw, cin, multiplier = layer.kernel.shape
            total += math.prod(layer.output.shape[1:3]) * kh * kw * cin * multiplier
        elif isinstance(layer, keras.layers.Conv2DTranspose):
            total += math.prod(layer.input.shape[1:3]) * math.prod(layer.kernel.shape)
        elif isinstance(layer, keras.layers.Conv2D):
            total += math.prod(layer.output.shape[1:3]) * math.prod(layer.kernel.shape)
        elif isinstance(layer, keras.layers.Dense):
            total += math.prod(layer.output.shape[1:-1]) * math.prod(layer.kernel.shape)
    return total
