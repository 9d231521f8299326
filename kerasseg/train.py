"""Train a registered segmenter with model.fit: `python -m kerasseg.train`.

Writes, into --output DIR:
    model.keras    the trained model (pixels in [0, 255] in, float32 logits out)
    metrics.json   validation mIoU, per-class IoU and pixel accuracy
    history.csv    loss and mIoU per epoch (train and validation)
"""

import json
import os
import sys
import time

from kerasseg import cli


def parse_args(argv=None):
    from kerasseg import data, models

    def model_name(name):
        models.get_builder(name)
        if models.model_task(name) != "segmentation":
            raise ValueError(f"{name!r} is a classifier; accepted: {', '.join(models.list_models('segmentation'))}")
        return name

    parser = cli.ArgumentParser(prog="python -m kerasseg.train", description=__doc__,
                                formatter_class=cli.argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--model", default="unet_edge", type=cli.arg_type(model_name),
                        help="registered segmenter (default: unet_edge)")
    parser.add_argument("--dataset", default="shapes", type=cli.arg_type(data.check_spec),
                        help=f"dataset spec; accepted: {', '.join(data.ACCEPTED_SPECS)} (default: shapes)")
    parser.add_argument("--model-args", default={}, type=cli.arg_type(_model_args),
                        help='more builder arguments as JSON, e.g. \'{"base_filters": 8}\'')
    parser.add_argument("--image-size", default=(64, 64), type=cli.arg_type(cli.image_size),
                        help="training size, N or HxW (default: 64)")
    parser.add_argument("--batch-size", default=16, type=cli.arg_type(cli.positive_int))
    parser.add_argument("--epochs", default=10, type=cli.arg_type(cli.positive_int))
    parser.add_argument("--train-samples", default=None, type=cli.arg_type(cli.positive_int),
                        help="use the first N training samples (default: the whole split)")
    parser.add_argument("--lr", default=2e-3, type=float, help="peak learning rate, cosine-decayed (default: 2e-3)")
    parser.add_argument("--seed", default=0, type=int, help="seed for initialisation and shuffling")
    parser.add_argument("--output", required=True, help="directory for model.keras, metrics.json, history.csv")
    return parser.parse_args(argv)


def _model_args(text):
    import json

    try:
        value = json.loads(text)
    except json.JSONDecodeError as error:
        raise ValueError(f"not valid JSON ({error.msg}): {text!r}") from None
    if not isinstance(value, dict):
        raise ValueError(f"expected a JSON object of builder arguments, got {text!r}")
    return value


def evaluate_split(model, split, batch_size=16):
    """Scores of `model` on a whole split, from one accumulated confusion matrix."""
    from kerasseg import metrics

    cm = 0
    for start in range(0, len(split), batch_size):
        logits = model.predict_on_batch(split.images[start : start + batch_size].astype("float32"))
        cm = cm + metrics.confusion_matrix(split.masks[start : start + batch_size], logits.argmax(-1),
                                           split.num_classes)
    return metrics.scores(cm, split.class_names)


def train(args):
    import keras

    from kerasseg import data, losses, metrics, models
    from kerasseg.data.pipeline import make_dataset

    keras.utils.set_random_seed(args.seed)
    train_split = data.load_split(args.dataset, "train", args.image_size, count=args.train_samples)
    val_split = data.load_split(args.dataset, "val", args.image_size)
    print(f"{args.dataset}: {len(train_split)} training and {len(val_split)} validation images "
          f"of {args.image_size[0]}x{args.image_size[1]}, {train_split.num_classes} classes")

    try:
        model = models.create_model(args.model, classes=train_split.num_classes, **args.model_args)
    except (TypeError, ValueError) as error:
        raise cli.UsageError(f"cannot build {args.model} with --model-args {args.model_args}: {error}") from None
    output = cli.ensure_output_dir(os.path.join(args.output, "model.keras"))
    steps = -(-len(train_split) // args.batch_size) * args.epochs
    schedule = keras.optimizers.schedules.CosineDecay(args.lr, decay_steps=steps, alpha=0.01)
    model.compile(optimizer=keras.optimizers.Adam(schedule), loss=losses.cross_entropy(),
                  metrics=[metrics.mean_iou_metric(train_split.num_classes)])
    print(f"{model.name}: {model.count_params():,} parameters")

    history_path = os.path.join(output, "history.csv")
    started = time.time()
    model.fit(
        make_dataset(train_split, args.batch_size, shuffle=True, seed=args.seed, augment=True),
        validation_data=make_dataset(val_split, args.batch_size),
        epochs=args.epochs,
        callbacks=[keras.callbacks.CSVLogger(history_path)],
        shuffle=False,  # the tf.data pipeline shuffles, seeded
        verbose=1 if sys.stdout.isatty() else 2,
    )
    seconds = time.time() - started

    scores = evaluate_split(model, val_split)
    cli.atomic_write(os.path.join(output, "model.keras"), model.save)
    report = {
        "model": args.model,
        "model_args": args.model_args,
        "dataset": args.dataset,
        "split": "val",
        "image_size": list(args.image_size),
        "classes": list(train_split.class_names),
        **scores,
        "epochs": args.epochs,
        "batch_size": args.batch_size,
        "train_samples": len(train_split),
        "seed": args.seed,
        "train_seconds": round(seconds, 1),
    }
    cli.write_text_atomic(os.path.join(output, "metrics.json"), json.dumps(report, indent=2) + "\n")
    per_class = ", ".join(f"{k} {v:.3f}" for k, v in scores["per_class_iou"].items() if v is not None)
    print(f"validation mIoU {scores['miou']:.4f} ({per_class}); pixel accuracy {scores['pixel_accuracy']:.4f}")
    print(f"wrote {output}/model.keras, metrics.json, history.csv")
    return report


def main(argv=None):
    train(parse_args(argv))
    return 0


if __name__ == "__main__":
    sys.exit(cli.run(main))
