"""The activation ranges of a calibrated TFLite model, edited before it is quantized.

TFLite's calibration (export.internals.calibrated) records each activation
tensor's min and max in the float flatbuffer; quantizing it turns each range
into a scale and zero point. export.tflite edits the ranges in between: the
pixel input pinned to [0, 255], percentile ranges, or the ranges a
quantization-aware model learned.
"""

import numpy as np

from export import tensor_names
from kerasseg import cli
from kerasseg.errors import InputError
from kerasseg.choices import PERCENTILE
from kerasseg.layers.quantization import effective_range

tf_internals = cli.lazy_import("export.internals")  # (the .tflite flatbuffer as an object)


def recorded_values(calibrated, images):
    """(the calibrated model as a flatbuffer object, an iterator giving for each of `images` the value
    {index: array} of every activation tensor with a recorded range), read by running the calibrated float
    model itself in LiteRT with every tensor kept, so the tensors are the file's own."""
    from ai_edge_litert.interpreter import Interpreter

    model = tf_internals.read_tflite(calibrated)
    graph = model.subgraphs[0]
    recorded = [i for i, t in enumerate(graph.tensors) if t.quantization is not None and t.quantization.min is not None
                and i not in graph.inputs]
    interpreter = Interpreter(model_content=bytes(calibrated), experimental_preserve_all_tensors=True)
    interpreter.allocate_tensors()
    input_index = interpreter.get_input_details()[0]["index"]

    def values():
        for image in images:
            interpreter.set_tensor(input_index, image[None].astype(np.float32))
            interpreter.invoke()
            yield {i: interpreter.get_tensor(i) for i in recorded}

    return model, values()


def learned_ranges(calibrated, twin, sites):
    """(the calibrated model with each learned range of a quantization-aware model written into its tensor,
    {tensor name: (low, high, site)} of what was written).

    Found by structure: a Site rounds the output of one of `twin`'s layers, and that output is the tensor
    of the file that the layer's ops write and an op of another layer reads (or the model's output). Refuses
    (InputError, naming the layer) a range with no such tensor or more than one, and two ranges on one
    tensor: the simulation would then not compute what the file computes."""

    def place(model):
        graph = model.subgraphs[0]
        layers = {layer.name for layer in twin.layers}
        recorded = {i for i, t in enumerate(graph.tensors)
                    if t.quantization is not None and t.quantization.min is not None and i not in graph.inputs}
        owners = {i: tensor_names.layer_names(graph.tensors[i].name.decode(), twin.name, layers) for i in recorded}
        readers, writer = {}, {}
        for op in graph.operators:
            writer.update((i, op) for i in op.outputs)
            for i in op.inputs:
                readers.setdefault(i, []).append(op)
        # (the file names its outputs Identity, Identity_1, ...)
        for index, output in zip(graph.outputs, twin.outputs):
            owners.setdefault(index, set()).add(tensor_names.output_layer(output, writer[index], owners))
        placed, problems = {}, []
        for site in sites:
            mine = {i for i in recorded if site.layer in owners[i]}
            exits = [i for i in sorted(mine) if i in graph.outputs or any(
                out not in mine for op in readers.get(i, []) for out in op.outputs)]
            if len(exits) != 1:
                names = ", ".join(graph.tensors[i].name.decode() for i in exits)
                problems.append(f"{site.layer} (rounded by {site.point}): " + (
                    f"{len(exits)} tensors of the file leave it ({names})" if exits else
                    "no tensor of the file is its output: the converter removed it or fused it into another op "
                    "at this size (an average over a 1x1 map, an addition of zeros in an untrained batch "
                    "normalization)"))
                continue
            tensor = graph.tensors[exits[0]]
            name = tensor.name.decode()
            if name in placed and (placed[name][2].point != site.point):
                problems.append(f"{site.layer} (rounded by {site.point}) and {placed[name][2].layer} (rounded by "
                                f"{placed[name][2].point}) are one tensor of the file, {name}")
                continue
            tensor.quantization.min, tensor.quantization.max = [site.low], [site.high]
            placed[name] = (site.low, site.high, site)
        _share_through_rearranging_ops(model, {i for i, t in enumerate(graph.tensors) if t.name.decode() in placed})
        if problems:
            raise InputError(f"{len(problems)} learned range(s) of the quantization-aware model have no tensor "
                             f"of their own in the converted file, so the file would not compute what the model "
                             f"simulates: {'; '.join(problems[:8])}{' ...' if len(problems) > 8 else ''}")
        return placed

    return tf_internals.edit_tflite(calibrated, place)


def _share_through_rearranging_ops(model, learned):
    """Gives the output of every op that only rearranges values (a concatenation, a reshape, a slice) whose
    inputs all hold one learned range (the tensors `learned`, or outputs given one here) that same range.

    The quantizer makes such an op's inputs take its output's scale: the Edge TPU resize pads its input by
    concatenating it with its own border slices, and the calibrated range of that concatenation would
    otherwise replace the range learned for the tensor it pads."""
    ops = tf_internals.tflite_schema().BuiltinOperator
    rearranging = {ops.CONCATENATION, ops.RESHAPE, ops.STRIDED_SLICE, ops.SLICE}
    graph = model.subgraphs[0]
    ranges = {i: (graph.tensors[i].quantization.min[0], graph.tensors[i].quantization.max[0]) for i in learned}
    for op in graph.operators:  # (in execution order: an op's inputs are settled before it)
        code = model.operatorCodes[op.opcodeIndex]
        if max(code.builtinCode, code.deprecatedBuiltinCode) not in rearranging:
            continue
        sources = {ranges.get(i) for i in op.inputs if i >= 0 and _is_activation(model, graph.tensors[i])}
        if len(sources) == 1 and None not in sources:
            for out in op.outputs:
                tensor = graph.tensors[out]
                if out not in ranges and tensor.quantization is not None and tensor.quantization.min is not None:
                    ranges[out] = next(iter(sources))
                    tensor.quantization.min, tensor.quantization.max = [ranges[out][0]], [ranges[out][1]]


def _is_activation(model, tensor):
    """Whether `tensor` is computed when the model runs (its buffer holds no constant data)."""
    data = model.buffers[tensor.buffer].data
    return data is None or len(data) == 0


def check_learned_ranges(content, placed):
    """{"simulated", "written", "fixed", "calibrated"}: how many learned ranges `placed` holds; how many of
    their tensors in the quantized file `content` have that range's scale (an InputError names any that has
    not); how many int8 tensors have a kernel's fixed scale (sigmoid, softmax, tanh); and the names of the
    file's other int8 activation tensors whose ranges calibration set (not those that take the scale of
    the op's input: pooling, padding, resizing)."""
    model = tf_internals.read_tflite(content)
    graph = model.subgraphs[0]
    ops = tf_internals.tflite_schema().BuiltinOperator
    made_by, read_by = {}, {}
    for op in graph.operators:
        code = model.operatorCodes[op.opcodeIndex]
        kind = max(code.builtinCode, code.deprecatedBuiltinCode)
        made_by.update((i, (kind, op)) for i in op.outputs)
        for i in op.inputs:
            read_by.setdefault(i, set()).add(kind)

    def params(i):
        q = graph.tensors[i].quantization
        return None if q is None or q.scale is None else (tuple(q.scale), tuple(q.zeroPoint))

    activations = {t.name.decode(): i for i, t in enumerate(graph.tensors)
                   if t.type in (3, 9) and _is_activation(model, t) and i not in graph.inputs  # UINT8, INT8
                   and read_by.get(i) != {ops.QUANTIZE}}  # (not the int8 twin of a uint8 output)
    written, wrong = 0, []
    for name, (low, high, site) in placed.items():
        scales = list(params(activations[name])[0]) if name in activations else []
        low, high = (float(v) for v in effective_range(low, high))
        scale = (high - low) / 255
        # a range that is all but zero (a dead ReLU): the quantizer widens it by a rule of its own
        near_zero = high - low <= 1e-5 and len(scales) == 1 and scales[0] * 255 <= 1e-5
        if len(scales) == 1 and abs(scales[0] - scale) <= 1e-5 * scale or near_zero:
            written += 1
        else:
            wrong.append(f"{site.layer} ({site.point}: scale {scale:.6g}, the file's {scales or 'none'})")
    if wrong:
        raise InputError(f"{len(wrong)} learned range(s) did not survive quantization: {'; '.join(wrong[:8])}")
    fixed, calibrated = 0, []
    for name, i in activations.items():
        kind, op = made_by.get(i, (None, None))
        if name in placed or kind == ops.QUANTIZE:  # (the integer input's and output's own conversions)
            continue
        if kind in (ops.LOGISTIC, ops.SOFTMAX, ops.TANH):
            fixed += 1
        elif op is None or params(op.inputs[0]) != params(i):
            calibrated.append(name)
    return {"simulated": len(placed), "written": written, "fixed": fixed, "calibrated": sorted(calibrated)}


def percentile_ranges(calibrated, images, values_per_image=2048):
    """The calibrated model with each activation's recorded range narrowed to the PERCENTILE-th
    percentiles of its values over `images` (the calibrated model's own tensors, in LiteRT). Ranges still
    include 0."""
    model, values = recorded_values(calibrated, images)
    rng, samples = np.random.default_rng(0), {}
    for image_values in values:
        for i, value in image_values.items():
            value = value.ravel()
            samples.setdefault(i, []).append(value if value.size <= values_per_image
                                             else rng.choice(value, values_per_image))
    tensors = model.subgraphs[0].tensors
    for i, parts in samples.items():
        low, high = np.percentile(np.concatenate(parts), [100 - PERCENTILE, PERCENTILE])
        tensors[i].quantization.min = [float(min(low, 0.0))]
        tensors[i].quantization.max = [float(max(high, 0.0))]
    return tf_internals.write_tflite(model)


def pin_input_range(calibrated, low, high):
    """A calibrated (not yet quantized) model whose input tensor's recorded range is [low, high]."""
    def pin(model):
        graph = model.subgraphs[0]
        for index in graph.inputs:
            graph.tensors[index].quantization.min = [low]
            graph.tensors[index].quantization.max = [high]

    return tf_internals.edit_tflite(calibrated, pin)[0]
