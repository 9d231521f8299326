"""Does empirical bias correction recover what post-training int8 loses? Measured on a trained run.

    python benchmarks/bias_correction.py runs/q128/deeplab_v3_plus_effb0 [--samples 200]
                                         [--calibration-samples 200] [--correction-images 64]
                                         [--output benchmarks/bias_correction]

Quantizing a convolution's weights (and the activations before it) shifts the
mean of its output: E[W x] is not E[Q(W) x]. Empirical bias correction
(Nagel et al. 2019, "Data-Free Quantization through Weight Equalization and
Bias Correction", section 4.2; AIMET's DeepLab v3+ recipe) measures that shift
on calibration images, one convolution after another in the int8 file's own
order, and subtracts it from the convolution's int32 bias: the int8 file is run
in LiteRT with every tensor kept, beside the calibrated float file it was
quantized from (the same tensor names), and each CONV_2D / DEPTHWISE_CONV_2D /
FULLY_CONNECTED output's per-channel mean difference is moved into its bias
(in units of its bias scale), the file re-read before the next layer so that
each correction sees the ones before it.

Each file (int8 with min/max ranges, with percentile ranges, each with and
without the correction) is checked by the package's agreement check against
the Keras model on the run's held-out test split: mIoU drop, worst class,
pixel agreement. Writes OUTPUT.json. Cross-layer equalization is not tried:
it moves scale between two layers through the activation between them,
which needs f(s x) = s f(x) (ReLU); EfficientNet's swish is not so.
"""

import argparse
import json
import os
import sys
import tempfile
import time

import numpy as np

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, ROOT)

CORRECTED_OPS = ("CONV_2D", "DEPTHWISE_CONV_2D", "FULLY_CONNECTED")


def int8_files(model, size, calibration, percentile):
    """(the calibrated float .tflite, the int8 .tflite quantized from it): export.tflite's own int8 path."""
    import tensorflow as tf

    from export import converter, internals, ranges

    calibrated = internals.calibrated(converter.make_converter(model, "int8", size, calibration, "uint8"))
    if percentile:
        calibrated = ranges.percentile_ranges(calibrated, calibration)
    calibrated = ranges.pin_input_range(calibrated, 0.0, 255.0)
    return calibrated, internals.quantized(calibrated, tf.uint8, tf.uint8)


def _tensors(content, images, indices, dequantize):
    """{tensor index: its mean over `images` and every pixel, per channel} of the file `content`."""
    from ai_edge_litert.interpreter import Interpreter

    interpreter = Interpreter(model_content=bytes(content), experimental_preserve_all_tensors=True)
    interpreter.allocate_tensors()
    source = interpreter.get_input_details()[0]
    details = {d["index"]: d for d in interpreter.get_tensor_details()}
    sums = {}
    for image in images:
        x = image[None]
        interpreter.set_tensor(source["index"], x.astype(source["dtype"]))
        interpreter.invoke()
        for i in indices:
            value = interpreter.get_tensor(i).astype(np.float64)
            if dequantize:
                scale, zero_point = details[i]["quantization"]
                value = (value - zero_point) * scale
            sums[i] = sums.get(i, 0) + value.reshape(-1, value.shape[-1]).mean(0)
    return {i: total / len(images) for i, total in sums.items()}


def bias_corrected(calibrated, quantized, images):
    """The int8 file `quantized` with each corrected op's bias moved by the mean output shift against the
    calibrated float file, op after op (see the module docstring); returns (the file, {op: mean |shift|})."""
    from export import internals

    schema = internals.tflite_schema()
    names = {v: k for k, v in vars(schema.BuiltinOperator).items() if not k.startswith("_")}
    model = internals.read_tflite(quantized)
    graph = model.subgraphs[0]
    float_model = internals.read_tflite(calibrated)
    float_index = {t.name: i for i, t in enumerate(float_model.subgraphs[0].tensors)}
    targets = []
    for op in graph.operators:
        code = model.operatorCodes[op.opcodeIndex]
        kind = names.get(max(code.builtinCode, code.deprecatedBuiltinCode))
        if kind in CORRECTED_OPS and len(op.inputs) > 2 and op.inputs[2] >= 0:
            out = graph.tensors[op.outputs[0]]
            if out.name in float_index and graph.tensors[op.inputs[2]].type == 2:  # INT32 bias
                targets.append((kind, op.inputs[2], op.outputs[0], float_index[out.name]))
    reference = _tensors(calibrated, images, [f for *_, f in targets], dequantize=False)
    shifts = {}
    content = quantized
    for _kind, bias, output, float_output in targets:
        measured = _tensors(content, images, [output], dequantize=True)[output]
        shift = reference[float_output] - measured  # what the int8 op's output lacks, per channel
        model = internals.read_tflite(content)
        tensor = model.subgraphs[0].tensors[bias]
        scales = np.asarray(tensor.quantization.scale, np.float64)
        values = np.frombuffer(bytes(model.buffers[tensor.buffer].data), np.int32).copy()
        if len(scales) == 1:
            scales = np.full(values.shape, scales[0])
        values = values + np.round(shift / scales).astype(np.int64)
        model.buffers[tensor.buffer].data = np.clip(values, -2**31, 2**31 - 1).astype(np.int32).view(np.uint8)
        content = internals.write_tflite(model)
        shifts[graph.tensors[output].name.decode()] = float(np.abs(shift).mean())
    return content, shifts


def mean_shift(calibrated, quantized, images):
    """The mean |per-channel output shift| of the corrected ops of `quantized` against `calibrated` (after a
    correction it should be smaller on the images it was measured on: what shows it did what it says)."""
    from export import internals

    model, float_model = internals.read_tflite(quantized), internals.read_tflite(calibrated)
    float_index = {t.name: i for i, t in enumerate(float_model.subgraphs[0].tensors)}
    pairs = [(i, float_index[t.name]) for i, t in enumerate(model.subgraphs[0].tensors)
             if t.name in float_index and t.type == 9 and i not in model.subgraphs[0].inputs]  # INT8 activations
    pairs = [(i, f) for i, f in pairs if model.buffers[model.subgraphs[0].tensors[i].buffer].data is None]
    measured = _tensors(quantized, images, [i for i, _ in pairs], dequantize=True)
    reference = _tensors(calibrated, images, [f for _, f in pairs], dequantize=False)
    return float(np.mean([np.abs(reference[f] - measured[i]).mean() for i, f in pairs]))


def main():
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("run", help="a trained run directory (its model.keras and split lists)")
    parser.add_argument("--samples", type=int, default=200, help="held-out test images the files are checked on")
    parser.add_argument("--calibration-samples", type=int, default=200)
    parser.add_argument("--correction-images", type=int, default=64, help="training images the shifts are measured on")
    parser.add_argument("--output", default="benchmarks/bias_correction")
    args = parser.parse_args()

    from export import commands, formats, pipeline, report as reports
    from kerasseg import resolve

    stage = resolve.stage(os.path.join(args.run, "model.keras"))
    data = formats.exporter_inputs(stage, commands.DataOptions(samples=args.samples,
                                                               calibration_samples=args.calibration_samples), True)
    model = pipeline.load_model(stage.file)[0]
    size, calibration, held_out = data["image_size"], data["calibration"].images, data["validation"]
    correction = calibration[:args.correction_images]
    rows = {}
    with tempfile.TemporaryDirectory() as folder:
        for label, percentile in (("int8", False), ("int8 percentile", True)):
            started = time.time()
            calibrated, quantized = int8_files(model, size, calibration, percentile)
            corrected, shifts = bias_corrected(calibrated, quantized, correction)
            seconds = time.time() - started
            before, after = (mean_shift(calibrated, q, correction) for q in (quantized, corrected))
            print(f"{label}: {len(shifts)} biases corrected in {seconds:.0f} s; mean |shift| of every int8 "
                  f"activation on the correction images {before:.4g} -> {after:.4g}", flush=True)
            for variant, content in ((label, quantized), (f"{label} + bias correction", corrected)):
                path = os.path.join(folder, "m.tflite")
                with open(path, "wb") as f:
                    f.write(content)
                report = reports.agreement_report(model, path, held_out, "int8")
                ious = report["per_class_iou_reference"]
                drops = {c: 100 * (ious[c] - (report["per_class_iou_exported"][c] or 0.0)) for c in ious
                         if ious[c] is not None}
                worst = max(drops, key=drops.get)
                rows[variant] = {"pixel_agreement": report["pixel_agreement"],
                                 "miou_reference": report["miou_reference"], "miou_exported": report["miou_exported"],
                                 "miou_drop": 100 * (report["miou_reference"] - report["miou_exported"]),
                                 "worst_class": worst, "worst_class_drop": drops[worst]}
                if variant != label:
                    rows[variant].update(corrected_ops=len(shifts), seconds=round(seconds, 1),
                                         mean_shift_before=before, mean_shift_after=after,
                                         largest_shifts=dict(sorted(shifts.items(), key=lambda kv: -kv[1])[:5]))
                print(f"{variant}: agreement {report['pixel_agreement']:.4f}, mIoU {report['miou_reference']:.4f} -> "
                      f"{report['miou_exported']:.4f} ({rows[variant]['miou_drop']:+.2f} pts), worst {worst} "
                      f"{drops[worst]:+.2f}", flush=True)
    with open(args.output + ".json.tmp", "w") as f:
        json.dump({"run": args.run, "settings": vars(args), "rows": rows}, f, indent=2)
    os.replace(args.output + ".json.tmp", args.output + ".json")


if __name__ == "__main__":
    main()
