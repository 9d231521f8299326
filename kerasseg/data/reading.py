"""Reading one example as a viewer shows it, the one truth every path uses (training streams, the scan,
evaluation, calibration, predict): images and masks decoded and checked, and the problems named by file.
"""

import os
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass

import numpy as np

from kerasseg.errors import InputError
from kerasseg.labels import IGNORE_LABEL, mask_classes, out_of_range


class DatasetError(InputError):
    """A dataset that cannot be used as it is; the message names the files."""


class ClassesError(DatasetError):
    """A class count (`classes`) that disagrees with the class names of `where`."""

    def __init__(self, classes, names, where):
        self.classes, self.names, self.where = classes, tuple(names), where
        self.problem = (f"disagrees with {where}, which names {len(names)} class{'es' if len(names) != 1 else ''} "
                        f"({', '.join(names)})" + (" where a binary segmenter (classes=1) needs two: background and "
                                                   "one foreground" if classes == 1 else ""))
        super().__init__(f"classes={classes} {self.problem}")

    @staticmethod
    def check(classes, names, where):
        """`names`, unless `classes` (a model's channel count: one per class, or 1 for a binary segmenter's two
        classes) disagrees with them."""
        if classes is not None and mask_classes(classes) != len(names):
            raise ClassesError(classes, names, where)
        return tuple(names)


BINARY_NAMES = ("background", "foreground")  # a binary dataset's classes when nothing names them


@dataclass
class Example:
    name: str  # what an error message names: the file, or the TFDS example
    image: object  # a path, an (H, W, 3) uint8 array, or None for a generated example
    mask: object  # a path, an (H, W) uint8 array of class indices, or None for a generated example
    key: str = ""  # what a run's split list records: the file stem, or the index in the split
    generate: object = None  # () -> (image, mask): an example made when it is read (`shapes`)
    size: tuple = None  # (height, width) of a generated example, known without making it
    binary_mask: bool = False  # its mask file is a black-and-white picture of the foreground (read_mask)

    @property
    def on_disk(self):
        return isinstance(self.image, str)

    @property
    def mask_name(self):
        """What an error message calls the mask: its file, or the example."""
        return self.mask if isinstance(self.mask, str) else self.name


def _opened(path, what):
    """`path` opened, decoded whole (a truncated file fails here, not in training) and turned upright as a
    viewer shows it (its EXIF orientation applied: a phone stores a portrait photo sideways, tagged)."""
    from PIL import Image, ImageOps

    try:
        with Image.open(path) as image:
            image.load()
            return ImageOps.exif_transpose(image)
    except (OSError, SyntaxError, ValueError, Image.DecompressionBombError) as error:
        raise DatasetError(f"{path}: unreadable or truncated {what} ({error})") from None


def read_image(path):
    """The image at `path` as a viewer shows it: (H, W, 3) uint8 RGB, upright (EXIF orientation applied).

    8-bit files (grayscale, palette, RGB, CMYK, with or without alpha, which is dropped) are converted to
    RGB. 16-bit values keep their high byte, `v >> 8` (what Pillow does to 16-bit RGB, and OpenCV and
    Android's decoders to every 16-bit image), never clipped; 32-bit float images are refused, saying how
    to convert them.
    """
    image = _opened(path, "image")
    if image.mode in ("I", "F") or image.mode.startswith("I;16"):
        values = np.asarray(image)
        if image.mode == "F" or values.min(initial=0) < 0 or values.max(initial=0) > 65535:
            raise DatasetError(f"{path}: {'32-bit float' if image.mode == 'F' else '32-bit integer'} pixels "
                               f"({values.min():g} to {values.max():g}) are not an image kerasseg reads: save it "
                               "with 8 or 16 bits per channel (e.g. scaled to 0..255 as uint8)")
        gray = (values.astype(np.uint32) >> 8).astype(np.uint8)
        return np.repeat(gray[..., None], 3, axis=-1)
    try:
        return np.asarray(image.convert("RGB"))
    except ValueError as error:  # a mode Pillow cannot convert (LAB, HSV)
        raise DatasetError(f"{path}: a {image.mode} image cannot be read as RGB ({error}); save it as RGB") from None


BINARY_THRESHOLD = 128  # a black-and-white mask's foreground: values from here (a JPEG mask's ringing reads right)


def read_mask(path, binary=False):
    """Class indices from a grayscale or palette PNG (a palette mask's indices, not its colours), upright
    (EXIF orientation applied, as to its image). `binary`: a black-and-white picture of the foreground (0 /
    255, any image format, as Carvana, ISIC and Kvasir ship theirs), read as 0 background and 1 foreground
    where its brightness is BINARY_THRESHOLD or more."""
    mask = _opened(path, "mask")
    if binary:
        return (np.asarray(mask.convert("L")) >= BINARY_THRESHOLD).astype(np.uint8)
    if mask.mode not in ("P", "L", "I", "1") and not mask.mode.startswith("I;16"):
        raise DatasetError(f"{path}: a mask must hold class indices (grayscale or palette PNG); "
                           f"this one is {mask.mode}")
    values = np.asarray(mask)
    if values.max(initial=0) > 255:
        raise DatasetError(f"{path}: mask values up to {values.max()} do not fit 8 bits")
    return values.astype(np.uint8)


def mask_summary(path, binary=False):
    """((height, width), distinct values) of the mask at `path` as read_mask(path, binary) gives it; a
    grayscale or palette mask's values are counted as it decodes (a histogram), with no array made."""
    mask = _opened(path, "mask")
    if binary:
        counts = mask.convert("L").histogram()
        return (mask.height, mask.width), [v for v, n in enumerate((sum(counts[:BINARY_THRESHOLD]),
                                                                    sum(counts[BINARY_THRESHOLD:]))) if n]
    if mask.mode not in ("L", "P"):
        values = read_mask(path)
        return values.shape, mask_values(values)
    return (mask.height, mask.width), [v for v, n in enumerate(mask.histogram()) if n]


def binary_mask_problems(examples, masks_values):
    """A split whose masks hold only 0 and 255 (`masks_values`: each mask's distinct values): hand-made binary
    masks, whose foreground (255, the ignore label) would be ignored, leaving one class to learn."""
    seen = set().union(*map(set, masks_values)) if masks_values else set()
    if IGNORE_LABEL not in seen or seen - {0, IGNORE_LABEL}:
        return []
    names = [e.mask_name for e in examples[:3]]
    return [f"{', '.join(names)}{', ...' if len(examples) > 3 else ''}: every mask holds only 0 and 255, and "
            f"{IGNORE_LABEL} is the ignore label, so the foreground would never be learnt. Read them as binary "
            "masks (a binary segmenter, classes=1, with binary_masks=True; on the command line --classes 1 "
            "--binary-masks), or store the foreground as class 1 (e.g. `mask // 255` before saving); keep 255 "
            "only for pixels that no loss or metric should count"]


def mask_values(mask):
    """The distinct values of a uint8 mask, fast (a histogram, not a sort)."""
    return np.flatnonzero(np.bincount(np.asarray(mask, np.uint8).ravel(), minlength=256)).tolist()


def read_example(example, num_classes=None):
    """The (image, mask) of `example`, decoded (read_image, read_mask) or made, each at its own size; a
    DatasetError names the file when it cannot be read, when the mask is not its image's size, or (given
    `num_classes`) when the mask holds values that are no class."""
    if example.generate is not None:
        return example.generate()
    image = read_image(example.image) if example.on_disk else np.asarray(example.image)
    mask = read_mask(example.mask, example.binary_mask) if isinstance(example.mask, str) else np.asarray(example.mask)
    problems = size_problems(example, image.shape[:2], mask.shape[:2])
    if not problems and num_classes is not None:
        problems = value_problems(example.mask_name, mask_values(mask), num_classes)
    if problems:
        raise DatasetError(problems[0])
    return image, mask


def size_problems(example, image_size, mask_size):
    if tuple(image_size) != tuple(mask_size):
        return [f"{example.name}: image is {image_size[1]}x{image_size[0]} but its mask {example.mask_name} is "
                f"{mask_size[1]}x{mask_size[0]}"]
    return []


def value_problems(mask_name, values, num_classes):
    bad = out_of_range(values, num_classes)
    if bad:
        return [f"{mask_name}: mask values {bad[:8]} are not classes 0..{num_classes - 1} nor the ignore label "
                f"{IGNORE_LABEL}"]
    return []


def raise_problems(problems, where="the dataset"):
    """One DatasetError listing `problems` (the first 20, and how many more), if there are any."""
    if problems:
        shown = "\n  ".join(problems[:20])
        more = f"\n  ... and {len(problems) - 20} more" if len(problems) > 20 else ""
        raise DatasetError(f"{len(problems)} problem(s) in {where}:\n  {shown}{more}")


def read_examples(examples, num_classes, progress=True):
    """Decodes every example into memory (for a bounded number of them: calibration and check samples;
    training and evaluation stream, kerasseg.data.pipeline); raises a DatasetError listing every bad file
    (unreadable or truncated images, masks of another size than their image, mask values that are no class)."""
    if not examples:
        raise DatasetError("the split has no examples")

    def read(example):
        try:
            return read_example(example, num_classes), []
        except DatasetError as error:
            return None, [str(error)]

    bar = progress_bar(len(examples), f"reading and checking {len(examples)} examples") \
        if progress and len(examples) > 200 and examples[0].on_disk else None
    pairs, problems = [], []
    with ThreadPoolExecutor(max_workers=os.cpu_count() or 2) as pool:
        for i, (pair, issues) in enumerate(pool.map(read, examples), start=1):
            pairs.append(pair)
            problems += issues
            if bar and (i % 100 == 0 or i == len(examples)):
                bar.update(i)
    problems += binary_mask_problems(examples, [[] if pair is None else mask_values(pair[1]) for pair in pairs])
    raise_problems(problems)
    return pairs


def progress_bar(total, title):
    """A Keras progress bar for long work on files (a line per update when the output is not a terminal)."""
    import keras

    print(title, flush=True)
    return keras.utils.Progbar(total, verbose=1 if os.isatty(1) else 2)
