"""CPU latency (batch 1) of a trained model and every export beside it, at 1 and 2 threads.

    python benchmarks/export_latency.py runs/demo [--repeats 200] [--markdown]
    python benchmarks/export_latency.py runs/demo --export    # first export every mode into runs/demo

--export writes LiteRT float32 / float16 / dynamic / int8 and ONNX Runtime
float32 / int8 files (each checked against the Keras model on 50 held-out
images, reports beside them) before measuring. Each file runs in its own
runtime (Keras, LiteRT, ONNX Runtime) on the same test image; the figure is
the median of --repeats calls after a warm-up. Agreement figures come from
the exports' own reports.
"""

import argparse
import glob
import json
import os
import platform
import sys

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))


def export_all(directory):
    from kerasseg import resolve
    from export import commands, formats, onnx, tflite

    stage = resolve.stage(os.path.join(directory, "model.keras"))  # the model loaded, the run's splits read, once
    model, data = stage.file, formats.exporter_inputs(stage, commands.DataOptions(), calibrate=True)
    for mode in tflite.MODES:  # (file stems differ per runtime: each report sits beside its file)
        report = tflite.export(model, os.path.join(directory, f"litert_{mode}.tflite"), quantize=mode, **data)
        print(f"tflite {mode}: passed {report['passed']} {report['failed']}", flush=True)
    for mode in ("float32", "int8"):
        report = onnx.export(model, os.path.join(directory, f"onnxruntime_{mode}.onnx"), quantize=mode, **data)
        print(f"onnx {mode}: passed {report['passed']} {report['failed']}", flush=True)


def main():
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("directory")
    parser.add_argument("--repeats", type=int, default=200)
    parser.add_argument("--markdown", action="store_true", help="print a Markdown table for RESULTS.md")
    parser.add_argument("--export", action="store_true", help="export every mode into the directory first")
    args = parser.parse_args()
    if args.export:
        export_all(args.directory)

    import keras

    from export import runtimes
    from export.runtimes import median_ms
    from kerasseg import data

    with open(os.path.join(args.directory, "metrics.json")) as f:
        size = tuple(json.load(f)["image_size"])
    image = data.load_split("shapes", "test", size, count=1).images[0]
    rows = []
    model = keras.saving.load_model(os.path.join(args.directory, "model.keras"))
    keras_ms = median_ms(model.predict_on_batch, image[None].astype("float32"), args.repeats, warmup=5)
    keras_size = os.path.getsize(os.path.join(args.directory, "model.keras"))
    rows.append(("model.keras", "keras", "float32", keras_ms, None, keras_size, None, None))
    for path in sorted(glob.glob(os.path.join(args.directory, "*.tflite"))
                       + glob.glob(os.path.join(args.directory, "*.onnx"))):
        latencies = [median_ms(runtimes.open_runner(path, num_threads=t), image, args.repeats, warmup=5)
                     for t in (1, 2)]
        report_path = os.path.splitext(path)[0] + ".report.json"
        report = json.load(open(report_path)) if os.path.isfile(report_path) else {}
        runner = runtimes.open_runner(path)
        rows.append((os.path.basename(path), runner.runtime, runner.quantization, *latencies, os.path.getsize(path),
                     report.get("pixel_agreement"), report.get("miou_drop")))

    header = ["file", "runtime", "quantization", "1 thread ms", "2 threads ms", "size MB", "pixel agreement",
              "mIoU drop"]
    fmt = lambda v, spec: "-" if v is None else format(v, spec)  # noqa: E731
    lines = [[r[0], r[1], r[2], fmt(r[3], ".2f"), fmt(r[4], ".2f"), fmt(r[5] / 1e6, ".2f"), fmt(r[6], ".5f"),
              fmt(r[7], "+.2f")] for r in rows]
    print(f"{platform.processor() or platform.machine()}, {os.cpu_count()} cores, image {size[0]}x{size[1]}, "
          f"median of {args.repeats} (Keras: TensorFlow's default threads)")
    if args.markdown:
        print("| " + " | ".join(header) + " |")
        print("|" + "---|" * len(header))
        for line in lines:
            print("| " + " | ".join(line) + " |")
    else:
        widths = [max(len(x[i]) for x in [header, *lines]) for i in range(len(header))]
        for line in [header, *lines]:
            print("  ".join(c.ljust(w) for c, w in zip(line, widths)))


if __name__ == "__main__":
    main()
