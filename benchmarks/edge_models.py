"""The edge segmenters side by side (issue 45): what a user picks a phone or Coral model from.

    python benchmarks/edge_models.py --output benchmarks/edge_models.json     # every row (about 30 min, 2 cores)
    python benchmarks/edge_models.py --only "LR-ASPP MobileNetV3 Small" ...  # some rows (the others are kept)
    python benchmarks/edge_models.py --table                                  # the Markdown table of --output
    SMALL=1 python benchmarks/edge_models.py --output /tmp/edge.json          # a dry run: 64 px, 1 epoch

Each row trains from scratch under one budget (`shapes:hard` at --train-size, 128 by default: the same
images, epochs, batch, optimiser and seed through kerasseg.train.train; 256 px training of five models is
more than this 2-core machine gives a benchmark), exports the trained model to int8 LiteRT at that size
(calibrated on 200 training images, checked on 50 held-out ones at the default thresholds, kerasseg's own
check: agreement, and mIoU of Keras float and of the int8 file at the labels' own resolution), then at
--image-size (256) measures what a device pays: parameters, multiply-adds, the int8 file's bytes, its
LiteRT latency on this CPU at 1 and 2 threads (median of 20 after 3 warm-ups, batch 1), the same with the
class map computed inside the file (`output_kind="category"`: the argmax in the file), and the share of
its operators that map onto the Edge TPU by export.edgetpu's static check (Coral's op table; the
compiler is not run here).
"""

import argparse
import json
import os
import shutil
import sys
import tempfile

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, ROOT)

# the edge configurations: ReLU / ReLU6 networks with Edge TPU-lowered resizes (edge=True), and LR-ASPP on
# the full MobileNetV3s (hard-swish and SE: phones' CPUs and GPUs, not the Edge TPU)
ROWS = {  # (the MobileNets from scratch: batch norm momentum 0.9, as MobileNetV2's benchmarks train it)
    "U-Net edge": dict(model="unet_edge"),
    "DeepLab v3+ MobileNetV2": dict(model="deeplab_v3_plus", backbone="mobilenet_v2", aspp_filters=64,
                                    decoder_filters=64, edge=True, backbone_kwargs={"bn_momentum": 0.9}),
    "LR-ASPP MobileNetV3 Large": dict(model="lraspp", backbone="mobilenet_v3_large",
                                      backbone_kwargs={"bn_momentum": 0.9}),
    "LR-ASPP MobileNetV3 Small": dict(model="lraspp", backbone="mobilenet_v3_small",
                                      backbone_kwargs={"bn_momentum": 0.9}),
    "LR-ASPP MobileNetV3 Large minimalistic": dict(model="lraspp", backbone="mobilenet_v3_large", edge=True,
                                                   backbone_kwargs={"bn_momentum": 0.9}),
}


def measure(label, args, small):
    import keras
    import numpy as np

    from export import edgetpu, tflite
    from export.runtimes import median_ms, open_runner
    from kerasseg import data, models, train
    from kerasseg.profile import multiply_adds

    config = dict(ROWS[label])
    name, trained, size = config.pop("model"), args.train_size, args.image_size
    backbone = config.pop("backbone", None)
    with tempfile.TemporaryDirectory() as out:
        run = train.train(train.TrainConfig(out, model=name, backbone=backbone, model_args=config,
                                            dataset="shapes:hard", image_size=(trained, trained),
                                            epochs=args.epochs, train_samples=args.train_samples,
                                            batch_size=args.batch_size, augment="flip", seed=0))
        metrics, model = run.metrics, run.load_model()
        if args.keep:
            os.makedirs(args.keep, exist_ok=True)
            shutil.copy(run.model_path, os.path.join(args.keep, f"{label}.keras"))
        calibration = data.load_split("shapes:hard", "train", (trained, trained), 200)
        held_out = data.load_split("shapes:hard", "val", (trained, trained), 50)
        row = {"model": name, "backbone": backbone, "config": config, "params": model.count_params(),
               "train_seconds": metrics["train_seconds"], "val_miou_float": metrics["miou"]}
        report = tflite.export(model, os.path.join(out, "checked.tflite"), quantize="int8",
                               calibration=calibration.images, validation=(held_out.images, held_out.masks))
        row.update(int8_passed=report.passed, int8_agreement=report.pixel_agreement,
                   miou_keras=report.miou_reference, miou_int8=report.miou_exported, failed=report.failed)
        fixed = models.create_model(name, classes=len(calibration.class_names), input_shape=(size, size, 3),
                                    **({"backbone": backbone} if backbone else {}), **config)
        row["macs"] = multiply_adds(fixed)
        large = data.load_split("shapes:hard", "train", (size, size), 50).images
        x = np.asarray(large[0], np.float32)  # (one image: the runners take (H, W, 3))
        for kind in ("logits", "category"):
            path = os.path.join(out, f"{kind}.tflite")
            tflite.export(model, path, quantize="int8", calibration=large, validation=large[:8],
                          image_size=(size, size), output_kind=kind)
            for threads in (1, 2):
                runner = open_runner(path, num_threads=threads)
                row[f"{kind}_ms_{threads}t"] = round(median_ms(runner, x, 20, warmup=3), 2)
            if kind == "logits":
                row["int8_bytes"] = os.path.getsize(path)
                analysis = edgetpu.analyse(path)
                row.update(edgetpu_share=round(analysis["mapped_share"], 4),
                           edgetpu_fully_mapped=analysis["fully_mapped"],
                           edgetpu_first_cpu_op=(analysis["ops"][analysis["first_cpu_op"]]["op"]
                                                 if analysis["first_cpu_op"] is not None else None))
            else:
                row["category_bytes"] = os.path.getsize(path)
    keras.backend.clear_session()
    return row


def table(results, size):
    lines = [f"| segmenter | parameters | multiply-adds ({size}x{size}) | int8 file | "
             f"LiteRT int8 ms at {size}x{size}, 1 / 2 threads (class map inside) | "
             "Edge TPU mapped | mIoU float | mIoU int8 | int8 check |",
             "|---|---|---|---|---|---|---|---|---|"]
    for label, r in results.items():
        mapped = ("all" if r["edgetpu_fully_mapped"]
                  else f"{r['edgetpu_share']:.0%} (first on CPU: {r['edgetpu_first_cpu_op']})")
        lines.append(
            f"| {label} | {r['params'] / 1e6:.2f} M | {r['macs'] / 1e6:.0f} M | {r['int8_bytes'] / 2**20:.2f} MiB | "
            f"{r['logits_ms_1t']:.1f} / {r['logits_ms_2t']:.1f} "
            f"({r['category_ms_1t']:.1f} / {r['category_ms_2t']:.1f}) "
            f"| {mapped} | {r['miou_keras']:.3f} | {r['miou_int8']:.3f} | "
            f"{'passed' if r['int8_passed'] else 'FAILED: ' + ', '.join(r['failed'])} "
            f"(agreement {r['int8_agreement']:.4f}) |")
    return "\n".join(lines)


def main():
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--image-size", type=int, default=256, help="where the costs are measured")
    parser.add_argument("--train-size", type=int, default=128, help="where the models train and are checked")
    parser.add_argument("--epochs", type=int, default=6)
    parser.add_argument("--train-samples", type=int, default=600)
    parser.add_argument("--batch-size", type=int, default=8)
    parser.add_argument("--only", nargs="*", choices=list(ROWS))
    parser.add_argument("--output", default=os.path.join(ROOT, "benchmarks", "edge_models.json"))
    parser.add_argument("--table", action="store_true")
    parser.add_argument("--keep", help="a folder to keep each trained model in (LABEL.keras)")
    args = parser.parse_args()
    small = bool(os.environ.get("SMALL"))
    if small:
        args.image_size, args.train_size, args.epochs, args.train_samples = 64, 64, 1, 32
    from kerasseg.files import write_text_atomic

    settings = {k: getattr(args, k) for k in ("image_size", "train_size", "epochs", "train_samples", "batch_size")}
    results = {}
    if os.path.exists(args.output):
        saved = json.load(open(args.output))
        if saved["settings"] == settings:
            results = saved["results"]
    for label in ROWS:
        if args.table or (args.only and label not in args.only):
            continue
        print(f"== {label}", flush=True)
        results[label] = measure(label, args, small)
        print(json.dumps(results[label]), flush=True)
        write_text_atomic(args.output, json.dumps({"settings": settings, "results": results}, indent=1) + "\n")
    print(table({k: results[k] for k in ROWS if k in results}, args.image_size))


if __name__ == "__main__":
    main()
