"""What every kerasseg / export command line shares: one-line errors, exit status 2."""

import argparse
import os
import sys

from kerasseg.errors import InputError, WriteError  # noqa: F401 (WriteError: the commands' exit status 1)


class UsageError(Exception):
    """Bad input from the user: reported as one line, exit status 2, no traceback."""


class ArgumentParser(argparse.ArgumentParser):
    def error(self, message):
        print(f"{self.prog}: error: {message}", file=sys.stderr)
        sys.exit(2)


def run(main, argv=None):
    """Runs `main(argv)`, turning a UsageError or a library's InputError into one line on stderr and exit
    status 2, a WriteError into one line and exit status 1."""
    try:
        return main(argv)
    except (UsageError, InputError) as error:
        print(f"{_prog()}: error: {error}", file=sys.stderr)
        return 2
    except WriteError as error:
        print(f"{_prog()}: error: {error}", file=sys.stderr)
        return 1


def _prog():
    """The command as the user typed it: `python -m kerasseg.train`, not `train.py`."""
    spec = getattr(sys.modules.get("__main__"), "__spec__", None)
    if spec is not None and spec.name:
        return f"python -m {spec.name}"
    return os.path.basename(sys.argv[0]) if sys.argv and sys.argv[0] else "kerasseg"


def lazy_import(*names):
    """The modules `names`, each executed when it is first used: a command line's heavy imports (Keras,
    TensorFlow) then wait until its arguments are parsed, so that `--help` and a bad flag answer at once."""
    import importlib.util

    modules = []
    for name in names:
        module = sys.modules.get(name)
        if module is None:
            spec = importlib.util.find_spec(name)
            spec.loader = importlib.util.LazyLoader(spec.loader)
            module = importlib.util.module_from_spec(spec)
            sys.modules[name] = module
            spec.loader.exec_module(module)
        modules.append(module)
    return modules[0] if len(modules) == 1 else modules


def arg_type(check):
    """Wraps a checker that raises ValueError into an argparse type (one-line error)."""

    def convert(text):
        try:
            return check(text)
        except ValueError as error:
            raise argparse.ArgumentTypeError(str(error)) from None

    return convert


def positive_int(text):
    """A whole number >= 1, for counts, sizes and epochs."""
    try:
        value = int(text)
    except ValueError:
        value = 0
    if value < 1:
        raise ValueError(f"expected a positive integer, got {text!r}")
    return value


def positive_float(text):
    """A finite number > 0, for factors."""
    try:
        value = float(text)
    except ValueError:
        value = 0.0
    if not 0 < value < float("inf"):
        raise ValueError(f"expected a positive number, got {text!r}")
    return value


def image_size(text):
    """'64' -> (64, 64); '96x128' -> (96, 128) as (height, width)."""
    parts = str(text).lower().split("x")
    try:
        size = tuple(int(p) for p in parts)
    except ValueError:
        size = ()
    if len(size) == 1:
        size = size * 2
    if len(size) != 2 or min(size) < 1:
        raise ValueError(f"image size must be N or HxW with positive integers (e.g. 64 or 96x128), got {text!r}")
    return size


def image_size_or_native(text):
    """'native' (each image at its own size), or an image size (`image_size`)."""
    return "native" if str(text).lower() == "native" else image_size(text)


def add_geometry_arguments(parser):
    """How evaluate and predict run a model on an image (kerasseg.geometry), declared once."""
    geometry = parser.add_argument_group("geometry (how each image reaches the model)")
    geometry.add_argument("--image-size", type=arg_type(image_size_or_native),
                          help="N or HxW the images are scaled to (default: the training size), or 'native' "
                               "(each image at its own size)")
    geometry.add_argument("--resize", choices=("cover", "stretch", "native"),
                          help="cover: aspect kept, scaled to cover the size (training's default augmentation); "
                               "stretch: resized to it exactly (square data); native: own size (default: as the "
                               "model was trained)")
    geometry.add_argument("--scale", type=arg_type(positive_float), nargs="+",
                          help="cover: the factor over the scale at which an image just covers the size, or several "
                               "whose probabilities are averaged (default: 0.75 1 1.25 1.5, the training's random "
                               "scales; 1: just covering)")
    geometry.add_argument("--mode", choices=("auto", "whole", "slide"), default="auto",
                          help="whole image at once, or overlapping windows (slide); auto: whole unless too large "
                               "for memory (default)")
    geometry.add_argument("--tile", type=arg_type(image_size),
                          help="slide: the window, N or HxW (default: the training size)")
    geometry.add_argument("--stride", type=arg_type(image_size),
                          help="slide: the step between windows, N or HxW (default: two thirds of the window)")


def geometry_options(args):
    """The keyword arguments of kerasseg.evaluate.evaluate / kerasseg.predict.predict for the geometry flags."""
    return {"resize": args.resize, "mode": args.mode, "tile": args.tile, "stride": args.stride, "scale": args.scale}
