"""Training on a dataset of a real size: peak memory, time to first step and input-pipeline rate against
the number of images, on a Cityscapes-shaped folder (1024x2048 JPEG photos, 19-class PNG masks).

    python benchmarks/data_scale.py --root /tmp/cityscapes_like --counts 100 400 1600 \\
        --output benchmarks/data_scale.json
    # the same measurements on another checkout of kerasseg (the code before streaming):
    git worktree add /tmp/kerasseg-cb2ce39 cb2ce39
    python benchmarks/data_scale.py --root /tmp/cityscapes_like --counts 100 400 --code /tmp/kerasseg-cb2ce39 \\
        --label before --output benchmarks/data_scale.json

For each count N the folder holds N training and N // 10 validation examples (symlinks into one pool of
generated files, made once; a disk too small for the pool is said so and the counts it cannot hold are
skipped). Each measurement is its own process, on the code at --code:

- `train`: `kerasseg.train.train` of `unet_tiny`, one epoch at --crop (default 256x256) crops, batch 4,
  full augmentation: the process's peak resident memory (ru_maxrss), the seconds from the process's
  start and from train()'s call to the end of the first training step, the scan's seconds (the code that
  has one), the epoch's seconds;
- `pipeline`: the training pipeline alone (decode, random scale, crop to --pipeline-crop, 512x1024 by
  default, flip, colour), no model: images/s after its first batch, over min(N, 256) images.

Rows are added to --output (one JSON list, rewritten through a temporary name after every row) under
--label; a row already there for the same label, kind and count is replaced.
"""

import argparse
import json
import os
import shutil
import subprocess
import sys
import time

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
HEIGHT, WIDTH = 1024, 2048
CLASSES = ("road", "sidewalk", "building", "wall", "fence", "pole", "traffic light", "traffic sign", "vegetation",
           "terrain", "sky", "person", "rider", "car", "truck", "bus", "train", "motorcycle", "bicycle")


def _example(index):
    """One Cityscapes-shaped (image, mask): sky over buildings over road, objects of the other classes, the
    ego car's bonnet void (255); colours by class with texture and noise, so the JPEG is photo-sized."""
    import numpy as np

    rng = np.random.default_rng(index)
    mask = np.zeros((HEIGHT, WIDTH), np.uint8)
    horizon = int(rng.uniform(0.35, 0.55) * HEIGHT)
    mask[:horizon] = 10  # sky
    x = 0
    while x < WIDTH:  # buildings and vegetation along the horizon
        width, top = int(rng.uniform(80, 400)), int(rng.uniform(0.05, 0.9) * horizon)
        mask[top:horizon + 40, x:x + width] = rng.choice([2, 2, 3, 8])
        x += width
    mask[horizon + 40:, :] = 0  # road
    mask[horizon + 40:horizon + 120, : WIDTH // 5] = 1  # sidewalks
    mask[horizon + 40:horizon + 120, -WIDTH // 5:] = 1
    for _ in range(int(rng.integers(8, 25))):  # objects: poles, signs, people, cars, ...
        kind = int(rng.choice([4, 5, 6, 7, 9, 11, 12, 13, 13, 13, 14, 15, 16, 17, 18]))
        h, w = int(rng.uniform(20, 300)), int(rng.uniform(10, 400))
        y, x = int(rng.uniform(horizon - h, HEIGHT - h)), int(rng.uniform(0, WIDTH - w))
        mask[max(y, 0):y + h, x:x + w] = kind
    mask[int(0.9 * HEIGHT):, :] = 255  # the ego car: void
    colours = np.random.default_rng(99).uniform(30, 225, (256, 3))
    image = colours[mask]
    yy, xx = np.mgrid[0:HEIGHT:4, 0:WIDTH:4]
    shade = (np.sin(xx / rng.uniform(20, 60)) * np.cos(yy / rng.uniform(20, 60)) * 18)
    image += np.repeat(np.repeat(shade, 4, 0), 4, 1)[..., None]
    image += rng.normal(0, 4, image.shape)
    return np.clip(image, 0, 255).astype(np.uint8), mask


def _write_pool_part(args):
    from PIL import Image

    pool, indices = args
    for i in indices:
        if os.path.exists(os.path.join(pool, "masks", f"frame_{i:05d}.png")):
            continue
        image, mask = _example(i)
        for sub, name, picture, options in (("images", f"frame_{i:05d}.jpg", image, {"quality": 90}),
                                            ("masks", f"frame_{i:05d}.png", mask, {})):
            tmp = os.path.join(pool, sub, f".tmp-{name}")
            Image.fromarray(picture).save(tmp, format="JPEG" if name.endswith("jpg") else "PNG", **options)
            os.replace(tmp, os.path.join(pool, sub, name))


def make_pool(root, total):
    """`total` generated examples in ROOT/pool (the ones already there kept); returns how many fit on the disk."""
    from concurrent.futures import ProcessPoolExecutor

    pool = os.path.join(root, "pool")
    for sub in ("images", "masks"):
        os.makedirs(os.path.join(pool, sub), exist_ok=True)
    example_bytes = 700_000  # a JPEG (about 600 kB at quality 90) and its mask, with room
    free = shutil.disk_usage(root).free
    have = len(os.listdir(os.path.join(pool, "masks")))
    fits = min(total, have + int(free * 0.8 // example_bytes))
    if fits < total:
        print(f"the disk at {root} has {free / 2**30:.1f} GiB free: room for {fits} of {total} examples")
    started = time.time()
    workers = os.cpu_count() or 2
    with ProcessPoolExecutor(workers) as executor:
        list(executor.map(_write_pool_part, [(pool, range(w, fits, workers)) for w in range(workers)]))
    print(f"pool: {fits} examples in {pool} ({time.time() - started:.0f} s)")
    return fits


def make_folder(root, count):
    """folder:ROOT/nCOUNT: `count` training and count // 10 validation examples, symlinked from the pool."""
    folder = os.path.join(root, f"n{count}")
    val = max(1, count // 10)
    if not os.path.isfile(os.path.join(folder, "splits", "val.txt")):
        shutil.rmtree(folder, ignore_errors=True)
        for sub in ("images", "masks", "splits"):
            os.makedirs(os.path.join(folder, sub))
        stems = [f"frame_{i:05d}" for i in range(count + val)]
        for stem in stems:
            os.symlink(os.path.join(root, "pool", "images", f"{stem}.jpg"),
                       os.path.join(folder, "images", f"{stem}.jpg"))
            os.symlink(os.path.join(root, "pool", "masks", f"{stem}.png"), os.path.join(folder, "masks", f"{stem}.png"))
        with open(os.path.join(folder, "labels.txt"), "w") as f:
            f.write("\n".join(CLASSES) + "\n")
        with open(os.path.join(folder, "splits", "train.txt"), "w") as f:
            f.write("\n".join(stems[:count]) + "\n")
        with open(os.path.join(folder, "splits", "val.txt"), "w") as f:
            f.write("\n".join(stems[count:]) + "\n")
    return folder


# --- the measured process -------------------------------------------------------------------------------

def child(spec):
    """Runs one measurement (in its own process) and prints its row as JSON on the last line."""
    started = time.time()
    import resource

    import keras

    row = {}
    if spec["kind"] == "train":
        from kerasseg.train import TrainConfig, train

        class FirstStep(keras.callbacks.Callback):
            def on_train_begin(self, logs=None):
                row.setdefault("fit_started_s", round(time.time() - started, 2))

            def on_train_batch_end(self, batch, logs=None):
                row.setdefault("first_step_from_start_s", round(time.time() - started, 2))
                row.setdefault("first_step_from_train_s", round(time.time() - row["train_called"], 2))

        fit = keras.Model.fit

        def fit_with_probe(self, *args, callbacks=None, **kwargs):
            return fit(self, *args, callbacks=[*(callbacks or []), FirstStep()], **kwargs)

        keras.Model.fit = fit_with_probe
        options = dict(model="unet_tiny", dataset=f"folder:{spec['folder']}", image_size=tuple(spec["crop"]),
                       batch_size=4, epochs=1, augment="full", overwrite=True)
        if spec.get("cache"):
            options["cache"] = spec["cache"]
        row["train_called"] = time.time()
        run = train(TrainConfig(spec["output"], **options))
        row.pop("train_called")
        metrics = run.metrics
        row.update(epoch_s=metrics["train_seconds"], val_miou=round(metrics["miou"], 4),
                   time_to_first_step=metrics.get("time_to_first_step"), scan_s=metrics.get("scan_seconds"),
                   cache=metrics.get("cache"))
    else:
        from kerasseg import data
        from kerasseg.data.pipeline import make_dataset

        examples, names = data.list_examples(f"folder:{spec['folder']}", "train")
        examples = examples[: spec["images"]]
        try:
            import kerasseg.data.scan  # noqa: F401 (the code that streams has one)
        except ImportError:  # the code before streaming decodes everything first
            examples = data.read_examples(examples, len(names))
        dataset = make_dataset(examples, tuple(spec["crop"]), 4, shuffle=True, augment="full")
        row.update(pipeline_rate(dataset, started))
    row["peak_rss_gib"] = round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 2**20, 3)
    print(json.dumps(row))


def pipeline_rate(dataset, started):
    """{images_per_s after the first batch, first_batch_s from `started`, images} of one pass over `dataset`."""
    import numpy as np

    count, first = 0, None
    for images, _ in dataset:
        np.asarray(images)
        count += len(images)
        if first is None:
            first, after_first = time.time(), count
            first_batch_s = round(first - started, 2)
    return {"first_batch_s": first_batch_s, "images": count,
            "images_per_s": round((count - after_first) / (time.time() - first), 2)}


def measure(code, spec):
    env = {**os.environ, "PYTHONPATH": code, "TF_CPP_MIN_LOG_LEVEL": "2", "PYTHONUNBUFFERED": "1"}
    result = subprocess.run([sys.executable, os.path.abspath(__file__), "--child", json.dumps(spec)], env=env,
                            cwd=code, capture_output=True, text=True)
    if result.returncode:
        raise SystemExit(f"measurement {spec} failed:\n{result.stderr[-3000:]}")
    print("\n".join(result.stdout.strip().splitlines()[-6:-1]))
    return json.loads(result.stdout.strip().splitlines()[-1])


def _save(path, rows):
    tmp = f"{path}.tmp"
    with open(tmp, "w") as f:
        json.dump(rows, f, indent=1)
        f.write("\n")
    os.replace(tmp, path)


def main():
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--root", help="where the generated folders go (required)")
    parser.add_argument("--counts", type=int, nargs="+", default=[100, 400, 1600])
    parser.add_argument("--code", default=ROOT, help="the kerasseg checkout to measure (default: this one)")
    parser.add_argument("--label", default="streaming")
    parser.add_argument("--kinds", nargs="+", default=["train", "pipeline"], choices=["train", "pipeline"])
    parser.add_argument("--crop", type=int, nargs=2, default=[256, 256], help="training crop (height width)")
    parser.add_argument("--pipeline-crop", type=int, nargs=2, default=[512, 1024])
    parser.add_argument("--cache", help="TrainConfig.cache (the code that has it)")
    parser.add_argument("--output", default=os.path.join(ROOT, "benchmarks", "data_scale.json"))
    parser.add_argument("--child", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child:
        return child(json.loads(args.child))
    if not args.root:
        parser.error("--root is required")
    os.makedirs(args.root, exist_ok=True)
    fits = make_pool(args.root, max(args.counts) + max(args.counts) // 10)
    rows = json.load(open(args.output)) if os.path.isfile(args.output) else []
    code = os.path.abspath(args.code)
    commit = subprocess.run(["git", "rev-parse", "--short", "HEAD"], cwd=code, capture_output=True,
                            text=True).stdout.strip()
    for count in args.counts:
        if count + count // 10 > fits:
            print(f"skipped {count}: the disk holds {fits} examples")
            continue
        folder = make_folder(args.root, count)
        for kind in args.kinds:
            spec = {"kind": kind, "folder": folder, "output": os.path.join(args.root, f"run-{args.label}-{count}"),
                    "crop": args.crop if kind == "train" else args.pipeline_crop, "images": min(count, 256),
                    "cache": args.cache}
            row = {"label": args.label, "commit": commit, "kind": kind, "count": count, **measure(code, spec)}
            print(row, flush=True)
            rows = [r for r in rows if (r["label"], r["kind"], r["count"]) != (args.label, kind, count)] + [row]
            _save(args.output, rows)


if __name__ == "__main__":
    main()
