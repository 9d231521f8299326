"""Segment images with a trained model: `python -m kerasseg.predict MODEL.keras IMAGES... --output DIR`.

For each image writes, at the image's own size:
    NAME_mask.png      the class indices (a palette PNG: any viewer shows the colours, and
                       reading it back gives the indices)
    NAME_overlay.png   the image with the classes blended in

Each image is prepared as training showed images to the model
(kerasseg.geometry, the geometry evaluate scores with): by default, aspect
kept, at 0.75, 1, 1.25 and 1.5 times the scale at which it covers the
training size (--scale; the size: --image-size, default from the run's
record, run.json beside the model, or the model itself), its outputs
resized back to the image's size and their probabilities averaged before
each pixel's class is decided (the highest; for a binary segmenter's one
output, foreground where it is above one half). --native (--image-size native) runs each image at its own size; a
picture too large for memory at once (a 24-megapixel photo) runs in
overlapping windows (--mode, --tile, --stride), so memory is bounded by the
window, not the picture.
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


def predict(model, images, image_size=None, resize=None, mode="auto", tile=None, stride=None, budget=None,
            scale=None):
    """The class of every pixel of each of `images`, one at a time (a generator; the model and the geometry are
    checked when it is made): uint8 masks at each image's own
    height and width. `images`: an (N, H, W, 3) array of raw RGB pixels, one (H, W, 3) image, or an iterable
    of images or of image files (read as a viewer shows them), checked as the exporters check theirs. Each is
    prepared as kerasseg.evaluate.evaluate prepares it (the same arguments: by default as the model was
    trained, aspect kept; `image_size` "native": at its own size), and its scores are resized back to its own
    size before each pixel is decided (the highest; a binary segmenter's foreground where its logit is above
    0). `model`: a keras.Model, its .keras path, or a kerasseg.resolve.Stage."""
    import numpy as np

    from kerasseg import inference, resolve
    from kerasseg.geometry import geometry_for
    from kerasseg.data.reading import read_image
    from kerasseg.data.values import checked_image

    stage = model if isinstance(model, resolve.Stage) else resolve.stage(model, size_required=False)
    geometry = geometry_for(stage.model, image_size, resize, mode, tile, stride, stage.record, scale)
    run = inference.Inference(stage.model, geometry, batch_size=16, budget=budget)
    if isinstance(images, np.ndarray) and images.ndim == 3 and images.shape[-1] == 3:
        images = images[None]  # (one image)

    def read():
        for index, image in enumerate(images):
            yield read_image(image) if isinstance(image, (str, os.PathLike)) else checked_image(image, index)

    return run.masks(read())


def main(argv=None):
    parser = cli.ArgumentParser(prog="python -m kerasseg.predict", description=__doc__,
                                formatter_class=cli.argparse.RawDescriptionHelpFormatter)
    parser.add_argument("model", help="the trained model (.keras)")
    parser.add_argument("images", nargs="+", help="image files (jpg, png, bmp, tif), or folders of them")
    parser.add_argument("--output", required=True, help="directory for the masks and overlays")
    parser.add_argument("--native", action="store_true", help="run at each image's own size (--image-size native)")
    cli.add_geometry_arguments(parser)
    args = parser.parse_args(argv)
    if args.image_size == "native":
        args.image_size, args.native = None, True

    import numpy as np

    from kerasseg import plots, resolve
    from kerasseg.data.reading import DatasetError, read_image
    from kerasseg.data.scan import image_size
    from kerasseg.labels import mask_classes

    from kerasseg.data.sources import IMAGE_SUFFIXES

    missing = [p for p in args.images if not os.path.exists(p)]
    if missing:
        raise cli.UsageError(f"image file(s) not found: {', '.join(missing)}")
    found = []
    for path in args.images:  # (a folder: its image files, in name order)
        if os.path.isdir(path):
            inside = sorted(os.path.join(path, name) for name in os.listdir(path)
                            if name.lower().endswith(IMAGE_SUFFIXES) and os.path.isfile(os.path.join(path, name)))
            if not inside:
                raise cli.UsageError(f"{path} holds no image files ({', '.join(IMAGE_SUFFIXES)})")
            found += inside
        else:
            found.append(path)
    args.images = found
    by_stem = {}
    for path in args.images:
        by_stem.setdefault(os.path.splitext(os.path.basename(path))[0], []).append(path)
    clashes = {stem: paths for stem, paths in by_stem.items() if len(paths) > 1}
    if clashes:
        stem, paths = next(iter(clashes.items()))
        raise cli.UsageError(f"{' and '.join(paths)} would both be written as {stem}_mask.png and {stem}_overlay.png "
                             f"in {args.output}: predict them into separate --output directories, or rename one")
    try:  # every image checked before any mask is written (its header and end: kerasseg.data.scan)
        for path in args.images:
            image_size(path)
    except DatasetError as error:
        raise cli.UsageError(str(error)) from None
    stage = resolve.stage(args.model, args.image_size, size_required=not args.native and args.resize != "native")
    files.ensure_output_dir(os.path.join(args.output, "x"))
    masks = predict(stage, args.images, "native" if args.native else stage.image_size, **cli.geometry_options(args))
    for path, mask in zip(args.images, masks):
        height, width = mask.shape
        stem = os.path.join(args.output, os.path.splitext(os.path.basename(path))[0])
        files.write_bytes_atomic(f"{stem}_mask.png", _palette_png(mask))
        files.write_bytes_atomic(f"{stem}_overlay.png", plots.png_bytes(plots.overlay(read_image(path), mask)))
        counts = np.bincount(mask.ravel(), minlength=mask_classes(stage.channels))
        classes = {i: int(c) for i, c in enumerate(counts) if c}
        print(f"{path}: {height}x{width} (height x width), classes {classes} -> {stem}_mask.png, {stem}_overlay.png")
    return 0


if __name__ == "__main__":
    sys.exit(cli.run(main))
