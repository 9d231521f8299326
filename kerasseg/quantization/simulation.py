"""Quantization-aware training (QAT) for Keras 3 models, and the float model an int8 export converts.

    qat = quantization_aware(model, calibration_images)   # then compile and fit, as any model
    twin, sites = export_twin(qat)                         # what export.tflite converts, and the learned ranges

`quantization_aware` rewrites a trained float functional model (nested
functional models, such as a segmenter's backbone, are inlined; a model
trained in mixed precision is first rebuilt in float32) so that it computes
what TFLite's full-integer file will compute, op for op:

- each Conv2D, DepthwiseConv2D and Conv2DTranspose becomes a QuantizedConv:
  the batch normalization that follows it folded in (frozen moving
  statistics, as TFLite folds it), the folded kernel rounded to int8 per
  output channel;
- a batch normalization no convolution absorbs (DenseNet's pre-activation)
  becomes what the file makes of it: a multiplication and an addition by
  per-channel constants (ChannelScale, ChannelShift), each its own int8
  tensor;
- sigmoid, softmax and tanh round to the file's fixed output scales, and
  swish is the file's LOGISTIC then MUL (FixedScaleActivation); hard-swish
  is one op (HARD_SWISH) with a range of its own, and hard-sigmoid two,
  relu6(x + 3) (fused into the convolution before it) and a division by 6,
  each rounded to a range of its own (HardSigmoidStep), also where a model
  writes it as keras.ops on tensors, `ReLU(6.0)(x + 3.0) * (1.0 / 6.0)`
  (keras.applications' MobileNetV3; other keras.ops on a constant are
  refused); an activation inside a convolution other than ReLU/ReLU6
  becomes a layer of its own, as it is an op of its own in the file;
- each other tensor TFLite keeps as int8 goes through a FakeQuant, its range
  started at the float model's min and max on the calibration images (what
  post-training calibration measures) and then tracked while training; or,
  with calibration="percentile", set at their 99.99th percentiles and held
  (a finer step for all but the rare outliers it clips, which the weights
  learn to do without).
  Not every layer output is such a tensor: a convolution, addition,
  multiplication or scaling whose only consumer is ReLU/ReLU6 is fused with
  it (one tensor, after the activation), and so is a convolution with
  hard-sigmoid's relu6(x + 3); pooling, padding, cropping,
  reshapes, resizes and dropout keep their input's scale; and the tensors a
  concatenation joins share its range (TFLite gives them one scale).

How each layer is computed is looked up by its class in a registry
(`layer_kind`); a layer it cannot simulate (attention, normalizations other
than batch normalization, activations such as GELU, a Lambda, a custom layer)
is refused before anything is built, with every such layer named
(QuantizationError). A user's own layer that computes one int8 op of a known
kind (a crop, a resize, an addition, ...) is declared with
`register(LayerClass, kind)`, after tensorflow-model-optimization's
QuantizeConfig.

Training it is ordinary `model.fit`: the straight-through estimator lets
gradients through the rounding, so the weights learn to live with it. The
result saves and loads as any kerasseg model. `export_twin` gives the float
model an int8 export converts (the same ops, with the int8-exact weights) and
every learned range with the twin layer whose output it rounds: each such
output is one tensor of the converted file, where export.tflite writes the
range (found by structure, export.ranges).
"""

import contextlib
import dataclasses
from dataclasses import dataclass

import numpy as np

import keras

from kerasseg import internals
from kerasseg.files import float32_model
from kerasseg.described import Description, describe, description
from kerasseg.errors import InputError
from kerasseg.quantization.kinds import ACTIVATIONS, activation_name, keeps_scale, layer_kind
from kerasseg.choices import PERCENTILE, QAT_CALIBRATIONS
from kerasseg.layers.quantization import (FIXED_RANGES, FIXED_SCALE_ACTIVATIONS, ChannelScale, ChannelShift,
                                          FakeQuant, FixedScaleActivation, HardSigmoidStep, QuantizedConv,
                                          batch_norm_halves)


class QuantizationError(InputError):
    """A model that quantization-aware training cannot simulate faithfully; the message names its layers."""


def is_quantization_aware(model):
    """Whether `model` (or a model nested in it) holds FakeQuant layers: made by `quantization_aware`."""
    return any(isinstance(layer, FakeQuant) for layer in internals.all_layers(model))


def _replay(model, inputs, call):
    """`model`'s graph applied to `inputs` with each layer call made by `call(layer, *args, **kwargs)`, nested
    functional models inlined (so every tensor is in one graph); returns the outputs."""

    def operation_fn(layer):
        if internals.is_functional(layer):
            return lambda *args, **kwargs: _replay(layer, args, call)
        return lambda *args, **kwargs: call(layer, *args, **kwargs)

    return internals.run_through_graph(model, inputs, operation_fn)


def _unpacked(inputs, outputs):
    """(inputs, outputs) for keras.Model, a single tensor where there is one (as the builders make them)."""
    return tuple(t[0] if isinstance(t, (list, tuple)) and len(t) == 1 else t for t in (inputs, outputs))


@dataclass
class _Step:
    """What the rewrite does with one layer call (see _plan)."""

    kind: str  # layer_kind's; a batch normalization folded into the convolution before it becomes "same_scale"
    batch_norm: object = None  # the batch normalization folded into this convolution
    split: str = None  # this convolution's activation, computed by a layer of its own after it
    fused: bool = False  # the ReLU / ReLU6 (hard-sigmoid's relu6(x + 3)) after this op is fused into it: its output
    # is no int8 tensor
    owner: int = None  # the call whose FakeQuant rounds this call's output (None: no FakeQuant)
    reround: int = None  # an interpolation: its output is rounded again with its input's range (this owner's)
    hard_sigmoid: str = None  # "shift", "relu" or "scale": this op is part of hard-sigmoid written as keras.ops on
    # tensors, relu6(x + 3.0) * (1 / 6) (keras.applications' MobileNetV3)


def _plan(model):
    """The layer calls of `model`, inlined, in order, and a _Step for each. Refuses (QuantizationError) a
    model with a layer it cannot simulate, naming every one."""
    calls, consumers, producer, constants = [], {}, {}, []

    def record(layer, *args, **kwargs):
        outputs = layer(*args, **kwargs)
        index = len(calls)
        flat = keras.tree.flatten((args, kwargs))
        inputs = [id(t) for t in flat if isinstance(t, keras.KerasTensor)]
        constants.append([t for t in flat if isinstance(t, (int, float))])
        calls.append((layer, inputs, [id(t) for t in keras.tree.flatten(outputs)]))
        for tensor in inputs:
            consumers.setdefault(tensor, []).append(index)
        producer.update((tensor, index) for tensor in calls[-1][2])
        return outputs

    inputs = [keras.Input(batch_shape=t.shape, dtype=t.dtype) for t in model.inputs]
    for tensor in keras.tree.flatten(_replay(model, inputs, record)):
        consumers.setdefault(id(tensor), []).append(None)
    steps = [_Step(layer_kind(layer)) for layer, _, _ in calls]

    def only_consumer(index):
        outputs = calls[index][2]
        users = consumers.get(outputs[0], []) if len(outputs) == 1 else []
        return users[0] if len(users) == 1 and users[0] is not None else None

    _hard_sigmoid_ops(calls, steps, constants, only_consumer)
    _refuse_unsimulated(model, calls, steps, {id(t) for t in inputs})

    def activation_after(index):
        user = only_consumer(index)
        if user is not None and steps[user].hard_sigmoid == "shift":
            return "hard_sigmoid"
        return activation_name(calls[user][0]) if user is not None and steps[user].kind == "activation" else None

    for index, ((layer, _, _), step) in enumerate(zip(calls, steps)):
        user = only_consumer(index)
        if step.kind == "convolution" and activation_name(layer) not in ("linear", "relu", "relu6"):
            step.split = activation_name(layer)
        elif step.kind == "convolution" and activation_name(layer) == "linear" and user is not None and \
                steps[user].kind == "batch_norm":
            step.batch_norm, steps[user].kind = calls[user][0], "same_scale"  # folded: an identity now
        ends = index if step.batch_norm is None else user  # the call whose output is this op's output
        linear = activation_name(layer) in (None, "linear")
        # the ops into which TFLite fuses a ReLU / ReLU6 that is their output's only consumer
        fusing = step.kind == "convolution" or isinstance(layer, (keras.layers.Add, keras.layers.Multiply))
        after = activation_after(ends)
        # (and into a convolution, hard-sigmoid's +3, in its bias, and its ReLU6)
        step.fused = (step.kind == "batch_norm" or fusing and linear) and after in ("relu", "relu6") or \
            step.kind == "convolution" and linear and after == "hard_sigmoid"
    for index, ((layer, _, _), step) in enumerate(zip(calls, steps)):
        if step.kind in ("convolution", "batch_norm", "learned"):
            rounded = not step.fused and step.split not in FIXED_RANGES
        else:  # an activation's own int8 tensor: ReLU (fused into the op before it or not), swish's product,
            # hard-swish's, hard-sigmoid's division by 6
            rounded = step.kind == "activation" and (step.hard_sigmoid == "scale" or
                                                     activation_name(layer) not in FIXED_RANGES)
        step.owner = index if rounded else None

    def owner(index):
        while steps[index].owner != index:
            index = steps[index].owner
        return index

    def rounded_by(tensor):
        """The call whose FakeQuant rounded `tensor`: back through the ops that keep their input's scale."""
        source = producer.get(tensor)
        while source is not None and steps[source].owner is None and \
                steps[source].kind in ("same_scale", "interpolating") and calls[source][1]:
            source = producer.get(calls[source][1][0])
        return None if source is None or steps[source].owner is None else source

    # TFLite gives a concatenation's inputs its output's scale: the FakeQuant that rounded each input takes
    # the concatenation's range
    for index, (layer, inputs, _) in enumerate(calls):
        for source in map(rounded_by, inputs if isinstance(layer, keras.layers.Concatenate) else ()):
            if source is not None:
                steps[owner(source)].owner = index
    for step in steps:
        if step.owner is not None:
            step.owner = owner(step.owner)
    # an average or a bilinear resize: rounded again with its input's range
    for index, (_layer, inputs, _) in enumerate(calls):
        source = rounded_by(inputs[0]) if steps[index].kind == "interpolating" and inputs else None
        steps[index].reround = None if source is None else steps[source].owner
    return calls, steps


def _is_op(layer, name):
    """Whether `layer` is the keras.ops operation `name` applied to tensors in a functional graph (no layer)."""
    return not isinstance(layer, keras.layers.Layer) and type(layer).__name__ == name and \
        type(layer).__module__.startswith("keras")


def _hard_sigmoid_ops(calls, steps, constants, only_consumer):
    """Marks hard-sigmoid written as keras.ops on tensors, `ReLU(6.0)(x + 3.0) * (1.0 / 6.0)` (keras.applications'
    MobileNetV3: an addition of 3.0, a ReLU6 its only consumer, a multiplication by 1/6 its only consumer), as
    the file computes it: relu6(x + 3) one int8 tensor (the +3 and the ReLU6 fused into the convolution before
    it, or into the ADD), then the MUL by 1/6 with a range of its own. Other keras.ops with a constant stay
    unsimulated (refused by name)."""
    for index, (layer, inputs, _) in enumerate(calls):
        if not (_is_op(layer, "Add") and len(inputs) == 1 and constants[index] == [3.0]):
            continue
        relu = only_consumer(index)
        if relu is None or steps[relu].kind != "activation" or activation_name(calls[relu][0]) != "relu6":
            continue
        scale = only_consumer(relu)
        if scale is None or not _is_op(calls[scale][0], "Multiply") or len(calls[scale][1]) != 1 or \
                len(constants[scale]) != 1 or not np.isclose(constants[scale][0], 1 / 6):
            continue
        for part, at, kind in (("shift", index, "same_scale"), ("relu", relu, "same_scale"),
                               ("scale", scale, "activation")):
            steps[at].kind, steps[at].hard_sigmoid = kind, part


def _refuse_unsimulated(model, calls, steps, inputs):
    """QuantizationError naming every layer with no faithful simulation, and every pixel normalization that
    does not take the model's input (calibrated where it is, as the converter folds it)."""
    refused, pixel_side = [], set(inputs)
    for (layer, ins, outs), step in zip(calls, steps):
        if step.kind is None:
            activation = activation_name(layer)
            refused.append(f"{layer.name} ({type(layer).__name__}"
                           f"{'' if activation in (None, 'linear') else ', activation ' + str(activation)})")
        elif step.kind == "pixels" and not set(ins) <= pixel_side:
            refused.append(f"{layer.name} ({type(layer).__name__} inside the network, not on its input)")
        if step.kind == "pixels" or isinstance(layer, keras.layers.InputLayer):
            pixel_side.update(outs)
    refused = list(dict.fromkeys(refused))  # (a layer called twice is named once)
    if refused:
        raise QuantizationError(
            f"{model.name} has {len(refused)} layer(s) that quantization-aware training cannot simulate as "
            f"TFLite's int8 kernels compute them: {', '.join(refused)}. It simulates convolutions with "
            f"activations {', '.join(ACTIVATIONS)}; batch normalization; additions, products, concatenations and "
            "global average pooling; pooling, padding, cropping, reshapes, resizes and dropout; and a pixel "
            "normalization on the input. A layer of your own that computes one such op is declared with "
            "kerasseg.qat.register(LayerClass, kind)")


@contextlib.contextmanager
def _observing(points, calibration, values_per_image=2048):
    """FakeQuants passing values through unrounded while recording their range: min and max, or the
    PERCENTILE-th percentiles of up to `values_per_image` of each image's values (as export.tflite's
    percentile calibration)."""
    rng = np.random.default_rng(0)

    def observe(values):
        if calibration == "minmax":
            return [values.min(), values.max()]
        return [rng.choice(image.ravel(), values_per_image) if image.size > values_per_image else image.ravel()
                for image in values]

    for point in points:
        point.observed, point.observe = [], observe
    try:
        yield
    finally:
        for point in points:
            values = np.concatenate([np.ravel(v) for v in point.observed])
            point.set_range(*(np.percentile(values, [100 - PERCENTILE, PERCENTILE]) if calibration == "percentile"
                              else (values.min(), values.max())))
            del point.observed, point.observe


def quantization_aware(model, calibration_images, batch_size=8, calibration="minmax"):
    """A model computing `model`'s outputs as TFLite's int8 file of it will (see the module docstring),
    its ranges calibrated on `calibration_images` (raw pixels in [0, 255], as export.tflite.export's
    calibration: an array (N, H, W, 3), a tf.data.Dataset, an iterable or a dataset spec; the first 200
    unless fewer are given): with "minmax", each starts at the float
    model's min and max there and follows the batches' while training; with "percentile", each is set at the
    PERCENTILE-th percentiles of its values there and stays (following the batches' extremes would widen it
    back to the rare outliers it clips). It shares `model`'s layers (those of its
    float32 rebuild, for a mixed-precision model) other than the convolutions and batch normalizations it
    rewrites, whose weights it copies. Raises QuantizationError naming the layers it cannot simulate."""
    from kerasseg.data.values import calibration_images as read_calibration

    if is_quantization_aware(model):
        raise QuantizationError(f"{model.name} is already quantization-aware")
    if calibration not in QAT_CALIBRATIONS:
        raise QuantizationError(f"calibration {calibration!r} is not one of {', '.join(QAT_CALIBRATIONS)}")
    # (checked as the exporters check theirs: raw pixels, RGB; any array, tf.data or iterable, at the first
    # image's size; a dataset spec at the size the model carries)
    calibration_images, _ = read_calibration(calibration_images, None if not isinstance(calibration_images, str)
                                             else description(model).image_size)
    model, _ = float32_model(model)
    calls, steps = _plan(model)
    order, decay = iter(enumerate(steps)), 0.99 if calibration == "minmax" else 1.0
    # the FakeQuants: one per call whose output is rounded (shared where a concatenation owns several), and
    # those that round a tensor inside what one Keras layer computes
    copies, points, inner, names = [], {}, [], {layer.name for layer in internals.all_layers(model)}

    def unique(name):
        while name in names:
            name += "_"
        names.add(name)
        return name

    def rounded(x, name):
        """`x` through a FakeQuant of its own: an int8 tensor inside what one Keras layer computes."""
        inner.append(FakeQuant(decay=decay, name=unique(name)))
        return inner[-1](x)

    def activation(kind, x, name):
        """`x` through the activation `kind` as the file computes it."""
        if kind == "hard_sigmoid":
            shifted = HardSigmoidStep("shift", name=unique(f"{name}_shift"))(x)
            return HardSigmoidStep("scale", name=unique(f"{name}_scale"))(rounded(shifted, f"{name}_shift_quant"))
        if kind in FIXED_SCALE_ACTIVATIONS:
            return FixedScaleActivation(kind, name=unique(name))(x)
        return keras.layers.Activation(kind, name=unique(name))(x)

    def rewrite(layer, *args, **kwargs):
        index, step = next(order)
        if step.kind == "convolution":
            config = keras.layers.serialize(layer)
            if step.split:
                config = {**config, "config": {**config["config"], "activation": "linear"}}
            batch_norm = None if step.batch_norm is None else keras.layers.serialize(step.batch_norm)
            quantized = QuantizedConv(config, batch_norm, name=unique(f"{layer.name}_quantized"))
            copies.append((quantized, layer, step.batch_norm))
            outputs = quantized(*args, **kwargs)
            if step.split:
                if step.split != "hard_sigmoid":  # (whose +3 and ReLU6 the file fuses into the convolution)
                    outputs = rounded(outputs, f"{layer.name}_quant")
                outputs = activation(step.split, outputs, f"{layer.name}_{step.split}")
        elif step.kind == "batch_norm":
            halves = [unique(f"{layer.name}_{half}") for half in ("scale", "shift")]
            scale, shift = batch_norm_halves(layer, names=halves)
            outputs = shift(rounded(scale(args[0]), f"{scale.name}_quant"))
        elif step.kind == "same_scale" and isinstance(layer, keras.layers.BatchNormalization):
            outputs = args[0]  # folded into the convolution before it
        elif type(layer) in (keras.layers.Add, keras.layers.Multiply) and len(args[0]) > 2:
            # the file sums (multiplies) two at a time, in order, each partial result an int8 tensor
            partial, merge = args[0][0], type(layer)
            for k, x in enumerate(args[0][1:-1], start=1):
                partial = rounded(merge(name=unique(f"{layer.name}_{k}"))([partial, x]), f"{layer.name}_{k}_quant")
            outputs = merge(name=layer.name)([partial, args[0][-1]])
        elif step.hard_sigmoid == "relu":  # (already in the shift: relu6(x + 3), one int8 tensor of the file)
            outputs = rounded(args[0], f"{layer.name}_quant")
        elif step.hard_sigmoid:  # the shift or the scale of hard-sigmoid as keras.ops (_hard_sigmoid_ops)
            tensor = next(x for x in args if isinstance(x, keras.KerasTensor))
            part = step.hard_sigmoid
            outputs = HardSigmoidStep(part, name=unique(f"{layer.name}_hard_sigmoid_{part}"))(tensor)
        elif step.kind == "activation" and activation_name(layer) in (*FIXED_SCALE_ACTIVATIONS, "hard_sigmoid"):
            kind = activation_name(layer)
            outputs = activation(kind, args[0], layer.name if kind == "hard_sigmoid" else f"{layer.name}_fixed_scale")
        else:
            outputs = layer(*args, **kwargs)
        if step.reround is not None:
            outputs = points[step.reround](outputs, track=False)
        if step.owner is not None:
            owner = calls[step.owner][0]
            if step.owner not in points:
                split = steps[step.owner].split  # (after a convolution's own activation: rounds the activation's)
                name = unique(f"{owner.name}{'_' + split if split else ''}_quant")
                points[step.owner] = FakeQuant(decay=decay, name=name)
            # a shared range is tracked on its owner's tensor (a concatenation's output: every input's values)
            outputs = points[step.owner](outputs, track=step.owner == index)
        return outputs

    inputs = [keras.Input(batch_shape=t.shape, dtype=t.dtype, name=t.name) for t in model.inputs]
    qat = keras.Model(*_unpacked(inputs, _replay(model, inputs, rewrite)), name=model.name)
    for quantized, conv, batch_norm in copies:
        quantized.conv.set_weights(conv.get_weights())
        if batch_norm is not None:
            quantized.batch_norm.set_weights(batch_norm.get_weights())
    with _observing([*points.values(), *inner], calibration):
        for start in range(0, len(calibration_images), batch_size):
            qat(np.asarray(calibration_images[start:start + batch_size], "float32"), training=False)
    carried = description(model)  # (class names, training size, input range: kept)
    return qat if carried == Description() else describe(qat, *dataclasses.astuple(carried))


@dataclass(frozen=True)
class Site:
    """A learned range and where it applies: the output of the twin's layer `layer` (one tensor of the
    converted file), rounded by the quantization-aware model's FakeQuant `point`."""

    point: str
    layer: str
    low: float
    high: float


def export_twin(qat):
    """`(twin, sites)`: `twin` is the float model an int8 export converts (`qat` without its FakeQuants and
    with float copies of its rounding layers: each QuantizedConv a plain convolution holding the folded,
    int8-exact kernel and bias; ChannelScale and ChannelShift holding their 8-bit constants unrounded;
    FixedScaleActivation its plain activation), whose layers compute the file's ops one for one; `sites`
    (Site) are the learned ranges, each at the output of the twin layer it rounds."""
    replaced, sites = [], []

    def rewrite(layer, *args, **kwargs):
        if isinstance(layer, FakeQuant):
            low, high = (float(keras.ops.convert_to_numpy(v)) for v in (layer.range_min, layer.range_max))
            producer = internals.producer(args[0])
            if not keeps_scale(producer):  # (an interpolation's rounding: its input's range)
                sites.append(Site(layer.name, producer.name, low, high))
            return args[0]
        if isinstance(layer, QuantizedConv):
            config = {**layer.conv.get_config(), "use_bias": True, "name": layer.conv.name}
            twin = type(layer.conv).from_config(config)
            replaced.append((twin, [keras.ops.convert_to_numpy(w) for w in layer.folded()]))
        elif isinstance(layer, (ChannelScale, ChannelShift)):
            twin = type(layer)(quantized=False, name=layer.name)
            replaced.append((twin, [keras.ops.convert_to_numpy(layer.value())]))
        elif isinstance(layer, FixedScaleActivation):
            twin = keras.layers.Activation(layer.activation, name=layer.name)
        else:
            twin = layer
        return twin(*args, **kwargs)

    inputs = [keras.Input(batch_shape=t.shape, dtype=t.dtype, name=t.name) for t in qat.inputs]
    outputs = _replay(qat, inputs, rewrite)
    for twin, weights in replaced:
        twin.set_weights(weights)
    return keras.Model(*_unpacked(inputs, outputs), name=qat.name), sites
