"""What the same quantization of the same model is expected to change: the bar a file without a fingerprint is
held to.

A file kerasseg wrote carries the fingerprint of the weights it came from (export.fingerprint), and the
check matches it exactly. A file converted elsewhere carries none, and one absolute agreement for every
model cannot tell its rounding from another model's weights: the same run one epoch later disagrees with a
model on under 1% of the pixels, within an int8 threshold of 0.99. So the check measures what this file's
kind of quantization does to this model: it converts the model here the way the file is (the same format,
mode and input type, calibrated on the held-out images themselves), and holds the file to FACTOR times that
file's pixel disagreement and mean logit error with the model, on the same images (never less than the
FLOORS: float16 and float32 barely drift at all). A file of another model drifts several times as far.

That bar has little power where the model is unsure: a small model whose own int8 rounding moves 0.3% of its
pixels lets the same run one epoch later (0.7%) through. So the check also reads the file's weights: the
same conversion of the same weights writes the same constants (int8 weights are rounded per channel from
the weights alone, whatever the calibration; float16 and float32 ones are the weights), and one epoch of
training moves nearly half of int8's two steps or more (one Adam step: a sixth). Where the file's constants
line up with those of the file made here (the same tensors, shapes and types, in the same order), at most
WEIGHTS_DIFFERING of their values may lie further apart than two roundings of one weight can; where they do
not (another converter's graph), only the drift is held.
"""

import os
import tempfile

import numpy as np

FACTOR = 3.0
FLOORS = {"pixel_disagreement": 0.001, "mean_abs_error": 1e-4}
WEIGHTS_DIFFERING = 0.01  # (the same weights: 0 apart in every test; one Adam step later 16% of int8's, an epoch 47%)


def simulated(model, runner, path, samples, kind="logits"):
    """{"pixel_agreement", "mean_abs_error", "how", "thresholds", "factor", "weights"} of the same quantization
    of `model` (a float32 Keras model ending in the file's output kind) made here as the file at `path` (run by
    `runner`) is made, checked on `samples` (a kerasseg.data.Split), and the file's weights compared with that
    file's ("weights": `weights_compared`); None where no such file can be made here (a format without a
    converter, a mode it does not know)."""
    from export import formats, onnx, pipeline, tflite  # noqa: F401 (onnx, tflite: kerasseg's formats registered)
    from export import report as reports

    suffix = os.path.splitext(os.fspath(path))[1].lower()
    fmt = next((f for f in formats.FORMATS.values() if f.suffix == suffix), None)
    if fmt is None or "quantize" not in fmt.defaults:
        return None
    options = {**fmt.defaults, "quantize": runner.quantization, "output": os.fspath(path), "samples": None,
               "thresholds": None}
    dtype = np.dtype(getattr(runner, "input", {}).get("dtype", np.float32)) if isinstance(
        getattr(runner, "input", None), dict) else np.dtype(np.float32)
    if "io" in options and runner.quantization == "int8":
        options["io"] = {np.dtype(np.uint8): "uint8", np.dtype(np.int8): "int8"}.get(dtype, "float32")
    try:
        fmt.check(options)
    except ValueError:
        return None
    size = tuple(samples.images.shape[1:3])
    found = pipeline.Inputs(model, "float32", model.name, size, samples, samples.class_names)
    if fmt.calibrates(options, model):
        found.calibration, found.calibration_spec = samples.images.astype(np.float32), "the held-out images"
    content, _ = fmt.convert(model, size, found, options)
    with tempfile.TemporaryDirectory() as folder:
        made = os.path.join(folder, f"simulated{suffix}")
        with open(made, "wb") as f:
            f.write(content)
        numbers, _ = reports.compare(model, fmt.runner(made, None), samples, kind=kind)
    with open(path, "rb") as f:
        weights = weights_compared(f.read(), content)
    found = {"pixel_agreement": numbers["pixel_agreement"], "mean_abs_error": numbers["mean_abs_error"],
             "how": f"{fmt.name} {runner.quantization}" + (f", io {options['io']}" if "io" in options and
                                                           runner.quantization == "int8" else "")
             + f", calibrated on the {len(samples)} held-out images"}
    return {**found, "thresholds": thresholds(found), "factor": FACTOR, "weights": weights}


def weights_compared(content, made):
    """{"compared", "differing", "passed", "limit"} of the .tflite bytes `content` against `made` (the same
    conversion of the model, made here): how many constant values were compared, the share of them further
    apart than two roundings of one weight can be (half of each one's step: a weight rounded per channel here
    and per tensor there is not apart), and whether that share is at most WEIGHTS_DIFFERING;
    {"compared": 0, "note"} where the two files' constants do not line up."""
    ours, theirs = _constants(made), _constants(content)
    if [key for key, _, _ in ours] != [key for key, _, _ in theirs] or not ours:
        return {"compared": 0, "differing": None, "passed": None, "limit": WEIGHTS_DIFFERING,
                "note": f"not compared: the file's {len(theirs)} constant tensors do not line up with the "
                        f"{len(ours)} of the same conversion made here (another converter's graph)"}
    apart = np.concatenate([(np.abs(a - b) > 0.5 * (step_a + step_b) * (1 + 1e-6)).ravel()
                            for (_, a, step_a), (_, b, step_b) in zip(ours, theirs)])
    differing = float(apart.mean())
    return {"compared": int(apart.size), "differing": differing, "passed": differing <= WEIGHTS_DIFFERING,
            "limit": WEIGHTS_DIFFERING}


def _constants(content):
    """[((shape, type), values, step)] of the constant tensors of floats or 8-bit integers in the .tflite bytes
    `content`, in the file's order: quantized ones dequantized, their step the scale of their channel;
    floats' step that of their own precision. 32-bit integers are left out: shapes, and int8 biases, whose
    scale follows the calibrated input range."""
    from export import internals

    types = internals.tflite_schema().TensorType
    kinds = {types.FLOAT32: np.float32, types.FLOAT16: np.float16, types.INT8: np.int8, types.UINT8: np.uint8}
    model = internals.read_tflite(content)
    found = []
    for tensor in model.subgraphs[0].tensors:
        buffer = model.buffers[tensor.buffer]
        data = buffer.data if buffer.data is not None and len(buffer.data) else (
            content[buffer.offset:buffer.offset + buffer.size] if getattr(buffer, "offset", 0) > 1 else None)
        if data is None or tensor.type not in kinds:
            continue
        dtype = kinds[tensor.type]
        values = np.frombuffer(bytes(data), dtype).reshape(tensor.shape)
        quantization = tensor.quantization
        if quantization is not None and quantization.scale is not None and len(quantization.scale):
            axis = [1] * values.ndim
            if len(quantization.scale) > 1:
                axis[quantization.quantizedDimension] = -1
            step = np.asarray(quantization.scale, np.float64).reshape(axis)
            values = (values - np.asarray(quantization.zeroPoint, np.float64).reshape(axis)) * step
        else:
            values = values.astype(np.float64)
            step = np.spacing(np.abs(values).astype(dtype)).astype(np.float64) if np.issubdtype(
                dtype, np.floating) else np.ones(values.shape)
        found.append(((tuple(tensor.shape), int(tensor.type)), values, step))
    return found


def thresholds(expected):
    """The thresholds of a file without a fingerprint, from `simulated`'s numbers: its pixel agreement at least
    1 - FACTOR x the simulated file's disagreement, its mean |error| at most FACTOR x the simulated one's."""
    disagreement = max(FACTOR * (1.0 - expected["pixel_agreement"]), FLOORS["pixel_disagreement"])
    return {"pixel_agreement": 1.0 - disagreement,
            "mean_abs_error": max(FACTOR * expected["mean_abs_error"], FLOORS["mean_abs_error"])}
