"""Every export format of the edge segmenters that benchmarks/edge_models.py trained (issue 45): each file
checked in its runtime at the default thresholds.

    python benchmarks/edge_models.py --keep /tmp/edge_models      # trains and keeps LABEL.keras
    python benchmarks/edge_formats.py /tmp/edge_models [--only LABEL ...]

For each kept model: int8 and float16 LiteRT, float32 and int8 ONNX, and the Android / Coral bundle,
calibrated on 200 `shapes:hard` training images and checked on 50 held-out ones at the size it trained at;
prints one line a file and writes benchmarks/edge_formats.json.
"""

import argparse
import json
import os
import sys
import tempfile

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, ROOT)


def main():
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("models", help="the folder edge_models.py --keep wrote")
    parser.add_argument("--only", nargs="*")
    parser.add_argument("--output", default=os.path.join(ROOT, "benchmarks", "edge_formats.json"))
    args = parser.parse_args()

    import keras

    from export import android, onnx, tflite
    from kerasseg import data
    from kerasseg.files import write_text_atomic

    results = {}
    for name in sorted(os.listdir(args.models)):
        label = name.removesuffix(".keras")
        if args.only and label not in args.only:
            continue
        model = keras.saving.load_model(os.path.join(args.models, name))
        size = tuple(model.image_size)
        calibration = data.load_split("shapes:hard", "train", size, 200).images
        held = data.load_split("shapes:hard", "val", size, 50)
        validation = (held.images, held.masks)
        rows = {}
        with tempfile.TemporaryDirectory() as out:
            exports = {
                "LiteRT int8": lambda: tflite.export(model, f"{out}/m_int8.tflite", quantize="int8",
                                                     calibration=calibration, validation=validation),
                "LiteRT float16": lambda: tflite.export(model, f"{out}/m_fp16.tflite", quantize="float16",
                                                        validation=validation),
                "ONNX float32": lambda: onnx.export(model, f"{out}/m.onnx", validation=validation),
                "ONNX int8": lambda: onnx.export(model, f"{out}/m_int8.onnx", quantize="int8",
                                                 calibration=calibration, validation=validation),
                "Android bundle": lambda: android.export(model, f"{out}/bundle", calibration=calibration,
                                                         validation=validation),
            }
            for kind, export in exports.items():
                report = export()
                rows[kind] = {"passed": report.passed, "pixel_agreement": report.pixel_agreement,
                              "miou_drop": report["miou_drop"], "failed": list(report.failed)}
                print(f"{label} / {kind}: {'passed' if report.passed else 'FAILED'} (agreement "
                      f"{report.pixel_agreement:.4f}, mIoU drop {report['miou_drop']:.2f} pts)", flush=True)
        results[label] = rows
        write_text_atomic(args.output, json.dumps(results, indent=1) + "\n")


if __name__ == "__main__":
    main()
