"""What quantization costs where int8 is hard: segmenters trained on `shapes:hard`, exported every way.

    python benchmarks/quantization.py [--size 96] [--epochs 12] [--configs unet_edge deeplab_v3_plus_mnv2]
                                      [--qat-epochs 2] [--runs runs/quantization] [--output benchmarks/quantization]

Each configuration is trained with `kerasseg.train.train` on the
built-in `shapes:hard` data (nine classes, thin and small objects,
occlusion, colours shared with the background), or reused when its run
directory already holds a trained model. Each export method is then run
through the package's own exporter (`export.tflite`): converted, run in
LiteRT on the held-out test split (which neither training nor calibration
saw) and compared with the Keras model. Per method: pixel agreement with
the float model, the mIoU drop (points), the worst per-class IoU drop, the
file size and the LiteRT CPU latency (1 image, median). Writes OUTPUT.json
and prints the Markdown table for RESULTS.md.

"int8 QAT": the float run fine-tuned with `--quantization-aware` for
--qat-epochs, once per --qat-calibration (run directory NAME_qat, or
NAME_qat_percentile; reused likewise), exported int8 at the ranges it
learned. Its mIoU drop is against the float model; its pixel agreement is
with the QAT Keras model it came from (how faithful the simulation is). The
control, "int8 after float fine-tuning": the same epochs of plain float
training from the same model (NAME_float_tuned), then each post-training
int8 of --methods, so what QAT gains beyond the extra training shows.
"kernels" is LiteRT's agreement with itself: the same int8 file run with its
XNNPACK kernels and with its reference kernels, the floor under any
simulation's agreement. OUTPUT.json is rewritten after every row, so an
interrupted run keeps what it measured.
"""

import argparse
import json
import os
import sys
import time

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, ROOT)

# name: (model, backbone, builder arguments at image size `size`)
CONFIGS = {
    "unet_edge": ("unet_edge", None, lambda size: {}),  # the demo U-Net
    # the TF Model Garden / Coral configuration: full-width MobileNetV2 at output stride 16, ASPP and decoder;
    # the ASPP rates scaled to the image (the paper's 6/12/18 are for 513 px: 96 px gives 2/4/6); batch-norm
    # momentum 0.9, since from scratch keras.applications' 0.999 leaves the moving statistics far behind
    "deeplab_v3_plus_mnv2": ("deeplab_v3_plus", "mobilenet_v2", lambda size: {
        "edge": True, "aspp_rates": [max(1, size // d) for d in (48, 24, 16)],
        "backbone_kwargs": {"bn_momentum": 0.9}}),
    # the same with 64-channel ASPP and decoder, as deeplab_v3_plus_effb0 below: what 2 CPU cores can train at 128 px
    "deeplab_v3_plus_mnv2_64": ("deeplab_v3_plus", "mobilenet_v2", lambda size: {
        "edge": True, "aspp_rates": [max(1, size // d) for d in (48, 24, 16)], "aspp_filters": 64,
        "decoder_filters": 64, "backbone_kwargs": {"bn_momentum": 0.9}}),
    # the published hard case for post-training int8: EfficientNet's swish (LOGISTIC, MUL) and squeeze-excitation
    # gates (what EfficientNet-Lite removes "for easier post-quantization"); the ASPP and decoder at 64 channels,
    # since at 256 (the paper's) one epoch of 2,000 images at 128 px takes 21 minutes on 2 CPU cores
    "deeplab_v3_plus_effb0": ("deeplab_v3_plus", "efficientnet_b0", lambda size: {
        "aspp_rates": [max(1, size // d) for d in (48, 24, 16)], "aspp_filters": 64, "decoder_filters": 64}),
    # where the concatenation's one shared scale is hardest: a hypercolumn joins every ResNet stage's
    # features (their ranges differ several-fold) before one 1x1 classifier
    "hypercolumns_resnet18": ("hypercolumns", "resnet18", lambda size: {"hidden": 128}),
}
# (label, export.tflite arguments)
METHODS = (("float16", dict(quantize="float16")), ("dynamic", dict(quantize="dynamic")),
           ("int8", dict(quantize="int8")), ("int8 percentile", dict(quantize="int8", calibration_method="percentile")),
           ("int16x8", dict(quantize="int16x8")),
           # Google's ai-edge-quantizer on our float32 file (export.ai_edge): its static_wi8_ai8 recipe with its own
           # moving-average calibration, then with TFLite's global min/max (ours), with each algorithm it takes
           # for convolutions, and its static_wi8_ai16; the same calibration and held-out images, the same check
           ("ai-edge int8", dict(quantize="int8", quantizer="ai-edge", calibration_method="moving-average")),
           ("ai-edge int8 minmax", dict(quantize="int8", quantizer="ai-edge")),
           ("ai-edge int8 mse", dict(quantize="int8", quantizer="ai-edge", ai_edge_algorithm="mse")),
           ("ai-edge int8 octav", dict(quantize="int8", quantizer="ai-edge", ai_edge_algorithm="octav")),
           ("ai-edge int16x8", dict(quantize="int16x8", quantizer="ai-edge")))


def _trained(run, args, epochs, lr, **settings):
    """`run`, trained on shapes:hard with kerasseg.train `settings` unless it already holds a finished run."""
    from kerasseg.train import TrainConfig, train

    if os.path.isfile(os.path.join(run, "metrics.json")):
        print(f"reusing {run}", flush=True)
        return run
    config = TrainConfig(run, dataset="shapes:hard", image_size=args.size, epochs=epochs, batch_size=16,
                         train_samples=args.train_samples, lr=lr, augment="flip", seed=0, overwrite=True, **settings)
    print(config, flush=True)
    train(config)
    return run


def train_float(name, args):
    model, backbone, model_args = CONFIGS[name]
    return _trained(os.path.join(args.runs, name), args, args.epochs, args.lr, model=model, backbone=backbone,
                    model_args=model_args(args.size))


def fine_tune(run, args, calibration):
    """The float run fine-tuned for --qat-epochs at --qat-lr: quantization-aware, its ranges calibrated as
    `calibration` says (kerasseg.train --qat-calibration), or, for the control (`calibration` None), as much
    more training in float."""
    start = os.path.join(run, "model.keras")
    if calibration is None:
        return _trained(run + "_float_tuned", args, args.qat_epochs, args.qat_lr, init_from=start)
    suffix = "" if calibration == "minmax" else "_" + calibration
    return _trained(f"{run}_qat{suffix}", args, args.qat_epochs, args.qat_lr, init_from=start,
                    quantization_aware=True, qat_calibration=calibration)


def kernel_agreement(path, images):
    """Pixel agreement of one .tflite file with itself: XNNPACK's kernels against LiteRT's reference ones."""
    import numpy as np
    from ai_edge_litert.interpreter import Interpreter, OpResolverType

    classes = []
    for resolver in (OpResolverType.AUTO, OpResolverType.BUILTIN_REF):
        interpreter = Interpreter(model_path=path, experimental_op_resolver_type=resolver)
        interpreter.allocate_tensors()
        source, sink = interpreter.get_input_details()[0], interpreter.get_output_details()[0]
        found = []
        for image in images:
            interpreter.set_tensor(source["index"], image[None].astype(source["dtype"]))
            interpreter.invoke()
            found.append(interpreter.get_tensor(sink["index"]).argmax(-1))
        classes.append(np.concatenate(found))
    return float((classes[0] == classes[1]).mean())


def export_all(name, run, args, save):
    """The rows of configuration `name` (trained in `run`), each passed to `save(rows)` as soon as measured."""
    from kerasseg import resolve
    from export import commands, formats, tflite

    data = commands.DataOptions(samples=args.samples, calibration_samples=args.calibration_samples)
    thresholds = {"pixel_agreement": 0.0, "miou_drop": 100.0, "max_abs_error": 1e9}  # measured, not judged
    rows, images = {}, test_images(run, args)

    def measure(label, run, method, reference=None):
        """The row `label`: `run`'s model exported with `method`, its mIoU drop against `reference`'s Keras
        model (QAT's: the float model it started from; the simulation is its own) or else its own."""
        started = time.time()
        model, path = os.path.join(run, "model.keras"), os.path.join(run, f"{name}_{method.replace(' ', '_')}.tflite")
        stage = resolve.stage(model)
        report = tflite.export(stage.file, path, thresholds=thresholds, latency=True, **dict(METHODS)[method],
                               **formats.exporter_inputs(stage, data, calibrate=True))
        reference = reference or report
        worst, drop = worst_class(reference, report)
        row = rows[label] = {key: report[key] for key in ("pixel_agreement", "miou_exported", "size_bytes",
                                                          "latency_ms", "per_class_iou_reference")}
        row.update(miou_reference=reference["miou_reference"], keras_miou=report["miou_reference"],
                   miou_drop=100 * (reference["miou_reference"] - report["miou_exported"]),
                   worst_class=worst, worst_class_drop=drop, seconds=time.time() - started)
        if method == "int8":
            row["kernel_agreement"] = kernel_agreement(path, images)
        row.update(file_facts(path))
        with open(os.path.join(run, "metrics.json")) as f:
            trained = json.load(f)
        if trained.get("init_from"):  # a fine-tuning run
            row.update(fine_tuning_seconds=trained["train_seconds"], fine_tuning_epochs=trained["epochs"])
        kernels = f" (kernels {row['kernel_agreement']:.4f})" if "kernel_agreement" in row else ""
        print(f"  {label}: agreement {row['pixel_agreement']:.4f}{kernels}, mIoU {row['miou_reference']:.4f} -> "
              f"{row['miou_exported']:.4f} ({row['miou_drop']:+.2f} pts), worst class {drop:+.2f} pts ({worst})",
              flush=True)
        save(rows)
        return report

    reports = {method: measure(method, run, method) for method, _ in METHODS if method in args.methods}
    if args.qat_epochs:
        epochs = f"({args.qat_epochs} epochs)"
        for calibration in args.qat_calibration:
            ranges = "" if calibration == "minmax" else f", {calibration} ranges"
            measure(f"int8 QAT{ranges} {epochs}", fine_tune(run, args, calibration), "int8", reports["int8"])
        if not args.no_control:  # the same epochs in float, then each post-training int8 asked for
            tuned = fine_tune(run, args, None)
            for method in ("int8", "int8 percentile"):
                if method in args.methods:
                    measure(f"{method} after float fine-tuning {epochs}", tuned, method)
    return rows


def file_facts(path):
    """What a device needs of the file: its input type and (scale, zero point): camera pixels go in exactly
    when uint8 (1.0, 0) or int8 (1.0, -128); the share of its ops the Edge TPU maps and whether the whole file
    would compile (the static check: every op mapped, no constant stored after the flatbuffer)."""
    from ai_edge_litert.interpreter import Interpreter

    from export import edgetpu

    detail = Interpreter(model_path=path).get_input_details()[0]
    scale, zero_point = detail["quantization"]
    check = edgetpu.analyse(path)
    return {"input": f"{detail['dtype'].__name__} ({scale:g}, {zero_point})" if scale else detail["dtype"].__name__,
            "camera_exact": (detail["dtype"].__name__, scale, zero_point) in (("uint8", 1.0, 0), ("int8", 1.0, -128)),
            "edgetpu_mapped_share": check["mapped_share"], "edgetpu_fully_mapped": check["fully_mapped"],
            "buffers_outside": check["buffers_outside"]}


def worst_class(reference, report):
    """(name, IoU drop in points) of the class whose IoU the exported file loses most against `reference`'s
    Keras model (a class absent from the test images has no IoU and is skipped)."""
    ious = reference["per_class_iou_reference"]
    drops = {c: 100 * (ious[c] - (report["per_class_iou_exported"][c] or 0.0)) for c in ious if ious[c] is not None}
    worst = max(drops, key=drops.get)
    return worst, drops[worst]


def test_images(run, args):
    from kerasseg import resolve

    return resolve.data_view(os.path.join(run, "model.keras")).load_split("test", (args.size, args.size),
                                                                         args.samples).images


def main():
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--configs", nargs="+", choices=tuple(CONFIGS), default=tuple(CONFIGS))
    parser.add_argument("--size", type=int, default=96)
    parser.add_argument("--epochs", type=int, default=12)
    parser.add_argument("--train-samples", type=int, default=2000)
    parser.add_argument("--lr", type=float, default=3e-3)
    parser.add_argument("--samples", type=int, default=200, help="held-out test images compared on")
    parser.add_argument("--calibration-samples", type=int, default=200)
    parser.add_argument("--qat-epochs", type=int, default=2, help="quantization-aware fine-tuning (0: none)")
    parser.add_argument("--qat-lr", type=float, default=1e-4)
    from kerasseg.training.config import QAT_CALIBRATIONS

    parser.add_argument("--qat-calibration", nargs="+", choices=QAT_CALIBRATIONS, default=["minmax"],
                        help="where QAT's ranges start (kerasseg.train --qat-calibration); one QAT run each")
    parser.add_argument("--no-control", action="store_true", help="QAT without its float fine-tuning control")
    parser.add_argument("--methods", nargs="+", choices=[m for m, _ in METHODS], default=[m for m, _ in METHODS],
                        help="the post-training exports (int8 is needed for QAT's rows)")
    parser.add_argument("--runs", default="runs/quantization")
    parser.add_argument("--output", default="benchmarks/quantization")
    args = parser.parse_args()
    if args.qat_epochs and "int8" not in args.methods:
        parser.error("--qat-epochs needs int8 in --methods: QAT's rows take the float model's scores from that row")
    results = {}

    def save(name, rows):  # after every row, so that an interrupted run keeps what it measured
        results[name] = {"methods": rows}
        with open(args.output + ".json.tmp", "w") as f:
            json.dump({"settings": vars(args), "results": results}, f, indent=2)
        os.replace(args.output + ".json.tmp", args.output + ".json")

    for name in args.configs:
        run = train_float(name, args)
        export_all(name, run, args, lambda rows, name=name: save(name, rows))
    print("\n| configuration | float mIoU (test) | method | pixel agreement | kernels | mIoU drop (pts) | "
          "worst class drop (pts) | size MB | LiteRT ms |")
    print("|---|---|---|---|---|---|---|---|---|")
    for name, result in results.items():
        for method, row in result["methods"].items():
            kernels = f"{row['kernel_agreement']:.4f}" if "kernel_agreement" in row else ""
            worst = f"{row['worst_class_drop']:+.2f}" + (f" ({row['worst_class']})" if "worst_class" in row else "")
            print(f"| {name} | {row['miou_reference']:.4f} | {method} | {row['pixel_agreement']:.4f} | {kernels} | "
                  f"{row['miou_drop']:+.2f} | {worst} | {row['size_bytes'] / 1e6:.2f} | {row['latency_ms']:.1f} |")


if __name__ == "__main__":
    main()
