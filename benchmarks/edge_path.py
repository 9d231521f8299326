"""One edge segmenter through the whole path (issue 45): trained on `shapes:hard` (or --dataset), then exported to every
format kerasseg writes, each file checked against the Keras model at the default thresholds.

    python benchmarks/edge_path.py --output benchmarks/edge_path.json       # LR-ASPP MobileNetV3 Large
    python benchmarks/edge_path.py --row "LR-ASPP MobileNetV3 Small" ...
    SMALL=1 python benchmarks/edge_path.py --output /tmp/edge_path.json     # a dry run: 64 px, 1 epoch
    python benchmarks/edge_path.py --from-run /tmp/edge_path/run ...        # a run trained before, not again

The row's configuration is benchmarks/edge_models.py's (from scratch, batch-norm momentum 0.9), trained
longer than that table's budget (--epochs, 24 by default: a model that has learnt the shapes; a weak one has
near-tied pixels everywhere, and any rounding flips them). Then at --size (128): int8 LiteRT (post-training,
min-max calibration on 200 training images), the same with percentile calibration, float16 and dynamic-range
LiteRT, ONNX float32 and int8 (QDQ), and the Android / Coral bundle (int8 with metadata: written only when its
check passes); each checked on 50 held-out images (and each int8 LiteRT file's own two kernel sets, XNNPACK and
the reference kernels, compared with each other there: the floor of any agreement with it) by kerasseg's own
check (pixel agreement, mIoU of Keras and of the file at the labels' resolution), at the default thresholds.
Where the int8 file fails, the same file with the layers that cost the most kept in float (`auto_keep_float`,
chosen on 50 held-out test images) is tried too, and what it kept is recorded. Then the issue's remedy where
post-training int8 fails: quantization-aware fine-tuning of the trained model (--qat-epochs, 0 for none; min-max
ranges, the trainer's fine-tuning rate), and its int8 LiteRT, int8 ONNX and Android / Coral bundle, each checked
against the quantization-aware Keras model as kerasseg checks them.
"""

import argparse
import json
import os
import sys
import tempfile
import time

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, ROOT)
SMALL = bool(os.environ.get("SMALL"))


def check(report, seconds):
    return {"passed": report.passed, "pixel_agreement": round(report.pixel_agreement, 5),
            "miou_keras": report.miou_reference and round(report.miou_reference, 4),
            "miou_file": report.miou_exported and round(report.miou_exported, 4), "failed": list(report.failed),
            "seconds": round(seconds, 1)}


def main():
    sys.path.insert(0, os.path.join(ROOT, "benchmarks"))
    from edge_models import ROWS
    from quantization import kernel_agreement

    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--row", default="LR-ASPP MobileNetV3 Large", choices=list(ROWS))
    parser.add_argument("--size", type=int, default=64 if SMALL else 128)
    parser.add_argument("--epochs", type=int, default=1 if SMALL else 24)
    parser.add_argument("--train-samples", type=int, default=32 if SMALL else 600)
    parser.add_argument("--dataset", default="shapes:hard", help="shapes:hard (default) or shapes (the demo's: a "
                        "from-scratch model learns it with confidence)")
    parser.add_argument("--lr", type=float, default=2e-3, help="the training's peak learning rate (the trainer's "
                        "default, 2e-3)")
    parser.add_argument("--output", default=os.path.join(ROOT, "benchmarks", "edge_path.json"))
    parser.add_argument("--qat-epochs", type=int, default=1 if SMALL else 4)
    parser.add_argument("--from-run", help="a run directory this script trained before: its model, not a new one")
    parser.add_argument("--qat-run", help="the quantization-aware run this script fine-tuned before, not a new one")
    parser.add_argument("--keep", help="where to keep the trained model and the files (default: a temporary folder)")
    args = parser.parse_args()

    from export import android, onnx, tflite
    from kerasseg import data, train
    from kerasseg.training import rundir
    from kerasseg.errors import InputError
    from kerasseg.files import write_text_atomic

    config = dict(ROWS[args.row])
    name, backbone = config.pop("model"), config.pop("backbone", None)
    out = args.keep or tempfile.mkdtemp(prefix="edge_path_")
    os.makedirs(out, exist_ok=True)
    row = {"row": args.row, "model": name, "backbone": backbone, "config": config, "size": args.size,
           "epochs": args.epochs, "train_samples": args.train_samples, "batch_size": 8, "dataset": args.dataset,
           "lr": args.lr}
    common = dict(dataset=args.dataset, image_size=(args.size, args.size), train_samples=args.train_samples,
                  batch_size=8, augment="flip", seed=0, overwrite=True)
    if args.from_run:
        run = rundir.Run.read(args.from_run)
        row.update(from_run=args.from_run, epochs=run.metrics["epochs"])
    else:
        run = train.train(train.TrainConfig(os.path.join(out, "run"), model=name, backbone=backbone,
                                            model_args=config, epochs=args.epochs, lr=args.lr, **common))
    row.update(train_seconds=run.metrics["train_seconds"], val_miou=round(run.metrics["miou"], 4))
    model = run.load_model()
    calibration = data.load_split(args.dataset, "train", (args.size, args.size), 200).images
    held = data.load_split(args.dataset, "val", (args.size, args.size), 50)
    validation = (held.images, held.masks)
    tuning = data.load_split(args.dataset, "test", (args.size, args.size), 50)  # (auto_keep_float's, held out)

    def record(label, exporter, *arguments, **options):
        started = time.time()
        report = exporter(model, *arguments, validation=validation, **options)
        row[label] = check(report, time.time() - started)
        if label.endswith("tflite_int8"):
            row[label]["litert_kernels_agree"] = round(kernel_agreement(arguments[0], held.images), 5)
        print(label, json.dumps(row[label]), flush=True)
        write_text_atomic(args.output, json.dumps(row, indent=1) + "\n")
        return report

    path = os.path.join(out, "model")
    int8 = record("tflite_int8", tflite.export, f"{path}.int8.tflite", quantize="int8", calibration=calibration)
    record("tflite_int8_percentile", tflite.export, f"{path}.int8p.tflite", quantize="int8",
           calibration=calibration, calibration_method="percentile")
    if not int8.passed:
        try:
            kept = record("tflite_int8_keep_float", tflite.export, f"{path}.int8k.tflite", quantize="int8",
                          calibration=calibration, auto_keep_float=True, tuning=(tuning.images, tuning.masks))
            row["tflite_int8_keep_float"]["kept_float"] = list(kept.details.get("kept_float") or [])
        except InputError as error:  # (16 tensors kept and still failing: what the row records)
            row["tflite_int8_keep_float"] = {"passed": False, "refused": str(error)}
    record("tflite_float16", tflite.export, f"{path}.f16.tflite", quantize="float16")
    record("tflite_dynamic", tflite.export, f"{path}.dyn.tflite", quantize="dynamic")
    record("onnx_float32", onnx.export, f"{path}.onnx")
    record("onnx_int8", onnx.export, f"{path}.int8.onnx", quantize="int8", calibration=calibration)
    bundle = os.path.join(out, "android")
    record("android", android.export, bundle, calibration=calibration)
    row["android"]["files"] = sorted(os.listdir(bundle)) if os.path.isdir(bundle) else []
    if args.qat_epochs or args.qat_run:
        qat = rundir.Run.read(args.qat_run) if args.qat_run else train.train(train.TrainConfig(
            os.path.join(out, "qat"), init_from=run.model_path, quantization_aware=True, epochs=args.qat_epochs,
            **common))
        row.update(qat_epochs=qat.metrics["epochs"], qat_train_seconds=qat.metrics["train_seconds"],
                   qat_val_miou=round(qat.metrics["miou"], 4))
        model = qat.load_model()
        record("qat_tflite_int8", tflite.export, f"{path}.qat.int8.tflite", quantize="int8", calibration=calibration)
        record("qat_onnx_int8", onnx.export, f"{path}.qat.int8.onnx", quantize="int8", calibration=calibration)
        bundle = os.path.join(out, "qat_android")
        record("qat_android", android.export, bundle, calibration=calibration)
        row["qat_android"]["files"] = sorted(os.listdir(bundle)) if os.path.isdir(bundle) else []
    write_text_atomic(args.output, json.dumps(row, indent=1) + "\n")
    print(json.dumps(row, indent=1))


if __name__ == "__main__":
    main()
