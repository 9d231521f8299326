"""The activation ranges of a calibrated TFLite model, edited before it is quantized.

TFLite's calibration (`_experimental_calibrate_only`) records each activation
tensor's min and max in the float flatbuffer; quantizing it turns each range
into a scale and zero point. export.tflite edits the ranges in between: the
pixel input pinned to [0, 255], percentile ranges, or the ranges a
quantization-aware model learned.
"""

import numpy as np

from kerasseg.cli import UsageError

PERCENTILE = 99.99


def recorded_values(calibrated, images):
    """(the calibrated model as a flatbuffer object, an iterator giving for each of `images` the value
    {index: array} of every activation tensor with a recorded range), read by running the calibrated float
    model itself in LiteRT with every tensor kept, so the tensors are the file's own."""
    from ai_edge_litert.interpreter import Interpreter
    from tensorflow.lite.tools import flatbuffer_utils

    model = flatbuffer_utils.convert_bytearray_to_object(bytearray(calibrated))
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


def learned_ranges(calibrated, probe, ranges, image):
    """The calibrated model with the range of each quantization-aware model's FakeQuant tensor replaced by the
    range it learned. Each is found by value: the LiteRT tensor of its shape that equals `probe`'s output
    for it on `image`. One the converter folded away (the pixel scaling, folded into the first convolution)
    has none, and needs none. Refuses (UsageError) a model where none is found."""
    from tensorflow.lite.tools import flatbuffer_utils

    model, values = recorded_values(calibrated, [image])
    values = next(values)
    expected = probe(image[None].astype(np.float32))
    found = 0
    for wanted, (low, high) in zip(expected if isinstance(expected, list) else [expected], ranges):
        wanted = np.asarray(wanted)
        errors = {i: np.abs(v - wanted).max() for i, v in values.items() if v.shape == wanted.shape}
        best = min(errors, key=errors.get, default=None)
        if best is not None and errors[best] <= 1e-3 * (np.abs(wanted).max() + 1e-3):
            tensor = model.subgraphs[0].tensors[best]
            tensor.quantization.min, tensor.quantization.max = [low], [high]
            found += 1
    if not found:
        raise UsageError("none of the quantization-aware model's quantized tensors has a counterpart in the "
                         "converted graph, so its learned ranges cannot be written")
    return bytes(flatbuffer_utils.convert_object_to_bytearray(model))


def percentile_ranges(calibrated, images, values_per_image=2048):
    """The calibrated model with each activation's recorded range narrowed to the PERCENTILE-th
    percentiles of its values over `images` (the calibrated model's own tensors, in LiteRT). Ranges still
    include 0."""
    from tensorflow.lite.tools import flatbuffer_utils

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
    return bytes(flatbuffer_utils.convert_object_to_bytearray(model))


def pin_input_range(calibrated, low, high):
    """A calibrated (not yet quantized) model whose input tensor's recorded range is [low, high]."""
    from tensorflow.lite.tools import flatbuffer_utils

    model = flatbuffer_utils.convert_bytearray_to_object(bytearray(calibrated))
    graph = model.subgraphs[0]
    for index in graph.inputs:
        graph.tensors[index].quantization.min = [low]
        graph.tensors[index].quantization.max = [high]
    return bytes(flatbuffer_utils.convert_object_to_bytearray(model))
