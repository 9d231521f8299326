"""Quantization-aware training (QAT) for Keras 3 models, and the float model an int8 export converts.

    qat = quantization_aware(model, calibration_images)   # then compile and fit, as any model
    twin, probe, ranges = export_twin(qat)                 # what export.tflite converts, and the ranges

`quantization_aware` rewrites a trained float functional model (nested
functional models, such as a segmenter's backbone, are inlined) so that it
computes what TFLite's full-integer file will compute:

- each Conv2D, DepthwiseConv2D and Conv2DTranspose becomes a QuantizedConv:
  the batch normalization that follows it folded in (frozen moving
  statistics, as TFLite folds it), the folded kernel rounded to int8 per
  output channel;
- each tensor TFLite keeps as int8 goes through a FakeQuant, its range
  started at the float model's min and max on the calibration images (what
  post-training calibration measures) and then tracked while training.
  Not every layer output is such a tensor: a convolution or addition whose
  only consumer is ReLU/ReLU6 is fused with it (one tensor, after the
  activation), and pooling, padding, cropping, reshapes, resizes and dropout
  keep their input's scale.

Training it is ordinary `model.fit`: the straight-through estimator lets
gradients through the rounding, so the weights learn to live with it. The
result saves and loads as any kerasseg model; `export_twin` gives the float
model with the folded, int8-exact weights, and the learned range of every
FakeQuant's tensor, which export.tflite writes into the file it quantizes.
"""

import contextlib

import numpy as np

import keras

from kerasseg.layers.quantization import FakeQuant, QuantizedConv

_CONVOLUTIONS = ("Conv2D", "DepthwiseConv2D", "Conv2DTranspose")
# int8 kernels that write their input's scale and zero point: no range of their own
_SAME_SCALE = ("Dropout", "SpatialDropout2D", "MaxPooling2D", "AveragePooling2D", "ZeroPadding2D", "Cropping2D",
               "Reshape", "UpSampling2D", "ResizeToMatch", "Upsample", "CenterCropToMatch", "ZeroPadShortcut",
               "InputLayer")
_FUSING = _CONVOLUTIONS + ("Add",)
# the pixel normalization, left to calibration: TFLite folds a scaling into the first convolution, and
# lowers the other modes to two or three ops (channel-permuting convolution, subtraction, multiplication)
_CALIBRATED = ("PixelNormalization", "Rescaling")


def is_quantization_aware(model):
    """Whether `model` (or a model nested in it) holds FakeQuant layers: made by `quantization_aware`."""
    return any(isinstance(layer, FakeQuant) for layer in model._flatten_layers())


def _fused_activation(layer):
    """Whether TFLite fuses `layer` into the convolution or addition before it (ReLU, ReLU6)."""
    config = layer.get_config()
    if type(layer).__name__ == "ReLU":
        return not config.get("negative_slope") and not config.get("threshold") and \
            config.get("max_value") in (None, 6.0)
    return type(layer).__name__ == "Activation" and config["activation"] in ("relu", "relu6")


def _linear(layer):
    return layer.get_config().get("activation", "linear") == "linear"


def _replay(model, inputs, call):
    """`model`'s graph applied to `inputs` with each layer call made by `call(layer, *args, **kwargs)`, nested
    functional models inlined (so every tensor is in one graph); returns the outputs."""

    def operation_fn(layer):
        if isinstance(layer, keras.Model) and hasattr(layer, "_nodes_by_depth"):
            return lambda *args, **kwargs: _replay(layer, args, call)
        return lambda *args, **kwargs: call(layer, *args, **kwargs)

    return model._run_through_graph(inputs, operation_fn=operation_fn, call_fn=lambda op, *a, **k: op(*a, **k))


def _unpacked(inputs, outputs):
    """(inputs, outputs) for keras.Model, a single tensor where there is one (as the builders make them)."""
    return tuple(t[0] if isinstance(t, (list, tuple)) and len(t) == 1 else t for t in (inputs, outputs))


def _plan(model):
    """The layer calls of `model`, inlined, in order, and for each: 'batch_norm' (the batch normalization
    folded into this convolution), 'folded' (it is one), 'quantize' (whether its output gets a FakeQuant) and
    'owner' (the call whose FakeQuant it shares: TFLite gives a concatenation's inputs and output one scale,
    its output's, so the tensors it joins take the concatenation's range)."""
    calls, consumers, producer = [], {}, {}

    def record(layer, *args, **kwargs):
        outputs = layer(*args, **kwargs)
        index = len(calls)
        inputs = [id(t) for t in keras.tree.flatten((args, kwargs)) if isinstance(t, keras.KerasTensor)]
        calls.append((layer, inputs, [id(t) for t in keras.tree.flatten(outputs)]))
        for tensor in inputs:
            consumers.setdefault(tensor, []).append(index)
        producer.update((tensor, index) for tensor in calls[-1][2])
        return outputs

    inputs = [keras.Input(batch_shape=t.shape, dtype=t.dtype) for t in model.inputs]
    for tensor in keras.tree.flatten(_replay(model, inputs, record)):
        consumers.setdefault(id(tensor), []).append(None)

    def only_consumer(index):
        outputs = calls[index][2]
        users = consumers.get(outputs[0], []) if len(outputs) == 1 else []
        return users[0] if len(users) == 1 else None

    plan = [{"batch_norm": None, "folded": False, "quantize": True, "owner": i} for i in range(len(calls))]
    for index, (layer, _, _) in enumerate(calls):
        user = only_consumer(index)
        if type(layer).__name__ in _CONVOLUTIONS and _linear(layer) and user is not None and \
                type(calls[user][0]).__name__ == "BatchNormalization" and calls[user][0].axis in (-1, 3):
            plan[index]["batch_norm"] = calls[user][0]
            plan[user]["folded"] = True
    for index, (layer, _, _) in enumerate(calls):
        kind = type(layer).__name__
        fusing = (kind in _FUSING and _linear(layer)) or plan[index]["folded"]
        user = only_consumer(index)
        if plan[index]["batch_norm"] or kind in _SAME_SCALE + _CALIBRATED or \
                (fusing and user is not None and _fused_activation(calls[user][0])):
            plan[index]["quantize"] = False

    def owner(index):
        while plan[index]["owner"] != index:
            index = plan[index]["owner"]
        return index

    for index, (layer, inputs, _) in enumerate(calls):
        if type(layer).__name__ != "Concatenate" or not plan[index]["quantize"]:
            continue
        for tensor in inputs:
            source = producer.get(tensor)
            # the FakeQuant that rounded this input: back through the ops that keep their input's scale
            while source is not None and not plan[source]["quantize"] and type(calls[source][0]).__name__ in \
                    _SAME_SCALE and calls[source][1]:
                source = producer.get(calls[source][1][0])
            if source is not None and plan[source]["quantize"]:
                plan[owner(source)]["owner"] = index
    for step in plan:
        step["owner"] = owner(step["owner"])
    return calls, plan


@contextlib.contextmanager
def _observing(points):
    """FakeQuants passing values through unrounded while recording their min and max."""
    for point in points:
        point.observed = np.array([np.inf, -np.inf])
    try:
        yield
    finally:
        for point in points:
            low, high = point.observed
            point.set_range(low, high)
            del point.observed


def quantization_aware(model, calibration_images, batch_size=8):
    """A model computing `model`'s outputs as TFLite's int8 file of it will (see the module docstring),
    its ranges calibrated on `calibration_images` (pixels, NHWC). It shares `model`'s layers other than
    the folded convolutions and batch normalizations, whose weights it copies."""
    if is_quantization_aware(model):
        raise ValueError(f"{model.name} is already quantization-aware")
    if len(calibration_images) == 0:
        raise ValueError("quantization-aware training needs calibration images; none were given")
    calls, plan = _plan(model)
    steps = iter(enumerate(plan))
    copies, points, names = [], {}, {layer.name for layer in model._flatten_layers()}

    def rewrite(layer, *args, **kwargs):
        index, step = next(steps)
        if step["folded"]:
            outputs = args[0]
        elif type(layer).__name__ in _CONVOLUTIONS:
            batch_norm = step["batch_norm"]
            quantized = QuantizedConv(keras.layers.serialize(layer),
                                      None if batch_norm is None else keras.layers.serialize(batch_norm),
                                      name=f"{layer.name}_quantized")
            outputs = quantized(*args, **kwargs)
            copies.append((quantized, layer, batch_norm))
        else:
            outputs = layer(*args, **kwargs)
        if step["quantize"] and all(keras.backend.is_float_dtype(t.dtype) for t in keras.tree.flatten(outputs)):
            if step["owner"] not in points:
                name = f"{calls[step['owner']][0].name}_quant"
                while name in names:
                    name += "_"
                names.add(name)
                points[step["owner"]] = FakeQuant(name=name)
            # a shared range is tracked on its owner's tensor (a concatenation's output: every input's values)
            outputs = points[step["owner"]](outputs, track=step["owner"] == index)
        return outputs

    inputs = [keras.Input(batch_shape=t.shape, dtype=t.dtype, name=t.name) for t in model.inputs]
    qat = keras.Model(*_unpacked(inputs, _replay(model, inputs, rewrite)), name=model.name)
    for quantized, conv, batch_norm in copies:
        quantized.conv.set_weights(conv.get_weights())
        if batch_norm is not None:
            quantized.batch_norm.set_weights(batch_norm.get_weights())
    with _observing(points.values()):
        for start in range(0, len(calibration_images), batch_size):
            qat(np.asarray(calibration_images[start:start + batch_size], "float32"), training=False)
    return qat


def export_twin(qat):
    """`(twin, probe, ranges)`: `twin` is the float model an int8 export converts (`qat` without its
    FakeQuants, each QuantizedConv a plain convolution holding the folded, int8-exact kernel and bias);
    `probe` maps an image to the twin's tensor at each FakeQuant, in order, and `ranges` gives each its
    learned (min, max)."""
    replaced, points, tensors = [], [], []

    def rewrite(layer, *args, **kwargs):
        if isinstance(layer, FakeQuant):
            points.append(layer)
            tensors.append(args[0])
            return args[0]
        if isinstance(layer, QuantizedConv):
            config = {**layer.conv.get_config(), "use_bias": True, "name": layer.conv.name}
            conv = type(layer.conv).from_config(config)
            outputs = conv(*args, **kwargs)
            replaced.append((conv, layer))
            return outputs
        return layer(*args, **kwargs)

    inputs = [keras.Input(batch_shape=t.shape, dtype=t.dtype, name=t.name) for t in qat.inputs]
    outputs = _replay(qat, inputs, rewrite)
    for conv, quantized in replaced:
        conv.set_weights([keras.ops.convert_to_numpy(w) for w in quantized.folded()])
    twin = keras.Model(*_unpacked(inputs, outputs), name=qat.name)
    probe = keras.Model(_unpacked(inputs, [])[0], tensors)
    ranges = [(float(keras.ops.convert_to_numpy(p.range_min)), float(keras.ops.convert_to_numpy(p.range_max)))
              for p in points]
    return twin, probe, ranges
