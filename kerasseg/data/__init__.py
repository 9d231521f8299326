"""Dataset specs: one string names a dataset for training, evaluation, calibration and benchmarks.

Accepted specs:
    shapes        the built-in generated dataset (kerasseg.data.shapes)
    folder:DIR    DIR/images/* and DIR/masks/*.png matched by stem; optional DIR/splits/{train,val}.txt
                  and DIR/labels.txt (kerasseg.data.sources.FolderSource)
    voc:DIR       Pascal VOC 2012's layout, 21 classes, border 255 ignored
    tfds:NAME     a TFDS segmentation dataset, e.g. tfds:oxford_iiit_pet (--data-dir: where it was
                  downloaded)

Masks hold class indices; IGNORE_LABEL (255) marks pixels that no loss,
metric or augmentation counts.
"""

import os
from dataclasses import dataclass

import numpy as np

from kerasseg.data import shapes
from kerasseg.data.sources import (IGNORE_LABEL, ClassesError, DatasetError, FolderSource, ShapesSource,
                                   TfdsSource, VocSource, read_examples)

ACCEPTED_SPECS = ("shapes", "shapes:hard", "folder:DIR", "voc:DIR", "tfds:NAME")
SPLITS = ("train", "val", "test")


@dataclass
class Split:
    """Images (N, H, W, 3) uint8 in [0, 255], masks (N, H, W) uint8 class indices; `labels`, when kept: each
    mask at its image's own size before the resize (what a benchmark scores at)."""

    images: np.ndarray
    masks: np.ndarray
    class_names: tuple
    resized: int = 0  # how many were resized from another size to get here
    spec: str = None  # the dataset spec it came from
    labels: list = None  # the masks at their images' own sizes (kerasseg.data.values.validation_samples)

    @property
    def num_classes(self):
        return len(self.class_names)

    def __len__(self):
        return len(self.images)


@dataclass
class Pairs:
    """Decoded (image, mask) pairs of a dataset, each at its own size: what a check scores at the labels' own
    resolution (kerasseg.data.values reads them as it reads a spec's split)."""

    pairs: list
    class_names: tuple
    spec: str = None

    def __len__(self):
        return len(self.pairs)


def parse_spec(spec):
    """(kind, argument) of a dataset spec, or a ValueError listing the accepted ones."""
    kind, _, argument = str(spec).partition(":")
    if (kind == "shapes" and argument in shapes.VARIANTS) or (kind in ("folder", "voc", "tfds") and argument):
        return kind, argument
    raise ValueError(f"unknown dataset {spec!r}; accepted: {', '.join(ACCEPTED_SPECS)}")


def resolve_spec(spec):
    """`spec` naming its files by their resolved location (`folder:DIR/`, `folder:DIR/../DIR`, a symlink to
    DIR and a relative DIR all become `folder:/absolute/DIR`, `~` expanded): the dataset's identity, which
    a run records and later stages compare, so the run's split lists follow the data whatever its spelling."""
    kind, argument = parse_spec(spec)
    if kind in ("folder", "voc"):
        return f"{kind}:{os.path.realpath(os.path.expanduser(argument))}"
    return spec


def same_dataset(spec, other):
    """Whether two specs name the same dataset (resolve_spec)."""
    return resolve_spec(spec) == resolve_spec(other)


def check_spec(spec):
    """Returns `spec` if it is well formed (whether its files exist is checked when it is read)."""
    parse_spec(spec)
    return spec


def open_source(spec, data_dir=None, classes=None, seed=0, image_size=None, binary_masks=False):
    """The source object behind `spec`: it lists each split's keys and examples. `binary_masks`: a folder's
    masks are black-and-white pictures of the foreground (kerasseg.data.reading.read_mask)."""
    kind, argument = parse_spec(spec)
    if kind == "folder":
        return FolderSource(argument, classes, seed, binary_masks)
    if binary_masks:
        raise DatasetError(f"binary_masks=True reads a folder's black-and-white masks; dataset {spec!r} has masks "
                           "of class indices")
    if kind == "voc":
        return VocSource(argument)
    if kind == "tfds":
        return TfdsSource(argument, data_dir, classes)
    return ShapesSource(image_size or (64, 64), argument)


def class_names(spec, data_dir=None, classes=None, source=None):
    """The dataset's class names; a ClassesError (a DatasetError) when `classes`, a model's channel count (1:
    a binary segmenter, whose dataset has two classes), disagrees with them."""
    return ClassesError.check(classes, (source or open_source(spec, data_dir, classes)).class_names,
                              f"dataset {spec!r}")


def list_examples(spec, split, image_size=None, count=None, data_dir=None, classes=None, seed=0, keys=None,
                  source=None, binary_masks=False):
    """The examples of a split, not yet decoded (the first `count`; those named by `keys`, a run's split
    list, when given), and the class names. `shapes` generates its images at `image_size`. `source`: the
    spec's source when it is already open."""
    if split not in SPLITS:
        raise ValueError(f"split must be one of {SPLITS}. Received: {split!r}")
    source = source or open_source(spec, data_dir, classes, seed, image_size, binary_masks)
    names = class_names(spec, classes=classes, source=source)
    if isinstance(source, ShapesSource) and keys is None:
        examples = source.examples(split, count=count)  # generate only what is asked for
    else:
        examples = source.examples(split, keys)[:count]
    if not examples:
        raise DatasetError(f"dataset {spec!r} has an empty {split} split")
    return examples, names


def load_examples(spec, split, image_size=None, count=None, data_dir=None, classes=None, seed=0, keys=None,
                  binary_masks=False):
    """The decoded and checked (image, mask) pairs of a split, each at its own size, and the class names
    (arguments as list_examples)."""
    examples, names = list_examples(spec, split, image_size, count, data_dir, classes, seed, keys,
                                    binary_masks=binary_masks)
    return read_examples(examples, len(names)), names


def resize_pair(image, mask, image_size):
    """`image` (bilinear) and `mask` (nearest: classes are not blended) at `image_size` (h, w), exactly as
    the training pipeline resizes (kerasseg.data.pipeline.resize), the image rounded back to uint8."""
    from kerasseg.data.pipeline import resize

    if image.shape[:2] == tuple(image_size):
        return image, mask
    image, mask = resize(image, mask, image_size)
    return np.clip(np.round(image.numpy()), 0, 255).astype(np.uint8), mask.numpy().astype(np.uint8)


def load_split(spec, split, image_size, count=None, data_dir=None, classes=None, seed=0, keys=None,
               binary_masks=False):
    """`count` samples (all when None) of `split` ("train", "val", "test"), resized to `image_size` (h, w);
    `keys`: the examples a run's split list names."""
    pairs, names = load_examples(spec, split, image_size, count, data_dir, classes, seed, keys, binary_masks)
    return to_split(pairs, names, image_size, spec)


def dataset(spec, split="train", image_size=(256, 256), batch_size=8, augment=None, count=None, shuffle=None,
            seed=0, cache="none", data_dir=None, classes=None, binary_masks=False):
    """The training's streaming input pipeline (kerasseg.train's, kerasseg.data.pipeline) over a split of any
    dataset spec, as a `tf.data.Dataset` of batches (float32 pixel images (B, H, W, 3) in [0, 255], int32
    class masks (B, H, W), IGNORE_LABEL where nothing is to be learnt): what `model.fit` takes, on the
    TensorFlow and the JAX backend.

    Nothing is decoded here: every example is scanned (headers, the masks' values: every bad file named at
    once, a DatasetError) and read when the pipeline reaches it, so memory stays flat in the dataset's size.
    With augment="full" (random scale, crop, flip and colour) each crop's window is chosen first and only that
    window decoded and resized (JPEG and PNG files by TensorFlow's decoders, in parallel, out of Python's
    GIL); augment="flip" flips each pair resized to `image_size`; None resizes (evaluation batches).
    count: the first `count` examples. shuffle: reshuffled every epoch, seeded (default: when augmenting).
    cache: "none", "memory" (each example decoded once and held) or a directory (decoded once to disk, crops
    read from memory-mapped files in later epochs and runs). A file damaged where the scan cannot see stops
    the iteration when the pipeline meets it: with its DatasetError (naming it) where the reader decodes it,
    with TensorFlow's decoder error (which names no file) for JPEGs and PNGs TensorFlow decodes."""
    from kerasseg.data import pipeline
    from kerasseg.data.scan import scan

    if augment not in (None, "none", "flip", "full"):
        raise ValueError(f"augment must be None, 'flip' or 'full'. Received: {augment!r}")
    augment = None if augment == "none" else augment
    image_size = (image_size, image_size) if isinstance(image_size, int) else tuple(image_size)
    source = open_source(spec, data_dir, classes, seed, image_size, binary_masks)
    examples, names = list_examples(spec, split, image_size, count, classes=classes, seed=seed, source=source)
    scanned = scan(examples, len(names))
    cache, _ = pipeline.open_cache(pipeline.check_cache(cache), examples, scanned.decoded_bytes(examples))
    reader = pipeline.ExampleReader(examples, len(names), cache, strict=True)
    return pipeline.make_dataset(reader, image_size, batch_size, shuffle=bool(augment) if shuffle is None else shuffle,
                                 seed=seed, augment=augment, scan=scanned)


def to_split(pairs, class_names, image_size, spec=None):
    """A Split of decoded (image, mask) pairs, each resized to `image_size` (resize_pair)."""
    resized = sum(image.shape[:2] != tuple(image_size) for image, _ in pairs)
    pairs = [resize_pair(image, mask, image_size) for image, mask in pairs]
    return Split(np.stack([p[0] for p in pairs]), np.stack([p[1] for p in pairs]), class_names, resized, spec)


__all__ = ["ACCEPTED_SPECS", "IGNORE_LABEL", "DatasetError", "Pairs", "Split", "check_spec", "class_names", "dataset",
           "list_examples", "load_examples", "load_split", "open_source", "parse_spec", "resize_pair", "resolve_spec",
           "same_dataset", "shapes", "to_split"]
