"""Segment images with a trained model: `python -m kerasseg.predict MODEL.keras IMAGES... --output DIR`.

For each image writes, at the image's own size:
    NAME_mask.png      the class indices (a palette PNG: any viewer shows the colours, and
                       reading it back gives the indices)
    NAME_overlay.png   the image with the classes blended in

Each image is resized to the model's training size (--image-size, default
from the run's record, run.json beside the model), and the logits are resized back to the
image's size before each pixel's class is decided (the highest score; for a
binary segmenter's one logit, foreground where it is above 0); --native runs
the model at each image's own size instead (every kerasseg segmenter takes
any size).
"""

import io
import os
import sys

from kerasseg import cli, files


def _palette_png(mask):
    from PIL import Image

    from kerasseg import plots

    image = Image.fromarray(mask, mode="P")
    image.putpalette(plots.palette().ravel().tolist())
    buffer = io.BytesIO()
    image.save(buffer, format="PNG")
    return buffer.getvalue()


def main(argv=None):
    parser = cli.ArgumentParser(prog="python -m kerasseg.predict", description=__doc__,
                                formatter_class=cli.argparse.RawDescriptionHelpFormatter)
    parser.add_argument("model", help="the trained model (.keras)")
    parser.add_argument("images", nargs="+", help="image files (jpg, png, bmp, tif)")
    parser.add_argument("--output", required=True, help="directory for the masks and overlays")
    parser.add_argument("--image-size", type=cli.arg_type(cli.image_size))
    parser.add_argument("--native", action="store_true", help="run at each image's own size")
    args = parser.parse_args(argv)

    import numpy as np
    from keras import ops

    from kerasseg import plots
    from kerasseg.data.sources import DatasetError, read_image

    from kerasseg import resolve
    from kerasseg.described import output_kind
    from kerasseg.labels import decide, mask_classes

    missing = [p for p in args.images if not os.path.isfile(p)]
    if missing:
        raise cli.UsageError(f"image file(s) not found: {', '.join(missing)}")
    by_stem = {}
    for path in args.images:
        by_stem.setdefault(os.path.splitext(os.path.basename(path))[0], []).append(path)
    clashes = {stem: paths for stem, paths in by_stem.items() if len(paths) > 1}
    if clashes:
        stem, paths = next(iter(clashes.items()))
        raise cli.UsageError(f"{' and '.join(paths)} would both be written as {stem}_mask.png and {stem}_overlay.png "
                             f"in {args.output}: predict them into separate --output directories, or rename one")
    try:
        images = [read_image(p) for p in args.images]
    except DatasetError as error:
        raise cli.UsageError(str(error)) from None
    model = files.load_keras_model(args.model)
    kind = output_kind(model)
    size = None if args.native else resolve.image_size(model, args.model, args.image_size)
    files.ensure_output_dir(os.path.join(args.output, "x"))
    for path, image in zip(args.images, images):
        height, width = image.shape[:2]
        x = image[None].astype("float32")
        if size is not None:
            x = ops.image.resize(x, size, interpolation="bilinear")
        logits = model.predict_on_batch(x)
        if size is not None:
            logits = ops.convert_to_numpy(ops.image.resize(logits, (height, width), interpolation="bilinear"))
        mask = decide(np.asarray(logits)[0], kind).astype(np.uint8)
        stem = os.path.join(args.output, os.path.splitext(os.path.basename(path))[0])
        files.write_bytes_atomic(f"{stem}_mask.png", _palette_png(mask))
        files.write_bytes_atomic(f"{stem}_overlay.png", plots.png_bytes(plots.overlay(image, mask)))
        counts = np.bincount(mask.ravel(), minlength=mask_classes(logits.shape[-1]))
        print(f"{path}: {width}x{height}, classes {dict((i, int(c)) for i, c in enumerate(counts) if c)} "
              f"-> {stem}_mask.png, {stem}_overlay.png")
    return 0


if __name__ == "__main__":
    sys.exit(cli.run(main))
