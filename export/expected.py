"""What the same quantization of the same model is expected to change: the bar a file without a fingerprint is
held to.

A file kerasseg wrote carries the fingerprint of the weights it came from (export.fingerprint), and the
check matches it exactly. A file converted elsewhere carries none, and one absolute agreement for every
model cannot tell its rounding from another model's weights: the same run one epoch later disagrees with a
model on under 1% of the pixels, within an int8 threshold of 0.99. So the check measures what this file's
kind of quantization does to this model: it converts the model here the way the file is (the same format,
mode and input type, calibrated on the held-out images themselves), and holds the file to FACTOR times that
file's pixel disagreement and mean logit error with the model, on the same images (never less than the
FLOORS: float16 and float32 barely drift at all). A file of another model drifts ten times as far.
"""

import os
import tempfile

import numpy as np

FACTOR = 3.0
FLOORS = {"pixel_disagreement": 0.001, "mean_abs_error": 1e-4}


def simulated(model, runner, path, samples, kind="logits"):
    """{"pixel_agreement", "mean_abs_error", "how", "thresholds"} of the same quantization of `model` (a float32
    Keras model ending in the file's output kind) made here as the file at `path` (run by `runner`) is made, checked on
    `samples` (a kerasseg.data.Split); None where no such file can be made here (a format without a
    converter, a mode it does not know)."""
    from export import formats, pipeline
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
    found = {"pixel_agreement": numbers["pixel_agreement"], "mean_abs_error": numbers["mean_abs_error"],
             "how": f"{fmt.name} {runner.quantization}" + (f", io {options['io']}" if "io" in options and
                                                           runner.quantization == "int8" else "")
             + f", calibrated on the {len(samples)} held-out images"}
    return {**found, "thresholds": thresholds(found)}


def thresholds(expected):
    """The thresholds of a file without a fingerprint, from `simulated`'s numbers: its pixel agreement at least
    1 - FACTOR x the simulated file's disagreement, its mean |error| at most FACTOR x the simulated one's."""
    disagreement = max(FACTOR * (1.0 - expected["pixel_agreement"]), FLOORS["pixel_disagreement"])
    return {"pixel_agreement": 1.0 - disagreement,
            "mean_abs_error": max(FACTOR * expected["mean_abs_error"], FLOORS["mean_abs_error"])}
