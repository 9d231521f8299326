"""TensorFlow's CPU kernels with oneDNN and without: a training step and a prediction of the models users train.

    python benchmarks/cpu_kernels.py [--steps 10] [--output benchmarks/cpu_kernels.json]

TensorFlow turns oneDNN's kernels on by itself only on CPUs with AVX-512 VNNI or
AMX; kerasseg turns them on everywhere (`TF_ENABLE_ONEDNN_OPTS=1`, set as it is
imported unless the variable is). Each case runs twice, in a fresh process with
`TF_ENABLE_ONEDNN_OPTS=0` and one with `=1`: a plain `train_on_batch` step
(Adam, the demo's cross-entropy plus Dice, a random batch held in memory, after
three warm-up steps) and a batch-1 `predict_on_batch` at the training size and at
512x512, each the median of --steps.
"""

import argparse
import json
import os
import statistics
import subprocess
import sys
import time

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, ROOT)

CASES = {  # name: (registered model, builder arguments, training batch, image size)
    "the demo's unet_edge (12 base filters)": ("unet_edge", {"base_filters": 12}, 16, 64),
    "unet_edge (16 base filters)": ("unet_edge", {}, 8, 128),
    "deeplab_v3_plus on mobilenet_v2": ("deeplab_v3_plus", {"backbone": "mobilenet_v2"}, 4, 128),
    "lraspp on mobilenet_v3_large": ("lraspp", {"backbone": "mobilenet_v3_large"}, 4, 128),
    "unet on resnet50": ("unet", {"backbone": "resnet50"}, 4, 128),
}


def measure(case, steps):
    """{"train_ms", "predict_ms", "onednn"} of `case` in this process."""
    import kerasseg  # noqa: F401 (before TensorFlow)
    import keras
    import numpy as np

    from export.internals import onednn_kernels
    from kerasseg import losses, models

    name, kwargs, batch, size = CASES[case]
    model = models.create_model(name, classes=4, input_shape=(None, None, 3), **kwargs)
    model.compile(optimizer=keras.optimizers.Adam(1e-3), loss=losses.SegmentationLoss("ce+dice"))
    model.optimizer.build(model.trainable_variables)
    rng = np.random.default_rng(0)
    images = rng.uniform(0, 255, (batch, size, size, 3)).astype("float32")
    masks = rng.integers(0, 4, (batch, size, size)).astype("int32")

    def median_ms(run):
        times = []
        for _ in range(steps):
            start = time.perf_counter()
            run()
            times.append(1000 * (time.perf_counter() - start))
        return statistics.median(times)

    for _ in range(3):
        model.train_on_batch(images, masks)
    train = median_ms(lambda: model.train_on_batch(images, masks))
    model.predict_on_batch(images[:1])
    predict = median_ms(lambda: model.predict_on_batch(images[:1]))
    photo = rng.uniform(0, 255, (1, 512, 512, 3)).astype("float32")
    model.predict_on_batch(photo)
    return {"train_ms": round(train, 1), "predict_ms": round(predict, 1),
            "predict_512_ms": round(median_ms(lambda: model.predict_on_batch(photo)), 1),
            "onednn": onednn_kernels(), "batch": batch, "size": size}


def main():
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--steps", type=int, default=10)
    parser.add_argument("--only", nargs="*", choices=list(CASES), help="cases to run (default: all)")
    parser.add_argument("--output", default=os.path.join(ROOT, "benchmarks", "cpu_kernels.json"))
    parser.add_argument("--child", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child:
        print(json.dumps(measure(args.child, args.steps)))
        return
    rows = []
    for case in args.only or CASES:
        row = {"case": case}
        for setting in ("0", "1"):
            env = {**os.environ, "TF_ENABLE_ONEDNN_OPTS": setting, "TF_CPP_MIN_LOG_LEVEL": "3"}
            result = subprocess.run([sys.executable, __file__, "--child", case, "--steps", str(args.steps)],
                                    capture_output=True, text=True, env=env, check=True)
            row["onednn" if setting == "1" else "default"] = json.loads(result.stdout.splitlines()[-1])
        row["train_speedup"] = round(row["default"]["train_ms"] / row["onednn"]["train_ms"], 2)
        for key in ("predict", "predict_512"):
            row[f"{key}_speedup"] = round(row["default"][f"{key}_ms"] / row["onednn"][f"{key}_ms"], 2)
        rows.append(row)
        print(json.dumps(row), flush=True)
    with open(args.output + ".tmp", "w") as file:
        json.dump({"machine": os.uname().machine, "cpus": os.cpu_count(), "rows": rows}, file, indent=1)
    os.replace(args.output + ".tmp", args.output)
    print("\n| case | batch x size | train step: oneDNN off / on (ms) | speed-up | predict at that size, batch 1: "
          "off / on (ms) | speed-up | predict at 512x512: off / on (ms) | speed-up |")
    print("|---" * 8 + "|")
    for row in rows:
        off, on = row["default"], row["onednn"]
        print(f"| {row['case']} | {off['batch']} x {off['size']} px | {off['train_ms']:.0f} / {on['train_ms']:.0f} "
              f"| {row['train_speedup']:.2f} | {off['predict_ms']:.1f} / {on['predict_ms']:.1f} "
              f"| {row['predict_speedup']:.2f} | {off['predict_512_ms']:.0f} / {on['predict_512_ms']:.0f} "
              f"| {row['predict_512_speedup']:.2f} |")


if __name__ == "__main__":
    main()
