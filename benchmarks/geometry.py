"""One inference geometry, the training's (issue 42): mIoU on non-square data by how each image reaches the
model, and a 24-megapixel photo predicted at its own size.

    python benchmarks/geometry.py --root /tmp/geometry --output benchmarks/geometry.json
    SMALL=1 python benchmarks/geometry.py ...     # a dry run: few images, 1 epoch

For each dataset (`shapes` drawn at a non-square size and saved as a folder: 2:1 landscape 96x192, and 3:4
in both orientations, 192x144 and 144x192 mixed in one folder), `unet_edge` is trained at square 64x64 crops
for 20 epochs (500 steps) with the default augmentation (random scale around the covering one, crop,
flip, colour), then its
validation split is scored (python's kerasseg.evaluate.evaluate, labels at their own resolution) as:

- `stretch`: every image squashed to the 64x64 training size (what every stage did before issue 42);
- `cover` (the default): aspect kept, at 0.75, 1, 1.25 and 1.5 times the scale that covers 64x64 (a 2:1
  image at 48x96 .. 96x192), the four runs' probabilities averaged at the image's size;
- `cover-slide`: the same in 64x64 windows every 43x43, logits averaged;
- `native` and `native-slide`: each image at its own size, whole and in 64x64 windows;
- `cover@F`: aspect kept at one scale, F times the covering one (F from 0.75 to 1.5: which single scale is
  best, and is the average within a point of it?);

and the val mIoU `fit` recorded for its best epoch. Then `predict` of a 4000x6000 photo at its own size
(`--image-size native`), each as its own process: peak resident memory (ru_maxrss) and seconds, run whole
(`--mode whole`, as before issue 42) and in windows (`--mode auto`, the default).
"""

import argparse
import json
import os
import resource
import subprocess
import sys
import time

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, ROOT)
SMALL = bool(os.environ.get("SMALL"))


def write_folder(root, sizes, counts=None):
    """A `folder:` dataset of `shapes` examples drawn at `sizes` (cycled), with train / val / test lists."""
    import numpy as np
    from PIL import Image

    from kerasseg.data import shapes

    counts = counts or ({"train": 48, "val": 16, "test": 8} if SMALL else {"train": 400, "val": 100, "test": 50})
    for sub in ("images", "masks", "splits"):
        os.makedirs(os.path.join(root, sub), exist_ok=True)
    with open(os.path.join(root, "labels.txt"), "w") as f:
        f.write("\n".join(shapes.CLASS_NAMES) + "\n")
    for split, count in counts.items():
        stems = []
        for i in range(count):
            height, width = sizes[i % len(sizes)]
            image, mask = shapes.sample(0, split, i, height, width)
            stem = f"{split} {i:04d}"
            Image.fromarray(image).save(os.path.join(root, "images", f"{stem}.jpg"), quality=92)
            Image.fromarray(mask.astype(np.uint8)).save(os.path.join(root, "masks", f"{stem}.png"))
            stems.append(stem)
        with open(os.path.join(root, "splits", f"{split}.txt"), "w") as f:
            f.write("\n".join(stems) + "\n")
    return root


EVALUATIONS = {  # name: evaluate()'s geometry arguments
    "stretch": {"resize": "stretch"},
    "cover": {},
    "cover-slide": {"mode": "slide"},
    "native": {"image_size": "native", "mode": "whole"},
    "native-slide": {"image_size": "native", "mode": "slide"},
    **{f"cover@{f:g}": {"scale": f} for f in (0.75, 1.0, 1.125, 1.25, 1.5)},
}


def geometry_rows(name, sizes, root, epochs):
    from kerasseg import evaluate
    from kerasseg.train import TrainConfig, train

    folder = write_folder(os.path.join(root, name), sizes)
    run_dir = os.path.join(root, f"{name}-run")
    started = time.time()
    run = train(TrainConfig(run_dir, model="unet_edge", dataset=f"folder:{folder}", image_size=64, epochs=epochs,
                            batch_size=16, seed=0, overwrite=True))
    row = {"dataset": name, "sizes": [list(s) for s in sizes], "epochs": epochs, "model": "unet_edge", "crop": [64, 64],
           "train_seconds": round(time.time() - started, 1), "fit_val_miou": round(run.metrics["miou"], 4)}
    for label, arguments in EVALUATIONS.items():
        started = time.time()
        scores = evaluate.evaluate(run.model_path, f"folder:{folder}", "val", **arguments)
        row[label] = round(scores.miou, 4)
        row[f"{label}_seconds"] = round(time.time() - started, 1)
        print(f"{name} {label}: mIoU {scores.miou:.4f}", flush=True)
    return row, run.model_path


def predict_row(model_path, root, mode):
    """`python -m kerasseg.predict MODEL photo.jpg --image-size native --mode MODE` in its own process: its
    peak memory (GiB), seconds and exit status."""
    from PIL import Image

    from kerasseg.data import shapes

    photo = os.path.join(root, "photo 4000x6000.jpg")
    if not os.path.exists(photo):
        image, _ = shapes.sample(0, "test", 0, 96, 144)
        Image.fromarray(image).resize((6000, 4000), Image.BILINEAR).save(photo, quality=90)
        del image
    started = time.time()
    code = ("import resource, sys, runpy; sys.argv = ['predict'] + sys.argv[1:]\n"
            "try:\n    runpy.run_module('kerasseg.predict', run_name='__main__')\n"
            "finally:\n    print('PEAK', resource.getrusage(resource.RUSAGE_SELF).ru_maxrss, file=sys.stderr)\n")
    result = subprocess.run([sys.executable, "-c", code, model_path, photo, "--image-size", "native", "--mode", mode,
                             "--output", os.path.join(root, f"predicted-{mode}")],
                            capture_output=True, text=True, cwd=ROOT, env={**os.environ, "PYTHONPATH": ROOT})
    peak = resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss  # (an aborted process prints no PEAK line)
    if "PEAK" in result.stderr:
        peak = int(result.stderr.rsplit("PEAK", 1)[1].split()[0])
    said = [line for line in result.stderr.splitlines() if line and line[:1] not in "IWE" and "PEAK" not in line]
    print(result.stdout[-500:], "\n".join(said[-5:]))
    return {"photo": "4000x6000", "mode": mode, "exit_status": result.returncode,
            "seconds": round(time.time() - started, 1), "peak_gib": round(peak / 2**20, 2),
            "last_words": said[-1] if result.returncode else None}


def main():
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--root", default="/tmp/geometry")
    parser.add_argument("--epochs", type=int, default=1 if SMALL else 20)
    parser.add_argument("--output", default=os.path.join(ROOT, "benchmarks", "geometry.json"))
    args = parser.parse_args()
    os.makedirs(args.root, exist_ok=True)
    rows = []
    for name, sizes in (("2:1", [(96, 192)]), ("3:4 mixed", [(192, 144), (144, 192)])):
        row, model_path = geometry_rows(name, sizes, args.root, args.epochs)
        rows.append(row)
        if name == "2:1":  # (whole first: the run that may need the most memory; each its own process)
            rows += [predict_row(model_path, args.root, mode) for mode in ("whole", "auto")]
        with open(args.output + ".tmp", "w") as f:
            json.dump(rows, f, indent=1)
        os.replace(args.output + ".tmp", args.output)
    print(json.dumps(rows, indent=1))


if __name__ == "__main__":
    main()
