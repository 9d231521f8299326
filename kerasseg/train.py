"""Train a registered segmenter with model.fit: `python -m kerasseg.train`.

    python -m kerasseg.train --model deeplab_v3_plus --backbone mobilenet_v2 --dataset folder:my_data \\
        --image-size 256 --epochs 50 --loss ce+dice --output runs/mine
    python -m kerasseg.train --output runs/mine --resume      # after an interruption

Writes, into --output DIR:
    model.keras    the best model so far on validation mIoU (pixels in [0, 255] in, float32 logits out)
    metrics.json   its validation mIoU, per-class IoU and pixel accuracy, and the run's settings
    history.csv    loss and mIoU per epoch (train and validation)
    curves.png     loss and mIoU per epoch
    predictions.png  a few validation images: image | ground truth | prediction
    logs/          TensorBoard (tensorboard --logdir DIR/logs)
    run.json, backup/  the arguments and the last completed epoch's state, for --resume

Every epoch ends with a checkpoint: a run killed at any point (even SIGKILL)
continues with --resume from its last completed epoch, to the same final
epoch count. A loss that becomes NaN or infinite stops training, naming the
epoch and step, and keeps the last good model.keras.
"""

import csv
import io
import json
import math
import os
import shutil
import sys
import time

import numpy as np

from kerasseg import cli, distribute

OPTIMIZERS = ("adam", "adamw", "sgd")
SCHEDULES = ("cosine", "poly")


def parse_args(argv=None):
    from kerasseg import data, losses, models

    def model_name(name):
        models.get_builder(name)
        if models.model_task(name) != "segmentation":
            raise ValueError(f"{name!r} is a classifier; accepted: {', '.join(models.list_models('segmentation'))}")
        return name

    def class_weights(text):
        try:
            return [float(w) for w in text.split(",")]
        except ValueError:
            raise ValueError(f"expected comma-separated numbers, one per class, e.g. 1,5,5. Received: {text!r}") from None

    def loss_name(text):
        losses.parse_loss(text)
        return text

    parser = cli.ArgumentParser(prog="python -m kerasseg.train", description=__doc__,
                                formatter_class=cli.argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--model", default="unet_edge", type=cli.arg_type(model_name),
                        help="registered segmenter (default: unet_edge)")
    parser.add_argument("--backbone", help="registered classifier as the encoder, for segmenters that take one")
    parser.add_argument("--backbone-weights", help="backbone weights: imagenet or a .weights.h5 path")
    parser.add_argument("--model-args", default={}, type=cli.arg_type(_model_args),
                        help='more builder arguments as JSON, e.g. \'{"base_filters": 8}\'')
    parser.add_argument("--dataset", default="shapes", type=cli.arg_type(data.check_spec),
                        help=f"dataset spec; accepted: {', '.join(data.ACCEPTED_SPECS)} (default: shapes)")
    parser.add_argument("--data-dir", help="where TFDS data was downloaded (tfds: specs)")
    parser.add_argument("--classes", type=cli.arg_type(cli.positive_int),
                        help="number of classes (checked against labels.txt; needed by some datasets)")
    parser.add_argument("--image-size", default=(64, 64), type=cli.arg_type(cli.image_size),
                        help="training crop size, N or HxW (default: 64)")
    parser.add_argument("--batch-size", default=16, type=cli.arg_type(cli.positive_int))
    parser.add_argument("--epochs", default=10, type=cli.arg_type(cli.positive_int))
    parser.add_argument("--train-samples", type=cli.arg_type(cli.positive_int),
                        help="use the first N training samples (default: the whole split)")
    parser.add_argument("--augment", choices=("full", "flip", "none"), default="full",
                        help="full: random scale, crop/pad, flip and colour jitter; flip: flips only")
    parser.add_argument("--lr", default=2e-3, type=float, help="peak learning rate (default: 2e-3)")
    parser.add_argument("--optimizer", choices=OPTIMIZERS, default="adam")
    parser.add_argument("--schedule", choices=SCHEDULES, default="cosine",
                        help="cosine decay, or DeepLab's polynomial (power 0.9) decay")
    parser.add_argument("--loss", default="ce", type=cli.arg_type(loss_name),
                        help="ce, dice, focal, or a weighted sum such as ce+dice (default: ce)")
    parser.add_argument("--class-weights", type=cli.arg_type(class_weights), help="per-class loss weights, e.g. 1,5,5")
    parser.add_argument("--patience", type=cli.arg_type(cli.positive_int),
                        help="stop after this many epochs without a better validation mIoU")
    parser.add_argument("--mixed-precision", action="store_true",
                        help="mixed_float16 on a GPU, mixed_bfloat16 elsewhere; logits and loss stay float32")
    parser.add_argument("--strategy", choices=distribute.STRATEGIES, default="none",
                        help="mirrored: the local devices (TensorFlow); data-parallel: every local JAX device; "
                             "multiworker: several machines (TensorFlow: MultiWorkerMirroredStrategy from TF_CONFIG; "
                             "JAX: keras.distribution, KERAS_DISTRIBUTION_* variables)")
    parser.add_argument("--logical-cpus", type=cli.arg_type(cli.positive_int),
                        help="split the CPU into N logical devices (try --strategy mirrored without GPUs)")
    parser.add_argument("--seed", default=0, type=int, help="seed for initialisation and shuffling")
    parser.add_argument("--output", required=True, help="directory for model.keras, metrics.json, history.csv, ...")
    parser.add_argument("--resume", action="store_true",
                        help="continue the interrupted run in --output (its own arguments are used)")
    args = parser.parse_args(argv)
    if args.resume:
        args = _resumed_args(args)
    return args


def _model_args(text):
    try:
        value = json.loads(text)
    except json.JSONDecodeError as error:
        raise ValueError(f"not valid JSON ({error.msg}): {text!r}") from None
    if not isinstance(value, dict):
        raise ValueError(f"expected a JSON object of builder arguments, got {text!r}")
    return value


def _resumed_args(args):
    path = os.path.join(args.output, "run.json")
    if not os.path.isfile(path):
        raise cli.UsageError(f"nothing to resume in {args.output}: no run.json (start the run without --resume)")
    with open(path) as f:
        saved = json.load(f)
    saved["image_size"] = tuple(saved["image_size"])
    return cli.argparse.Namespace(**{**saved, "output": args.output, "resume": True})


def evaluate_split(model, split, batch_size=16):
    """Scores of `model` on a whole split, from one accumulated confusion matrix."""
    return evaluate_pairs(model, zip(split.images, split.masks), split.class_names, batch_size)


def evaluate_pairs(model, pairs, class_names, batch_size=16):
    """Scores of `model` on (image, mask) pairs of any sizes, from one accumulated confusion matrix.

    Pairs of the same size are predicted together, `batch_size` at a time.
    """
    from kerasseg import metrics

    by_size = {}
    for image, mask in pairs:
        by_size.setdefault(image.shape[:2], []).append((image, mask))
    cm = 0
    for group in by_size.values():
        for start in range(0, len(group), batch_size):
            images, masks = zip(*group[start : start + batch_size])
            logits = model.predict_on_batch(np.stack(images).astype("float32"))
            cm = cm + metrics.confusion_matrix(np.stack(masks), np.asarray(logits).argmax(-1), len(class_names))
    return metrics.scores(cm, class_names)


def _mixed_precision():
    import keras

    gpu = False
    if keras.backend.backend() == "tensorflow":
        import tensorflow as tf

        gpu = bool(tf.config.list_physical_devices("GPU"))
    elif keras.backend.backend() == "jax":
        import jax

        gpu = any(d.platform == "gpu" for d in jax.devices())
    policy = "mixed_float16" if gpu else "mixed_bfloat16"
    keras.mixed_precision.set_global_policy(policy)
    return policy


def _build(args, num_classes):
    from kerasseg import models

    kwargs = dict(args.model_args)
    if args.backbone:
        kwargs["backbone"] = args.backbone
    if args.backbone_weights:
        kwargs["backbone_weights"] = args.backbone_weights
    try:
        return models.create_model(args.model, classes=num_classes, **kwargs)
    except (TypeError, ValueError) as error:
        raise cli.UsageError(f"cannot build {args.model} with --model-args {kwargs}: {error}") from None


def _optimizer(keras, args, steps):
    if args.schedule == "poly":
        schedule = keras.optimizers.schedules.PolynomialDecay(args.lr, steps, args.lr * 0.01, power=0.9)
    else:
        schedule = keras.optimizers.schedules.CosineDecay(args.lr, decay_steps=steps, alpha=0.01)
    if args.optimizer == "sgd":
        return keras.optimizers.SGD(schedule, momentum=0.9)
    if args.optimizer == "adamw":
        return keras.optimizers.AdamW(schedule, weight_decay=1e-4)
    return keras.optimizers.Adam(schedule)


class _Tracker:
    """Keras callbacks for the files of a run: the best model, history.csv, curves, a NaN stop."""

    def __init__(self, keras, output, resumed_rows, best):
        tracker = self

        class Backup(keras.callbacks.BackupAndRestore):
            def on_epoch_end(self, epoch, logs=None):
                if not tracker.nonfinite:  # never back up weights that have become NaN
                    super().on_epoch_end(epoch, logs)

        class Callback(keras.callbacks.Callback):
            def on_train_batch_end(self, batch, logs=None):
                loss = (logs or {}).get("loss")
                if loss is not None and not math.isfinite(float(loss)):
                    tracker.nonfinite = (self.epoch + 1, batch + 1, float(loss))
                    self.model.stop_training = True

            def on_epoch_begin(self, epoch, logs=None):
                self.epoch = epoch

            def on_epoch_end(self, epoch, logs=None):
                if tracker.nonfinite:
                    return
                row = {"epoch": epoch, **{k: float(v) for k, v in (logs or {}).items()}}
                tracker.rows = [r for r in tracker.rows if int(r["epoch"]) < epoch] + [row]
                if row.get("val_miou", -1) > tracker.best:
                    tracker.best = row["val_miou"]
                    cli.atomic_write(os.path.join(output, "model.keras"), self.model.save)
                tracker.write()

        self.callback = Callback()
        self.backup = Backup(os.path.join(output, "backup"), delete_checkpoint=False)
        self.output = output
        self.rows, self.best, self.nonfinite = resumed_rows, best, None

    def write(self):
        from kerasseg import plots

        buffer = io.StringIO()
        fields = list(dict.fromkeys(k for row in self.rows for k in row))
        writer = csv.DictWriter(buffer, fieldnames=fields)
        writer.writeheader()
        writer.writerows(self.rows)
        cli.write_text_atomic(os.path.join(self.output, "history.csv"), buffer.getvalue())
        plots.save_curves(self.rows, os.path.join(self.output, "curves.png"))


def _read_history(output):
    path = os.path.join(output, "history.csv")
    if not os.path.isfile(path):
        return [], -1.0
    with open(path) as f:
        rows = [{k: float(v) for k, v in row.items() if v != ""} for row in csv.DictReader(f)]
    best = max((r.get("val_miou", -1.0) for r in rows), default=-1.0)
    return rows, best


def train(args):
    strategy, replicas, worker = distribute.strategy_for(args)
    import keras

    from kerasseg import data, losses, metrics
    from kerasseg.data.pipeline import make_dataset

    keras.utils.set_random_seed(args.seed)
    policy = _mixed_precision() if args.mixed_precision else "float32"
    try:
        train_pairs, names = data.load_examples(args.dataset, "train", args.image_size, args.train_samples,
                                                args.data_dir, args.classes, args.seed)
        val_split = data.load_split(args.dataset, "val", args.image_size, data_dir=args.data_dir, classes=args.classes)
    except data.DatasetError as error:
        raise cli.UsageError(str(error)) from None
    print(f"{args.dataset}: {len(train_pairs)} training and {len(val_split)} validation images, "
          f"{len(names)} classes ({', '.join(names)}); training crops {args.image_size[0]}x{args.image_size[1]}")

    steps = -(-len(train_pairs) // args.batch_size) * args.epochs
    with distribute.scope(strategy):
        model = _build(args, len(names))
        model.compile(optimizer=_optimizer(keras, args, steps),
                      loss=losses.SegmentationLoss(args.loss, args.class_weights),
                      metrics=[metrics.mean_iou_metric(len(names))])
    print(f"{model.name}: {model.count_params():,} parameters, {policy}, strategy {args.strategy} "
          f"({replicas} replica{'s' if replicas > 1 else ''})")

    output = os.path.abspath(args.output)
    if worker:  # worker 0 of a multi-worker run writes the results; each other keeps its own files
        output = os.path.join(output, f"worker-{worker}")
    cli.ensure_output_dir(os.path.join(output, "run.json"))
    backup = os.path.join(output, "backup")
    if not args.resume:  # a fresh run: an older run's backup must not be restored
        shutil.rmtree(backup, ignore_errors=True)
        saved = {k: v for k, v in vars(args).items() if k not in ("output", "resume")}
        cli.write_text_atomic(os.path.join(output, "run.json"), json.dumps(saved, indent=2) + "\n")
    elif not os.path.isdir(backup) and not os.path.isfile(os.path.join(output, "history.csv")):
        raise cli.UsageError(f"nothing to resume in {args.output}: no completed epoch was saved")

    rows, best = _read_history(output) if args.resume else ([], -1.0)
    tracker = _Tracker(keras, output, rows, best)
    callbacks = [tracker.backup, tracker.callback,
                 keras.callbacks.TensorBoard(os.path.join(output, "logs"))]
    if args.patience:
        callbacks.append(keras.callbacks.EarlyStopping("val_miou", mode="max", patience=args.patience))
    started = time.time()
    train_data = make_dataset(train_pairs, args.image_size, args.batch_size, shuffle=True, seed=args.seed,
                              augment=None if args.augment == "none" else args.augment)
    val_data = make_dataset(val_split, args.image_size, args.batch_size)
    steps = {}
    if args.strategy == "multiworker":
        # every process must run the same number of steps (each holds a shard of every batch): whole
        # batches only, from repeated datasets
        train_data, val_data = train_data.repeat(), val_data.repeat()
        steps = {"steps_per_epoch": max(1, len(train_pairs) // args.batch_size),
                 "validation_steps": max(1, len(val_split) // args.batch_size)}
    with distribute.fit_scope(model, strategy):
        model.fit(
            train_data, validation_data=val_data, epochs=args.epochs, callbacks=callbacks, **steps,
            shuffle=False,  # the tf.data pipeline shuffles, seeded
            verbose=1 if sys.stdout.isatty() else 2,
        )
    seconds = time.time() - started
    if tracker.nonfinite:
        epoch, step, value = tracker.nonfinite
        kept = "the last good model.keras is kept" if os.path.isfile(os.path.join(output, "model.keras")) else \
            "no epoch had completed, so there is no model.keras"
        raise TrainingDiverged(f"the loss became {value} at epoch {epoch}, step {step}: training stopped; {kept}. "
                               "Try a lower --lr (or --class-weights closer to 1)")
    if worker:
        return {}
    if args.strategy == "multiworker" and keras.backend.backend() == "jax":  # the final evaluation runs here alone
        keras.distribution.set_distribution(None)
    best_model = keras.saving.load_model(os.path.join(output, "model.keras"))
    scores = evaluate_split(best_model, val_split)
    best_epoch = max(tracker.rows, key=lambda r: r.get("val_miou", -1))["epoch"] if tracker.rows else None
    report = {
        "model": args.model, "model_args": args.model_args, "backbone": args.backbone, "dataset": args.dataset,
        "split": "val", "image_size": list(args.image_size), "classes": list(names), **scores,
        "best_epoch": None if best_epoch is None else int(best_epoch) + 1, "epochs": args.epochs,
        "epochs_run": len(tracker.rows), "batch_size": args.batch_size, "train_samples": len(train_pairs),
        "loss": args.loss, "optimizer": args.optimizer, "schedule": args.schedule, "lr": args.lr,
        "mixed_precision": policy, "strategy": args.strategy, "replicas": replicas, "seed": args.seed, "train_seconds": round(seconds, 1),
    }
    cli.write_text_atomic(os.path.join(output, "metrics.json"), json.dumps(report, indent=2) + "\n")
    _predictions_png(best_model, val_split, os.path.join(output, "predictions.png"))
    per_class = ", ".join(f"{k} {v:.3f}" for k, v in scores["per_class_iou"].items() if v is not None)
    print(f"validation mIoU {scores['miou']:.4f} ({per_class}); pixel accuracy {scores['pixel_accuracy']:.4f}")
    print(f"wrote {output}/model.keras (epoch {report['best_epoch']}), metrics.json, history.csv, curves.png, "
          "predictions.png, logs/")
    return report


def _predictions_png(model, split, path, count=4):
    from kerasseg import plots

    images = split.images[:count]
    predicted = model.predict_on_batch(images.astype("float32")).argmax(-1)
    rows = [[image, plots.colorize(mask), plots.colorize(p), plots.overlay(image, p)]
            for image, mask, p in zip(images, split.masks[:count], predicted)]
    plots.save_grid(rows, ["image", "ground truth", "prediction", "overlay"], path,
                    [f"val #{i}" for i in range(len(rows))])


class TrainingDiverged(Exception):
    """The loss became NaN or infinite."""


def main(argv=None):
    try:
        train(parse_args(argv))
    except TrainingDiverged as error:
        print(f"python -m kerasseg.train: error: {error}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(cli.run(main))
