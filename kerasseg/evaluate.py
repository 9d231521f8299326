"""Evaluate a trained segmenter on a dataset split: `python -m kerasseg.evaluate MODEL.keras --dataset SPEC`.

Prints and writes (--output, default MODEL.eval.json beside the model) the
mIoU, per-class IoU and pixel accuracy, from one confusion matrix summed
over the whole split (ignore-label pixels excluded). The dataset and its
split lists default to the run's record (run.json and splits/ beside the
model), so the validation split is the one the run held out. Images are
resized to --image-size (default: the run's training size);
`--image-size native` scores every image and mask at its own size, as the
Pascal VOC benchmark does, for a model that accepts any input size.
"""

import os
import sys

from kerasseg import cli, files


def main(argv=None):
    from kerasseg import data

    parser = cli.ArgumentParser(prog="python -m kerasseg.evaluate", description=__doc__,
                                formatter_class=cli.argparse.RawDescriptionHelpFormatter)
    parser.add_argument("model", help="the trained model (.keras)")
    parser.add_argument("--dataset", type=cli.arg_type(data.check_spec),
                        help=f"dataset spec (default: the run's); accepted: {', '.join(data.ACCEPTED_SPECS)}")
    parser.add_argument("--split", choices=("train", "val", "test"), default="val")
    parser.add_argument("--data-dir", help="where TFDS data was downloaded (tfds: specs)")
    parser.add_argument("--image-size", type=cli.arg_type(_size_or_native),
                        help="N or HxW, or 'native' (each image at its own size; default: the training size)")
    parser.add_argument("--binary-masks", action="store_true",
                        help="the dataset's masks are black-and-white pictures of the foreground (0 / 255; default: "
                             "as the run read them)")
    parser.add_argument("--batch-size", default=16, type=cli.arg_type(cli.positive_int))
    parser.add_argument("--output", help="where to write the scores (default: MODEL.eval.json)")
    args = parser.parse_args(argv)

    from kerasseg import metrics, resolve
    from kerasseg.data.pipeline import ExampleReader, decoded, failures, make_dataset
    from kerasseg.described import output_kind
    from kerasseg.labels import mask_classes

    model = files.load_keras_model(args.model)
    channels = model.outputs[0].shape[-1]
    classes, kind = mask_classes(channels), output_kind(model)
    view = resolve.data_view(args.model, args.dataset, args.data_dir, channels, args.binary_masks)
    native = args.image_size == "native"
    if native:
        fixed = model.inputs[0].shape[1:3]
        if any(fixed):
            raise cli.UsageError(f"{args.model} takes {fixed[0]}x{fixed[1]} images only, so it cannot be scored "
                                 "at each image's own size; pass --image-size N or HxW")
        # files are read at their own sizes; only the generated `shapes` needs one (the training size)
        size = resolve.image_size(model, args.model) if view.spec.startswith("shapes") else None
    else:
        size = resolve.image_size(model, args.model, args.image_size)
    try:
        examples, names = view.list_examples(args.split, size)
        if len(names) != classes:
            raise cli.UsageError(f"{args.model} predicts {classes} classes but dataset {view.spec!r} has "
                                 f"{len(names)} ({', '.join(names)}): mIoU needs the model's own classes")
        scanned = view.scan(examples, len(names))
        reader = ExampleReader(examples, len(names))
        with failures(reader):  # (streamed: one batch in memory at a time)
            if native:
                scores = metrics.evaluate_pairs(model, decoded(reader).as_numpy_iterator(), names, args.batch_size,
                                                kind=kind)
            else:
                scores = metrics.evaluate_batches(model, make_dataset(reader, size, args.batch_size), names, kind)
    except data.DatasetError as error:
        raise cli.UsageError(str(error)) from None
    sizes = sorted({scanned.size(e) for e in examples})
    report = {"model": args.model, "dataset": view.spec, "split": args.split, "samples": len(examples),
              "image_size": "native" if native else list(size), **scores,
              **({"foreground_iou": scores["per_class_iou"][names[1]]} if channels == 1 else {})}
    output = args.output or os.path.splitext(args.model)[0] + ".eval.json"
    files.ensure_output_dir(output)
    files.write_text_atomic(output, files.json_text(report))
    at = (f"their own sizes ({len(sizes)} distinct, {sizes[0][0]}x{sizes[0][1]} to {sizes[-1][0]}x{sizes[-1][1]}, "
          "height x width)"
          if native else f"{size[0]}x{size[1]}")
    print(f"{view.spec} {args.split}: {len(examples)} images at {at}")
    width = max(len(n) for n in names)
    for name, iou in scores["per_class_iou"].items():
        print(f"  {name:<{width}}  IoU {'-' if iou is None else f'{iou:.4f}'}")
    print(f"mIoU {scores['miou']:.4f}, pixel accuracy {scores['pixel_accuracy']:.4f}; wrote {output}")
    return 0


def _size_or_native(text):
    return "native" if str(text).lower() == "native" else cli.image_size(text)


if __name__ == "__main__":
    sys.exit(cli.run(main))
