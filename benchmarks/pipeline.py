"""The training input pipeline's rate (issue 44): images/s per core of the "full" augmentation (random scale,
crop, flip, colour) at 512x512 and 512x1024 crops from 1024x2048 photos, JPEG and PNG, on 1 and 2 cores,
with and without a disk cache, this checkout against another (the code before crop-first) in one run.

    git worktree add /tmp/old 0d16ecf
    python benchmarks/pipeline.py --root /tmp/pipeline --before /tmp/old --output benchmarks/pipeline.json
    SMALL=1 python benchmarks/pipeline.py ...     # a dry run: 16 images, one setting of each

The photos are data_scale.py's Cityscapes-shaped examples (1024x2048, 19 classes, 600 kB JPEG at quality 90),
the same pictures also saved as PNG. Each measurement is its own process pinned to its cores (taskset), on
the code at its path: the pipeline alone, no model, batches of 8 drawn as fast as it gives them; images/s
after the first batch over --images images, the seconds to the first batch, the peak resident memory. With
a cache, one epoch fills it and the next is measured. The cores needed to feed keras-hub's DeepLabV3+ on one
H100 (444 images/s at 512x512) are written beside each 2-core row: 444 / (its images/s per core).
"""

import argparse
import json
import os
import shutil
import subprocess
import sys
import time

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, os.path.join(ROOT, "benchmarks"))
from data_scale import CLASSES, _example, _save, make_pool, pipeline_rate  # noqa: E402

H100_RATE = 444  # keras-hub DeepLabV3+ training images/s at 512 px, batch 16, one H100 (its published figure)


def _png_part(args):
    from PIL import Image

    folder, indices = args
    for i in indices:
        path = os.path.join(folder, "images", f"frame_{i:05d}.png")
        if not os.path.exists(path):
            Image.fromarray(_example(i)[0]).save(path + ".tmp", format="PNG")
            os.replace(path + ".tmp", path)


def make_folders(root, count):
    """folder:ROOT/jpeg and folder:ROOT/png: the same `count` photos and masks, JPEG and PNG."""
    from concurrent.futures import ProcessPoolExecutor

    make_pool(root, count)
    folders = {}
    for kind in ("jpeg", "png"):
        folder = folders[kind] = os.path.join(root, kind)
        for sub in ("images", "masks"):
            os.makedirs(os.path.join(folder, sub), exist_ok=True)
        for i in range(count):
            stem = f"frame_{i:05d}"
            mask = os.path.join(folder, "masks", f"{stem}.png")
            if not os.path.lexists(mask):
                os.symlink(os.path.join(root, "pool", "masks", f"{stem}.png"), mask)
            if kind == "jpeg" and not os.path.lexists(os.path.join(folder, "images", f"{stem}.jpg")):
                os.symlink(os.path.join(root, "pool", "images", f"{stem}.jpg"),
                           os.path.join(folder, "images", f"{stem}.jpg"))
        with open(os.path.join(folder, "labels.txt"), "w") as f:
            f.write("\n".join(CLASSES) + "\n")
    workers = os.cpu_count() or 2
    with ProcessPoolExecutor(workers) as executor:
        list(executor.map(_png_part, [(folders["png"], range(w, count, workers)) for w in range(workers)]))
    return folders


def child(spec):
    """One measurement, in its own process: prints its row as JSON on the last line."""
    started = time.time()
    import resource

    from kerasseg import data
    from kerasseg.data import pipeline

    examples, names = data.list_examples(f"folder:{spec['folder']}", "train")
    examples = examples[: spec["images"]]
    options = {}
    try:
        from kerasseg.data.scan import scan

        if "scan" in pipeline.make_dataset.__code__.co_varnames:  # (crop first: the code that has it)
            options["scan"] = scan(examples, len(names), progress=False)
    except ImportError:
        pass
    reader = pipeline.ExampleReader(examples, len(names))
    if spec["cache"]:
        shutil.rmtree(spec["cache"], ignore_errors=True)
        reader.cache, _ = pipeline.open_cache(spec["cache"], examples, 0)
    dataset = pipeline.make_dataset(reader, tuple(spec["crop"]), 8, shuffle=True, augment="full", **options)
    row = {}
    if spec["cache"]:  # one epoch fills it
        for _ in dataset:
            pass
        row["fill_s"] = round(time.time() - started, 2)
    row.update(pipeline_rate(dataset, started))
    row["peak_rss_gib"] = round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 2**20, 3)
    print(json.dumps(row))


def measure(code, cores, spec):
    env = {**os.environ, "PYTHONPATH": code, "TF_CPP_MIN_LOG_LEVEL": "2", "PYTHONUNBUFFERED": "1"}
    command = ["taskset", "-c", ",".join(map(str, range(cores))), sys.executable, os.path.abspath(__file__),
               "--child", json.dumps(spec)]
    result = subprocess.run(command, env=env, cwd=code, capture_output=True, text=True)
    if result.returncode:
        raise SystemExit(f"measurement {spec} on {code} failed:\n{result.stderr[-3000:]}")
    return json.loads(result.stdout.strip().splitlines()[-1])


def main():
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--root", help="where the generated folders go (required)")
    parser.add_argument("--before", help="a checkout of the code to compare with (git worktree; required)")
    parser.add_argument("--images", type=int, default=160, help="images per measurement")
    parser.add_argument("--output", default=os.path.join(ROOT, "benchmarks", "pipeline.json"))
    parser.add_argument("--child", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child:
        return child(json.loads(args.child))
    if not (args.root and args.before):
        parser.error("--root and --before are required")
    small = bool(os.environ.get("SMALL"))
    images = 16 if small else args.images
    os.makedirs(args.root, exist_ok=True)
    folders = make_folders(args.root, images)
    codes = {"before": os.path.abspath(args.before), "after": ROOT}
    settings = [(fmt, crop, cores, cache) for fmt in ("jpeg", "png") for crop in ((512, 512), (512, 1024))
                for cores in (1, 2) for cache in (False,)]
    settings += [("jpeg", (512, 512), 2, True), ("jpeg", (512, 1024), 2, True)]
    if small:
        settings = settings[:1] + settings[-1:]
    rows = []
    for fmt, crop, cores, cache in settings:
        for label, code in codes.items():
            spec = {"folder": folders[fmt], "crop": list(crop), "images": images,
                    "cache": os.path.join(args.root, f"cache-{label}") if cache else None}
            row = {"code": label, "format": fmt, "crop": f"{crop[0]}x{crop[1]}", "cores": cores,
                   "cache": "disk" if cache else "none", **measure(code, cores, spec)}
            row["per_core"] = round(row["images_per_s"] / cores, 2)
            row["cores_for_h100"] = round(H100_RATE / row["per_core"], 1)
            print(json.dumps(row), flush=True)
            rows.append(row)
            _save(args.output, rows)
    for row in rows:
        if row["code"] == "after":
            before = next(r for r in rows if r["code"] == "before" and
                          all(r[k] == row[k] for k in ("format", "crop", "cores", "cache")))
            row["speedup"] = round(row["images_per_s"] / before["images_per_s"], 2)
    _save(args.output, rows)
    for row in rows:
        print(row)


if __name__ == "__main__":
    main()
