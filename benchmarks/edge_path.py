"""One edge segmenter through the whole path (issue 45): trained on `shapes:hard`, then exported to every
format kerasseg writes, each file checked against the Keras model at the default thresholds.

    python benchmarks/edge_path.py --output benchmarks/edge_path.json       # LR-ASPP MobileNetV3 Large
    python benchmarks/edge_path.py --row "LR-ASPP MobileNetV3 Small" ...
    SMALL=1 python benchmarks/edge_path.py --output /tmp/edge_path.json     # a dry run: 64 px, 1 epoch

The row's configuration is benchmarks/edge_models.py's (from scratch, batch-norm momentum 0.9), trained
longer than that table's budget (--epochs, 24 by default: a model that has learnt the shapes; a weak one has
near-tied pixels everywhere, and any rounding flips them). Then at --size (128): int8 LiteRT (post-training,
min-max calibration on 200 training images), the same with percentile calibration, float16 and dynamic-range
LiteRT, ONNX float32 and int8 (QDQ), and the Android / Coral bundle (int8 with metadata: written only when its
check passes); each checked on 50 held-out images by kerasseg's own check (pixel agreement, mIoU of Keras and
of the file at the labels' resolution), at the default thresholds. Where the int8 file fails, the same file
with the layers that cost the most kept in float (`auto_keep_float`) is tried too, and what it kept is
recorded.
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

    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--row", default="LR-ASPP MobileNetV3 Large", choices=list(ROWS))
    parser.add_argument("--size", type=int, default=64 if SMALL else 128)
    parser.add_argument("--epochs", type=int, default=1 if SMALL else 24)
    parser.add_argument("--train-samples", type=int, default=32 if SMALL else 600)
    parser.add_argument("--output", default=os.path.join(ROOT, "benchmarks", "edge_path.json"))
    parser.add_argument("--keep", help="where to keep the trained model and the files (default: a temporary folder)")
    args = parser.parse_args()

    from export import android, onnx, tflite
    from kerasseg import data, train
    from kerasseg.files import write_text_atomic

    config = dict(ROWS[args.row])
    name, backbone = config.pop("model"), config.pop("backbone", None)
    out = args.keep or tempfile.mkdtemp(prefix="edge_path_")
    os.makedirs(out, exist_ok=True)
    row = {"row": args.row, "model": name, "backbone": backbone, "config": config, "size": args.size,
           "epochs": args.epochs, "train_samples": args.train_samples, "batch_size": 8}
    run = train.train(train.TrainConfig(os.path.join(out, "run"), model=name, backbone=backbone, model_args=config,
                                        dataset="shapes:hard", image_size=(args.size, args.size), epochs=args.epochs,
                                        train_samples=args.train_samples, batch_size=8, augment="flip", seed=0,
                                        overwrite=True))
    row.update(train_seconds=run.metrics["train_seconds"], val_miou=round(run.metrics["miou"], 4))
    model = run.load_model()
    calibration = data.load_split("shapes:hard", "train", (args.size, args.size), 200).images
    held = data.load_split("shapes:hard", "val", (args.size, args.size), 50)
    validation = (held.images, held.masks)

    def record(label, exporter, *arguments, **options):
        started = time.time()
        report = exporter(model, *arguments, validation=validation, **options)
        row[label] = check(report, time.time() - started)
        print(label, json.dumps(row[label]), flush=True)
        write_text_atomic(args.output, json.dumps(row, indent=1) + "\n")
        return report

    path = os.path.join(out, "model")
    int8 = record("tflite_int8", tflite.export, f"{path}.int8.tflite", quantize="int8", calibration=calibration)
    record("tflite_int8_percentile", tflite.export, f"{path}.int8p.tflite", quantize="int8",
           calibration=calibration, calibration_method="percentile")
    if not int8.passed:
        kept = record("tflite_int8_keep_float", tflite.export, f"{path}.int8k.tflite", quantize="int8",
                      calibration=calibration, auto_keep_float=True)
        row["tflite_int8_keep_float"]["kept_float"] = list(kept.details.get("kept_float") or [])
    record("tflite_float16", tflite.export, f"{path}.f16.tflite", quantize="float16")
    record("tflite_dynamic", tflite.export, f"{path}.dyn.tflite", quantize="dynamic")
    record("onnx_float32", onnx.export, f"{path}.onnx")
    record("onnx_int8", onnx.export, f"{path}.int8.onnx", quantize="int8", calibration=calibration)
    bundle = os.path.join(out, "android")
    record("android", android.export, bundle, calibration=calibration)
    row["android"]["files"] = sorted(os.listdir(bundle)) if os.path.isdir(bundle) else []
    write_text_atomic(args.output, json.dumps(row, indent=1) + "\n")
    print(json.dumps(row, indent=1))


if __name__ == "__main__":
    main()
