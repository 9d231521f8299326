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
from dataclasses import asdict, dataclass

from kerasseg import cli, files
from kerasseg.errors import InputError


@dataclass(frozen=True)
class Evaluation:
    """A model's scores on a split, from one confusion matrix over all of it (ignored pixels excluded)."""

    miou: float
    per_class_iou: dict  # {class name: IoU, or None for a class absent from masks and predictions}
    pixel_accuracy: float
    samples: int
    dataset: str
    split: str
    image_size: object  # (height, width) the images were resized to, or "native"
    sizes: tuple  # the distinct (height, width) of the images scored
    foreground_iou: float = None  # a binary segmenter's (one foreground logit)

    def to_dict(self):
        report = {key: value for key, value in asdict(self).items() if key != "sizes"}
        report["image_size"] = "native" if self.image_size == "native" else list(self.image_size)
        if self.foreground_iou is None:
            report.pop("foreground_iou")
        return report


def evaluate(model, data, split="val", image_size=None, batch_size=16):
    """The Evaluation of `model` (a keras.Model, its .keras path, or a kerasseg.resolve.Stage) on `split` of
    `data`: a dataset spec or a kerasseg.resolve.DataView (its files streamed, every bad file named first by
    the scan, the run's recorded scan reused), or (images, masks) arrays, a tf.data.Dataset or an iterable
    of (image, mask) pairs (read as export's validation= is, and checked alike). `image_size`: (height, width) every
    image and mask is resized to as training resizes them (default: the model's fixed input size, else the
    training size it carries, else its run's); "native" (the default when none says one): each scored at its
    own size, for a model that takes any size. A DatasetError (an InputError) names a file that cannot be
    read.

        scores = evaluate(model, (images, masks), image_size=(256, 256))
        print(scores.miou, scores.per_class_iou)
    """
    from kerasseg import metrics, resolve
    from kerasseg.data import pipeline
    from kerasseg.described import output_kind
    from kerasseg.labels import mask_classes

    if not isinstance(model, resolve.Stage):
        model = resolve.stage(model, size_required=False)
    channels, kind = model.channels, output_kind(model.model)
    image_size = image_size or model.image_size or "native"
    native = image_size == "native"
    if not isinstance(data, (str, os.PathLike, resolve.DataView)):  # arrays, tf.data, pairs: in memory
        from kerasseg.data import values

        from kerasseg import data as datasets

        names = model.class_names or tuple(f"class_{i}" for i in range(mask_classes(channels)))
        pairs = values.labelled_pairs(data, names)  # (checked as the exporters check theirs)
        if not native:
            pairs = [datasets.resize_pair(image, mask, image_size) for image, mask in pairs]
        scores = metrics.evaluate_pairs(model.model, pairs, names, batch_size, kind=kind)
        sizes, spec, count = sorted({image.shape[:2] for image, _ in pairs}), "given images and masks", len(pairs)
    else:
        view = data if isinstance(data, resolve.DataView) else \
            resolve._view(os.fspath(data), model.record, classes=channels)
        examples, names = view.list_examples(split, None if native else image_size)
        if len(names) != mask_classes(channels):
            raise InputError(f"{model.name} predicts {mask_classes(channels)} classes but dataset {view.spec!r} "
                             f"has {len(names)} ({', '.join(names)}): mIoU needs the model's own classes")
        scanned = view.scan(examples, len(names))
        reader = pipeline.ExampleReader(examples, len(names))
        with pipeline.failures(reader):  # (streamed: one batch in memory at a time)
            if native:
                scores = metrics.evaluate_pairs(model.model, pipeline.decoded(reader).as_numpy_iterator(), names,
                                                batch_size, kind=kind)
            else:
                scores = metrics.evaluate_batches(model.model, pipeline.make_dataset(reader, image_size, batch_size),
                                                  names, kind)
        sizes, spec, count = sorted({scanned.size(e) for e in examples}), view.spec, len(examples)
    foreground = scores["per_class_iou"][names[1]] if channels == 1 else None
    return Evaluation(scores["miou"], scores["per_class_iou"], scores["pixel_accuracy"], count, spec, split,
                      "native" if native else tuple(image_size), tuple(sizes), foreground)


def main(argv=None):
    from kerasseg import data

    parser = cli.ArgumentParser(prog="python -m kerasseg.evaluate", description=__doc__,
                                formatter_class=cli.argparse.RawDescriptionHelpFormatter)
    parser.add_argument("model", help="the trained model (.keras)")
    parser.add_argument("--dataset", type=cli.arg_type(data.check_spec),
                        help=f"dataset spec (default: the run's); accepted: {', '.join(data.ACCEPTED_SPECS)}")
    parser.add_argument("--split", choices=("train", "val", "test"), default="val",
                        help="which split of the dataset is scored (default: val)")
    parser.add_argument("--data-dir", help="where TFDS data was downloaded (tfds: specs)")
    parser.add_argument("--image-size", type=cli.arg_type(cli.image_size_or_native),
                        help="N or HxW, or 'native' (each image at its own size; default: the training size)")
    parser.add_argument("--binary-masks", action="store_true",
                        help="the dataset's masks are black-and-white pictures of the foreground (0 / 255; default: "
                             "as the run read them)")
    parser.add_argument("--batch-size", default=16, type=cli.arg_type(cli.positive_int),
                        help="images per prediction step (default: 16)")
    parser.add_argument("--output", help="where to write the scores (default: MODEL.eval.json for the val split at "
                                         "the training size; MODEL.eval.test.json, MODEL.eval.native.json, "
                                         "MODEL.eval.test.96x128.json ... for others)")
    args = parser.parse_args(argv)

    from kerasseg import resolve

    native = args.image_size == "native"
    stage = resolve.stage(args.model, None if native else args.image_size, args.dataset, args.data_dir,
                          args.binary_masks, size_required=not native)
    if native:
        fixed = stage.model.inputs[0].shape[1:3]
        if any(fixed):
            raise cli.UsageError(f"{args.model} takes {fixed[0]}x{fixed[1]} images only, so it cannot be scored "
                                 "at each image's own size; pass --image-size N or HxW")
    view = stage.data(classes=stage.channels)  # (a folder without labels.txt: the model's classes)
    # files are read at their own sizes; only the generated `shapes` needs one (the training size)
    size = ("native" if not view.spec.startswith("shapes") else stage.image_size) if native else stage.image_size
    try:
        result = evaluate(stage, view, args.split, size, args.batch_size)
    except data.DatasetError as error:
        raise cli.UsageError(str(error)) from None
    report = {"model": args.model, **result.to_dict()}
    if native:
        report["image_size"] = "native"
    # (each split and size its own file: scoring another one does not overwrite the first's)
    scored = ("" if args.split == "val" else f".{args.split}") + \
        ("" if args.image_size is None else ".native" if native else f".{size[0]}x{size[1]}")
    output = args.output or f"{os.path.splitext(args.model)[0]}.eval{scored}.json"
    files.ensure_output_dir(output)
    files.write_text_atomic(output, files.json_text(report))
    sizes = result.sizes
    at = (f"their own sizes ({len(sizes)} distinct, {sizes[0][0]}x{sizes[0][1]} to {sizes[-1][0]}x{sizes[-1][1]}, "
          "height x width)" if native else f"{size[0]}x{size[1]}")
    print(f"{view.spec} {args.split}: {result.samples} images at {at}")
    names = list(result.per_class_iou)
    width = max(len(n) for n in names)
    for name, iou in result.per_class_iou.items():
        print(f"  {name:<{width}}  IoU {'-' if iou is None else f'{iou:.4f}'}")
    print(f"mIoU {result.miou:.4f}, pixel accuracy {result.pixel_accuracy:.4f}; wrote {output}")
    return 0


if __name__ == "__main__":
    sys.exit(cli.run(main))
