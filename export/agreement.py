"""Does the exported model still agree with the Keras one? Measured in the real runtime.

    python -m export.agreement MODEL.keras EXPORTED.{tflite,onnx} [--dataset shapes] [--samples 50]

The exported file runs in the runtime a device uses (the LiteRT interpreter,
ONNX Runtime) on held-out test samples that calibration never saw. Reported:
logit errors, the share of pixels whose predicted class is unchanged, and the
mIoU of both models against the ground truth; FILE.disagreement.png shows the
held-out images where the two disagree most (image | Keras prediction |
exported prediction | the pixels that differ, in red).
"""

import json
import os
import sys
import time

import numpy as np

from kerasseg import cli
from kerasseg.cli import UsageError
from export import common

# Quantization changes logits by design; what must survive is the predicted class.
DEFAULT_THRESHOLDS = {
    "float32": {"max_abs_error": 1e-4},
    "float16": {"pixel_agreement": 0.999},
    "dynamic": {"pixel_agreement": 0.99, "miou_drop": 1.0},
    "int8": {"pixel_agreement": 0.99, "miou_drop": 1.0},
    "int16x8": {"pixel_agreement": 0.995, "miou_drop": 0.5},  # activations 256 times finer than int8
}
_UPPER_BOUNDS = ("max_abs_error", "mean_abs_error", "miou_drop")


class LiteRTRunner:
    """A .tflite file in the LiteRT interpreter; takes float pixels, returns float logits."""

    runtime = "litert"

    def __init__(self, path, num_threads=None):
        from ai_edge_litert.interpreter import Interpreter

        try:
            self.interpreter = Interpreter(model_path=os.fspath(path), num_threads=num_threads)
            self.interpreter.allocate_tensors()
        except Exception as error:
            raise UsageError(f"{path} is not a TFLite model LiteRT can load: {error}") from None
        self.input = self.interpreter.get_input_details()[0]
        self.output = self.interpreter.get_output_details()[0]
        self.input_size = tuple(int(s) for s in self.input["shape"][1:3])
        self.quantization = _tflite_quantization(self.interpreter, self.input)

    def __call__(self, image):
        x = image[None].astype(np.float32)
        if self.input["dtype"] != np.float32:
            # as a device does (MediaPipe, pycoral): the pixels as they are, shifted by -128 for an int8
            # input; no re-quantization with the file's scale, which would hide a wrong one
            x = x + np.iinfo(self.input["dtype"]).min
        self.interpreter.set_tensor(self.input["index"], x.astype(self.input["dtype"]))
        self.interpreter.invoke()
        y = self.interpreter.get_tensor(self.output["index"])[0]
        scale, zero_point = self.output["quantization"]
        if self.output["dtype"] != np.float32 and scale:  # (class indices carry no quantization)
            y = (y.astype(np.float32) - zero_point) * scale
        return y


def _tflite_quantization(interpreter, input_details):
    """float32 / float16 / dynamic / int8 / int16x8, read off the tensors of the file itself."""
    tensors = interpreter.get_tensor_details()
    dtypes = {t["dtype"] for t in tensors}
    if input_details["dtype"] in (np.uint8, np.int8):
        return "int8"
    if np.int16 in dtypes:
        return "int16x8"
    if np.float16 in dtypes:
        return "float16"
    if np.int8 in dtypes:
        return "dynamic"
    return "float32"


class OnnxRunner:
    """An .onnx file in ONNX Runtime (CPU)."""

    runtime = "onnxruntime"

    def __init__(self, path, num_threads=None):
        import onnxruntime as ort

        options = ort.SessionOptions()
        if num_threads:
            options.intra_op_num_threads = num_threads
        try:
            self.session = ort.InferenceSession(os.fspath(path), options, providers=["CPUExecutionProvider"])
        except Exception as error:
            raise UsageError(f"{path} is not an ONNX model ONNX Runtime can load: {error}") from None
        self.input = self.session.get_inputs()[0]
        self.input_size = tuple(self.input.shape[1:3]) if all(isinstance(s, int) for s in self.input.shape[1:3]) else None
        self.quantization = "int8" if any(n.op_type == "QuantizeLinear" for n in _onnx_nodes(path)) else "float32"

    def __call__(self, image):
        return self.session.run(None, {self.input.name: image[None].astype(np.float32)})[0][0]


def _onnx_nodes(path):
    import onnx

    return onnx.load(os.fspath(path), load_external_data=False).graph.node


def open_runner(path, num_threads=None):
    if not os.path.isfile(path):
        raise UsageError(f"exported file not found: {path}")
    suffix = os.path.splitext(path)[1].lower()
    if suffix == ".tflite":
        return LiteRTRunner(path, num_threads)
    if suffix == ".onnx":
        return OnnxRunner(path, num_threads)
    raise UsageError(f"{path}: unknown export format {suffix!r}; accepted: .tflite, .onnx")


def median_ms(fn, x, repeats, warmup=1):
    """Median wall time of `fn(x)` in milliseconds, after `warmup` calls (which allocate and trace)."""
    for _ in range(warmup):
        fn(x)
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        fn(x)
        times.append(time.perf_counter() - start)
    return 1000 * float(np.median(times))


def compare(model, runner, samples, latency_repeats=20):
    """The agreement numbers of `runner` against `model` on `samples` (a data.Split), and both
    models' predicted classes."""
    from kerasseg import metrics

    images = samples.images.astype(np.float32)
    reference = np.concatenate([model.predict_on_batch(images[i : i + 8]) for i in range(0, len(images), 8)])
    exported = np.stack([runner(image) for image in images])
    if exported.shape != reference.shape:
        raise UsageError(f"the exported model returns {exported.shape[1:]} per image, the Keras model {reference.shape[1:]}")
    error = np.abs(exported.astype(np.float64) - reference)
    ref_class, exp_class = predicted_classes(reference), predicted_classes(exported)
    numbers = {
        "samples": len(images),
        "nonfinite_outputs": int((~np.isfinite(exported)).sum()),
        "max_abs_error": float(error.max()),
        "mean_abs_error": float(error.mean()),
        "pixel_agreement": float((ref_class == exp_class).mean()),
        "miou_reference": None, "miou_exported": None, "miou_drop": None,
        "per_class_iou_reference": None, "per_class_iou_exported": None,
        "latency_ms": median_ms(runner, images[0], latency_repeats),
        "keras_latency_ms": median_ms(model.predict_on_batch, images[:1], latency_repeats),
    }
    classes = model.outputs[0].shape[-1] if reference.ndim == 4 else samples.num_classes
    if classes != samples.num_classes:  # another dataset's images still show whether the two models agree
        numbers["miou_note"] = (f"mIoU not computed: the model predicts {classes} classes and dataset "
                                f"{samples.spec!r} has {samples.num_classes}; compared on pixels and logits only")
        return numbers, (ref_class, exp_class)
    n = samples.num_classes
    ref_scores = metrics.scores(metrics.confusion_matrix(samples.masks, ref_class, n), samples.class_names)
    exp_scores = metrics.scores(metrics.confusion_matrix(samples.masks, exp_class, n), samples.class_names)
    numbers.update(miou_reference=ref_scores["miou"], miou_exported=exp_scores["miou"],
                   miou_drop=100.0 * (ref_scores["miou"] - exp_scores["miou"]),
                   per_class_iou_reference=ref_scores["per_class_iou"],
                   per_class_iou_exported=exp_scores["per_class_iou"])
    return numbers, (ref_class, exp_class)


def predicted_classes(outputs):
    """Class per pixel of a batch of logits / probabilities (N, H, W, C) or class indices (N, H, W)."""
    return outputs if outputs.ndim == 3 else outputs.argmax(-1)


def check(report, thresholds):
    """Failed threshold descriptions; an empty list means the export passed."""
    failures = []
    if report.get("nonfinite_outputs"):
        failures.append(f"nonfinite_outputs {report['nonfinite_outputs']} > 0 (NaN or infinite logits)")
    for key, limit in thresholds.items():
        value = report[key]
        if value is None:  # not measured (mIoU on a dataset of other classes): said in miou_note
            continue
        ok = value <= limit if key in _UPPER_BOUNDS else value >= limit
        if not ok:
            failures.append(f"{key} {value:.6g} {'>' if key in _UPPER_BOUNDS else '<'} {limit:g}")
    return failures


def disagreement_png(samples, classes, path, count=4):
    """Writes the `count` held-out images with the most disagreeing pixels, side by side."""
    from kerasseg import plots

    reference, exported = classes
    differing = (reference != exported).reshape(len(reference), -1).mean(1)
    rows, captions = [], []
    for i in np.argsort(-differing, kind="stable")[:count]:
        image = samples.images[i]
        rows.append([image, plots.colorize(reference[i]), plots.colorize(exported[i]),
                     plots.differences(image, reference[i], exported[i])])
        captions.append(f"test #{i}: {100 * differing[i]:.2f}% differ")
    plots.save_grid(rows, ["image", "Keras", "exported", "differ"], path, captions)


def agreement_report(model, exported_path, samples, quantization=None, overrides=None, extra=None, runner=None,
                     figure=None):
    """Runs the comparison and returns the complete report dictionary (and draws `figure`, a PNG path)."""
    runner = runner or open_runner(exported_path)
    quantization = quantization or runner.quantization
    thresholds = {**DEFAULT_THRESHOLDS[quantization], **(overrides or {})}
    report = {"runtime": runner.runtime, "quantization": quantization, **(extra or {})}
    numbers, classes = compare(model, runner, samples)
    report.update(numbers)
    if figure:
        disagreement_png(samples, classes, figure)
        report["disagreement_png"] = os.fspath(figure)
    report["size_bytes"] = os.path.getsize(exported_path)
    report["thresholds"] = thresholds
    report["failed"] = check(report, thresholds)
    report["passed"] = not report["failed"]
    return report


def print_summary(report, path):
    miou = report.get("miou_note") or (f"mIoU {report['miou_reference']:.4f} -> {report['miou_exported']:.4f} "
                                       f"(drop {report['miou_drop']:.2f} pts)")
    print(
        f"{path}: {report['runtime']} {report['quantization']}, {report['samples']} held-out samples: "
        f"pixel agreement {report['pixel_agreement']:.5f}, max |error| {report['max_abs_error']:.3g}, "
        f"{miou}, {report['size_bytes'] / 1e6:.2f} MB, {report['latency_ms']:.2f} ms/image"
    )
    if report["passed"]:
        print("agreement: passed")
    else:
        print(f"agreement: FAILED: {'; '.join(report['failed'])}", file=sys.stderr)


def write_report(report, path):
    cli.write_text_atomic(path, json.dumps(report, indent=2) + "\n")


def main(argv=None):
    parser = cli.ArgumentParser(prog="python -m export.agreement", description=__doc__,
                                formatter_class=cli.argparse.RawDescriptionHelpFormatter)
    parser.add_argument("model", help="the Keras model (.keras)")
    parser.add_argument("exported", help="the exported file (.tflite or .onnx)")
    common.add_data_args(parser)
    common.add_threshold_args(parser)
    parser.add_argument("--report", help="where to write the report (default: beside the exported file)")
    parser.add_argument("--debug", action="store_true",
                        help="int8 .tflite: re-quantize the Keras model the same way with TFLite's "
                             "QuantizationDebugger and write the per-tensor error table (REPORT.debug.csv)")
    common.add_calibration_args(parser)
    args = parser.parse_args(argv)
    model, policy = common.load_model(args.model)
    runner = open_runner(args.exported)
    size = args.image_size or runner.input_size or common.resolve_image_size(model, args.model)
    samples = common.load_samples(args.model, args.dataset, "test", size, args.samples)
    report_path = args.report or common.report_path(args.exported)
    report = agreement_report(model, args.exported, samples, overrides=common.threshold_overrides(args),
                              extra={"dataset": samples.spec, "image_size": list(size), "training_policy": policy},
                              runner=runner,
                              figure=common.figure_path(report_path))
    if args.debug:
        if report["quantization"] != "int8" or runner.runtime != "litert":
            raise UsageError(f"--debug reads int8 .tflite files; {args.exported} is {runner.runtime} "
                             f"{report['quantization']}")
        from export import tflite

        calibration, _ = common.calibration_images(args.model, args.calibration_dataset or args.dataset, size,
                                                   args.calibration_samples)
        csv_path = report_path.removesuffix(".json").removesuffix(".report") + ".debug.csv"
        rows = tflite.quantization_debug(model, size, calibration, csv_path)
        print(tflite.format_offenders(rows))
        report.update(debug_csv=csv_path, flagged_tensors=[r["tensor_name"] for r in rows if r["flagged"]])
    write_report(report, report_path)
    print_summary(report, args.exported)
    return 0 if report["passed"] else 1


if __name__ == "__main__":
    sys.exit(cli.run(main))
