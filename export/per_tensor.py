"""Per-tensor int8 quantization error, and int8 files with some ops kept in float.

TFLite's QuantizationDebugger runs the float and the int8 model side by
side on calibration images and measures each quantized op output's error;
`quantization_debug` ranks them in units of the tensor's quantization step.
The layers (or the worst tensors) that lose most can then stay in float:
`convert_keeping_float` writes a split int8/float file, `float_costs` says
what each kept op costs in bytes and milliseconds. `export.tflite --debug /
--keep-float / --auto-keep-float` and `export.agreement --debug` use these.
"""

import csv
import io
import math
import os
import re
import tempfile

import numpy as np

from kerasseg import files
from kerasseg.errors import InputError
from export import converter, ranges, report as reports, runtimes, tensor_names
from kerasseg.data import values

FLAG_RMSE_PER_SCALE = 0.7


def _debugger(model, image_size, calibration_images, keep_float=(), debug_samples=32):
    import tensorflow as tf

    options = tf.lite.experimental.QuantizationDebugOptions(denylisted_nodes=list(keep_float) or None)
    return tf.lite.experimental.QuantizationDebugger(
        converter=converter.make_converter(model, "int8", image_size, calibration_images),
        debug_dataset=converter.representative_dataset(calibration_images[:debug_samples]), debug_options=options)


def quantization_debug(model, image_size, calibration_images, csv_path=None):
    """Per-tensor quantization error (TFLite's QuantizationDebugger), worst first.

    Each row is one quantized op output: the float model's and the int8
    model's values compared on calibration images; `rmse/scale` is the RMS
    error in units of the tensor's quantization step (about 0.29 for pure
    rounding; above FLAG_RMSE_PER_SCALE the layer is flagged). Written as CSV
    to `csv_path` when given. The rows name tensors after the layers' tagged
    names (tensor_names.unambiguous_names, as `convert_keeping_float` takes them);
    the CSV after the layers' own.
    """
    with tensor_names.unambiguous_names(model):
        debugger = _debugger(model, image_size, calibration_images)
        debugger.run()
    buffer = io.StringIO()
    debugger.layer_statistics_dump(buffer)
    rows = list(csv.DictReader(io.StringIO(buffer.getvalue())))
    for row in rows:
        scale = float(row["scale"] or 0)
        row["rmse/scale"] = math.sqrt(float(row["mean_squared_error"])) / scale if scale else 0.0
        row["flagged"] = row["rmse/scale"] > FLAG_RMSE_PER_SCALE
    rows.sort(key=lambda row: -row["rmse/scale"])
    if csv_path:
        out = io.StringIO()
        writer = csv.DictWriter(out, fieldnames=list(rows[0]) if rows else ["tensor_name"])
        writer.writeheader()
        writer.writerows({**row, "tensor_name": tensor_names.untagged(row["tensor_name"])} for row in rows)
        files.write_text_atomic(csv_path, out.getvalue())
    return rows


def format_offenders(rows, count=10):
    lines = [f"{'rmse/scale':>10}  {'op':<18} tensor"]
    for row in rows[:count]:
        flag = "  <- flagged" if row["flagged"] else ""
        lines.append(f"{row['rmse/scale']:10.3f}  {row['op_name']:<18} "
                     f"{tensor_names.untagged(row['tensor_name'].split(';')[0])}{flag}")
    return "\n".join(lines)


def tensors_of_layers(model, rows, layer_names):
    """The tensors of `quantization_debug(model)`'s rows that belong to the Keras layers `layer_names` (an
    InputError names any layer with no quantized tensor)."""
    tagged, tensors = tensor_names.tagged_names(model), []
    for layer in layer_names:
        # (a layer's own scope, entered again: `c__l0_1`; no other layer's tagged name can spell it)
        pattern = re.compile(rf"(^|/){re.escape(tagged.get(layer, ''))}(_\d+)?/")
        found = [row["tensor_name"] for row in rows if layer in tagged and pattern.search(row["tensor_name"])]
        if not found:
            known = sorted({name for row in rows for name in _layers_of(row["tensor_name"])})
            raise InputError(f"keep float: no quantized tensor belongs to layer {layer!r}; layers with "
                             f"quantized outputs: {', '.join(known[:40])}")
        tensors += found
    return tensors


def convert_keeping_float(model, image_size, calibration_images, tensors):
    """int8 with the ops producing `tensors` left in float (float32 input and output; the input's range
    pinned to pixels, as in `convert`); `tensors` named as `quantization_debug`'s rows name them."""
    with tensor_names.unambiguous_names(model):
        debugger = _debugger(model, image_size, calibration_images, keep_float=tensors)
        debugger.calibrated_model = ranges.pin_input_range(debugger.calibrated_model, 0.0, 255.0)
        return tensor_names.untagged(debugger.get_nondebug_quantized_model())


def _layers_of(tensor):
    """The Keras layers whose ops TFLite fused into the op writing `tensor` (a tensor of `quantization_debug`'s
    rows: its name lists each, ";"-joined, by its tagged name)."""
    return list(dict.fromkeys(re.findall(r"/([^/;]+?)__l\d+", tensor))) or [tensor.split(";")[0]]


def float_costs(model, image_size, calibration_images, tensors, image, repeats=20):
    """What keeping each of `tensors` in float costs, against the same file with every op in int8:
    bytes and LiteRT milliseconds per image (median of `repeats`, one thread as on a phone core)."""

    def measure(content):
        with tempfile.NamedTemporaryFile(suffix=".tflite") as tmp:
            tmp.write(content)
            tmp.flush()
            return len(content), runtimes.median_ms(runtimes.LiteRTRunner(tmp.name, num_threads=1), image, repeats)

    int8_bytes, int8_ms = measure(convert_keeping_float(model, image_size, calibration_images, []))
    costs = []
    for tensor in tensors:
        size, ms = measure(convert_keeping_float(model, image_size, calibration_images, [tensor]))
        costs.append({"layers": _layers_of(tensor), "tensor": tensor_names.untagged(tensor), "bytes": size - int8_bytes,
                      "latency_ms": ms - int8_ms})
    return {"int8_bytes": int8_bytes, "int8_latency_ms": int8_ms, "tensors": costs}


def format_costs(costs):
    lines = [f"kept in float, each against all-int8 ({costs['int8_bytes'] / 1e3:.0f} kB, "
             f"{costs['int8_latency_ms']:.2f} ms/image on 1 thread):"]
    for cost in costs["tensors"]:
        lines.append(f"  {' + '.join(cost['layers']):<40} {cost['bytes'] / 1e3:+8.1f} kB  "
                     f"{cost['latency_ms']:+7.2f} ms")
    return "\n".join(lines)


def auto_keep_float_tensors(model, image_size, calibration_images, rows, validation, thresholds):
    """Keeps the 1, 2, 4, ... worst tensors in float until `validation` samples meet `thresholds`; refuses
    samples on which the all-int8 file meets them already (they cannot tell which tensors to keep)."""
    for count in (0, 1, 2, 4, 8, 16):
        tensors = [row["tensor_name"] for row in rows[:count]]
        content = convert_keeping_float(model, image_size, calibration_images, tensors)
        with tempfile.NamedTemporaryFile(suffix=".tflite") as tmp:
            tmp.write(content)
            tmp.flush()
            numbers, _ = reports.compare(model, runtimes.LiteRTRunner(tmp.name), validation, latency_repeats=1)
        failed = reports.check(numbers, thresholds)
        if not count and not failed:
            raise InputError(
                f"the all-int8 file already meets the thresholds on the {numbers['samples']} tuning samples "
                f"({validation.spec}: pixel agreement {numbers['pixel_agreement']:.4f}), so they cannot choose "
                "which tensors to keep in float: choose on held-out samples on which it fails (tuning), not on "
                "the training images")
        print(f"{f'keeping the {count} worst tensor(s) in float' if count else 'all int8'}: "
              f"{'passes' if not failed else '; '.join(failed)} on {validation.spec}", flush=True)
        if not failed:
            return content, tensors
    raise InputError("the thresholds still fail with the 16 worst tensors kept in float; see the per-tensor "
                     "error table (debug)")


def flagged(rows):
    """The flagged tensors of `quantization_debug`'s rows, named after the layers' own names."""
    return [tensor_names.untagged(row["tensor_name"]) for row in rows if row["flagged"]]


def int8_keeping_float(model, size, calibration, *, output, debug, keep_float, auto_keep_float, tuning,
                       class_names, samples, thresholds):
    """export.tflite's int8 conversion with --debug, --keep-float or --auto-keep-float: (the .tflite bytes, or
    None where only the table was asked for; the report's entries)."""
    debug_csv = os.path.splitext(output)[0] + ".debug.csv" if debug else None
    rows = quantization_debug(model, size, calibration, debug_csv)
    print(f"quantization error per tensor, worst first ({len(rows)} tensors; flagged: rmse/scale > "
          f"{FLAG_RMSE_PER_SCALE}):\n{format_offenders(rows)}", flush=True)
    extra = {"debug_csv": debug_csv, "flagged_tensors": flagged(rows)}
    if keep_float:
        kept = tensors_of_layers(model, rows, keep_float)
        content = convert_keeping_float(model, size, calibration, kept)
    elif auto_keep_float:
        chosen_on = values.validation_samples(calibration if tuning is None else tuning, size, class_names, samples)
        limits = {**reports.DEFAULT_THRESHOLDS["int8"], **(thresholds or {})}
        content, kept = auto_keep_float_tensors(model, size, calibration, rows, chosen_on, limits)
    else:
        return None, extra
    extra["io"] = "float32"  # the split graph takes and returns float
    extra["kept_float"] = [tensor_names.untagged(tensor) for tensor in kept]
    extra["kept_float_costs"] = float_costs(model, size, calibration, kept, calibration[0].astype(np.float32))
    print(format_costs(extra["kept_float_costs"]), flush=True)
    return content, extra
