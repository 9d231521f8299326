"""Evaluate a trained segmenter on a dataset split: `python -m kerasseg.evaluate MODEL.keras --dataset SPEC`.

Prints and writes (--output, default MODEL.eval.json beside the model) the
mIoU, per-class IoU and pixel accuracy, from one confusion matrix summed
over the whole split (ignore-label pixels excluded). Images are resized to
--image-size (default: the training size in metrics.json beside the model).
"""

import json
import os
import sys

from kerasseg import cli


def main(argv=None):
    from kerasseg import data

    parser = cli.ArgumentParser(prog="python -m kerasseg.evaluate", description=__doc__,
                                formatter_class=cli.argparse.RawDescriptionHelpFormatter)
    parser.add_argument("model", help="the trained model (.keras)")
    parser.add_argument("--dataset", default="shapes", type=cli.arg_type(data.check_spec),
                        help=f"dataset spec; accepted: {', '.join(data.ACCEPTED_SPECS)}")
    parser.add_argument("--split", choices=("train", "val", "test"), default="val")
    parser.add_argument("--data-dir", help="where TFDS data was downloaded (tfds: specs)")
    parser.add_argument("--image-size", type=cli.arg_type(cli.image_size))
    parser.add_argument("--batch-size", default=16, type=cli.arg_type(cli.positive_int))
    parser.add_argument("--output", help="where to write the scores (default: MODEL.eval.json)")
    args = parser.parse_args(argv)

    from kerasseg.train import evaluate_split

    model = cli.load_keras_model(args.model)
    size = cli.resolve_image_size(model, args.model, args.image_size)
    classes = model.outputs[0].shape[-1]
    try:
        split = data.load_split(args.dataset, args.split, size, data_dir=args.data_dir, classes=classes)
    except data.DatasetError as error:
        raise cli.UsageError(str(error)) from None
    scores = evaluate_split(model, split, args.batch_size)
    report = {"model": args.model, "dataset": args.dataset, "split": args.split, "samples": len(split),
              "image_size": list(size), **scores}
    output = args.output or os.path.splitext(args.model)[0] + ".eval.json"
    cli.ensure_output_dir(output)
    cli.write_text_atomic(output, json.dumps(report, indent=2) + "\n")
    print(f"{args.dataset} {args.split}: {len(split)} images at {size[0]}x{size[1]}")
    width = max(len(n) for n in split.class_names)
    for name, iou in scores["per_class_iou"].items():
        print(f"  {name:<{width}}  IoU {'-' if iou is None else f'{iou:.4f}'}")
    print(f"mIoU {scores['miou']:.4f}, pixel accuracy {scores['pixel_accuracy']:.4f}; wrote {output}")
    return 0


if __name__ == "__main__":
    sys.exit(cli.run(main))
