"""Evaluate a trained segmenter on a dataset split: `python -m kerasseg.evaluate MODEL.keras --dataset SPEC`.

Prints and writes (--output, default MODEL.eval.json beside the model) the
mIoU, per-class IoU and pixel accuracy, from one confusion matrix summed
over the whole split (ignore-label pixels excluded). The dataset and its
split lists default to the run's record (run.json and splits/ beside the
model), so the validation split is the one the run held out.

Each image is prepared as training showed images to the model
(kerasseg.geometry): by default, aspect kept, at 0.75, 1, 1.25 and 1.5
times the scale at which it covers the training size (the scales training
drew from; --scale to choose), the model's outputs resized back to the
image's own size and their probabilities averaged, where each pixel is
decided and scored against its label at the label's own resolution, as
Cityscapes, ADE20K and Pascal VOC score. --resize stretch
squashes every image to the training size instead (data square by design);
--image-size native runs each image at its own size; large images run in
overlapping windows (--mode, --tile, --stride) so that memory is bounded.
"""

import os
import sys
from dataclasses import asdict, dataclass

from kerasseg import cli, files
from kerasseg.errors import InputError


@dataclass(frozen=True)
class Evaluation:
    """A model's scores on a split, from one confusion matrix over all of it (ignored pixels excluded), each
    label at its own resolution."""

    miou: float
    per_class_iou: dict  # {class name: IoU, or None for a class absent from masks and predictions}
    pixel_accuracy: float
    samples: int
    dataset: str
    split: str
    image_size: object  # (height, width) the images were scaled to (kerasseg.geometry.Geometry.size), or "native"
    sizes: tuple  # the distinct (height, width) of the images scored
    foreground_iou: float = None  # a binary segmenter's (one foreground logit)
    geometry: dict = None  # how each image reached the model (kerasseg.geometry.Geometry.to_dict)

    def to_dict(self):
        report = {key: value for key, value in asdict(self).items() if key != "sizes"}
        report["image_size"] = "native" if self.image_size == "native" else list(self.image_size)
        if self.foreground_iou is None:
            report.pop("foreground_iou")
        return report


def evaluate(model, data, split="val", image_size=None, batch_size=16, resize=None, mode="auto", tile=None,
             stride=None, progress=False, budget=None, scale=None):
    """The Evaluation of `model` (a keras.Model, its .keras path, or a kerasseg.resolve.Stage) on `split` of
    `data`: a dataset spec or a kerasseg.resolve.DataView (its files streamed, every bad file named first by
    the scan, the run's recorded scan reused), or (images, masks) arrays, a tf.data.Dataset or an iterable
    of (image, mask) pairs (read as export's validation= is, and checked alike), of any sizes.

    Each image is prepared as training showed images to the model (kerasseg.geometry.Geometry): `resize`
    "cover" (aspect kept, at `scale` times the scale that covers `image_size`, or at several scales whose
    probabilities are averaged; default: kerasseg.geometry.TEST_SCALES, 0.75-1.5 as training scaled), "stretch"
    (resized to `image_size`) or "native"
    (default: the rule the model was trained with, which it carries or its run records, else "cover");
    `image_size`: (height, width), or "native" (default: the training size the model carries, else its
    run's); `mode` "whole", "slide" (overlapping `tile` windows every `stride`) or "auto" (whole unless its
    activations exceed the memory budget: `budget` bytes, default half of the available memory). Its logits
    go back to the image's own size, where each pixel is decided and scored against its label at the label's
    resolution. `batch_size`: images (or windows) per call at most (lowered to fit the budget); `progress`:
    print a line per large image. A DatasetError (an InputError) names a file that cannot be read.

        scores = evaluate(model, (images, masks), image_size=(256, 256))
        print(scores.miou, scores.per_class_iou)
    """
    from kerasseg import inference, metrics, resolve
    from kerasseg.geometry import geometry_for
    from kerasseg.data import pipeline
    from kerasseg.labels import mask_classes

    if not isinstance(model, resolve.Stage):
        model = resolve.stage(model, size_required=False)
    channels = model.channels
    geometry = geometry_for(model.model, image_size, resize, mode, tile, stride, model.record, scale)
    if not isinstance(data, (str, os.PathLike, resolve.DataView)):  # arrays, tf.data, pairs: in memory
        from kerasseg.data import values

        names = model.class_names or tuple(f"class_{i}" for i in range(mask_classes(channels)))
        pairs = values.labelled_pairs(data, names)  # (checked as the exporters check theirs)
        run = inference.Inference(model.model, geometry, batch_size=batch_size, budget=budget,
                                  progress=_progress(len(pairs)) if progress else None)
        cm = run.confusion(pairs, len(names))
        sizes, spec, count = sorted({image.shape[:2] for image, _ in pairs}), "given images and masks", len(pairs)
    else:
        view = data if isinstance(data, resolve.DataView) else \
            resolve._view(os.fspath(data), model.record, classes=channels)
        # (files are read at their own sizes; only the generated `shapes` needs one: the training size)
        examples, names = view.list_examples(split, geometry.size or model.image_size)
        if len(names) != mask_classes(channels):
            raise InputError(f"{model.name} predicts {mask_classes(channels)} classes but dataset {view.spec!r} "
                             f"has {len(names)} ({', '.join(names)}): mIoU needs the model's own classes")
        scanned = view.scan(examples, len(names))
        reader = pipeline.ExampleReader(examples, len(names))
        run = inference.Inference(model.model, geometry, batch_size=batch_size, budget=budget,
                                  progress=_progress(len(examples)) if progress else None)
        with pipeline.failures(reader):  # (streamed: one batch in memory at a time)
            cm = run.confusion(pipeline.decoded(reader, scan=scanned).as_numpy_iterator(), len(names))
        sizes, spec, count = sorted({scanned.size(e) for e in examples}), view.spec, len(examples)
    scores = metrics.scores(cm, names)
    foreground = scores["per_class_iou"][names[1]] if channels == 1 else None
    return Evaluation(scores["miou"], scores["per_class_iou"], scores["pixel_accuracy"], count, spec, split,
                      "native" if geometry.resize == "native" else geometry.size, tuple(sizes), foreground,
                      geometry.to_dict())


def _progress(count):
    """A progress callback (kerasseg.inference.Inference's) printing a line for each image that is large
    (over a megapixel where it runs) or runs in windows: a split of large photos takes minutes."""

    def told(index, plan):
        pixels = plan.working[0] * plan.working[1]
        if plan.mode == "slide" or pixels > 2**20:
            print(f"image {index + 1}/{count}: {plan.size[0]}x{plan.size[1]} run at {plan.working[0]}x"
                  f"{plan.working[1]} ({'in windows' if plan.mode == 'slide' else 'whole'})", flush=True)

    return told


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
    parser.add_argument("--binary-masks", action="store_true",
                        help="the dataset's masks are black-and-white pictures of the foreground (0 / 255; default: "
                             "as the run read them)")
    parser.add_argument("--batch-size", default=16, type=cli.arg_type(cli.positive_int),
                        help="images (or windows) per prediction step at most, lowered to fit memory (default: 16)")
    cli.add_geometry_arguments(parser)
    parser.add_argument("--output", help="where to write the scores (default: MODEL.eval.json for the val split in "
                                         "the training's geometry; MODEL.eval.test.json, MODEL.eval.native.json, "
                                         "MODEL.eval.test.96x128.stretch.json, MODEL.eval.scale1.json ... for others)")
    args = parser.parse_args(argv)

    from kerasseg import resolve

    native = args.image_size == "native"
    stage = resolve.stage(args.model, None if native else args.image_size, args.dataset, args.data_dir,
                          args.binary_masks, size_required=not native and args.resize != "native")
    view = stage.data(classes=stage.channels)  # (a folder without labels.txt: the model's classes)
    try:
        result = evaluate(stage, view, args.split, "native" if native else stage.image_size, args.batch_size,
                          **cli.geometry_options(args), progress=True)
    except data.DatasetError as error:
        raise cli.UsageError(str(error)) from None
    report = {"model": args.model, **result.to_dict()}
    # (each split, size and geometry its own file: scoring another one does not overwrite the first's)
    size = result.image_size
    scored = ("" if args.split == "val" else f".{args.split}") + \
        ("" if args.image_size is None else ".native" if native else f".{size[0]}x{size[1]}") + \
        "".join(f".{getattr(args, key)}" for key in ("resize", "mode") if getattr(args, key) not in (None, "auto")) + \
        "".join(f".{key}{'-'.join(f'{n:g}' for n in getattr(args, key))}" for key in ("scale", "tile", "stride")
                if getattr(args, key) is not None)
    output = args.output or f"{os.path.splitext(args.model)[0]}.eval{scored}.json"
    files.ensure_output_dir(output)
    files.write_text_atomic(output, files.json_text(report))
    sizes = result.sizes
    shown = f"{len(sizes)} distinct sizes, from {min(h for h, _ in sizes)} to {max(h for h, _ in sizes)} high and " \
        f"{min(w for _, w in sizes)} to {max(w for _, w in sizes)} wide" if len(sizes) > 1 else \
        f"{sizes[0][0]}x{sizes[0][1]}, height x width"
    print(f"{view.spec} {args.split}: {result.samples} images ({shown}); "
          f"{inference_text(result.geometry)}")
    names = list(result.per_class_iou)
    width = max(len(n) for n in names)
    for name, iou in result.per_class_iou.items():
        print(f"  {name:<{width}}  IoU {'-' if iou is None else f'{iou:.4f}'}")
    print(f"mIoU {result.miou:.4f}, pixel accuracy {result.pixel_accuracy:.4f}; wrote {output}")
    return 0


def inference_text(geometry):
    """Geometry.describe() of a Geometry's to_dict()."""
    from kerasseg.geometry import Geometry

    return Geometry(**{k: v for k, v in geometry.items()}).describe()


if __name__ == "__main__":
    sys.exit(cli.run(main))
