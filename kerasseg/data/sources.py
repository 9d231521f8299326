"""Datasets on disk and in TFDS: `folder:DIR`, `voc:DIR`, `tfds:NAME`.

Every source lists its examples per split (an image and a mask, as files or
arrays, and a name that error messages use); `read_examples` decodes and
checks them all, naming every file that is wrong.
"""

import functools
import os
import random

import numpy as np

from kerasseg.data.reading import (BINARY_NAMES, ClassesError, DatasetError, Example,  # noqa: F401 (re-exported)
                                   read_examples, read_image, read_mask)
from kerasseg.labels import IGNORE_LABEL

IMAGE_SUFFIXES = (".jpg", ".jpeg", ".png", ".bmp", ".tif", ".tiff")
VOC_CLASSES = ("background", "aeroplane", "bicycle", "bird", "boat", "bottle", "bus", "car", "cat", "chair", "cow",
               "diningtable", "dog", "horse", "motorbike", "person", "pottedplant", "sheep", "sofa", "train",
               "tvmonitor")
# TFDS datasets whose masks need a mapping to classes: {name: (mask feature, class names, value -> class)}
TFDS_DATASETS = {
    # the pets' trimap: 1 pet, 2 background, 3 the uncertain border around the pet (ignored, as usual)
    "oxford_iiit_pet": ("segmentation_mask", ("background", "pet"), {1: 1, 2: 0, 3: IGNORE_LABEL}),
}
# the held-out splits of each kind: train / val / test
TFDS_SPLITS = {"train": "train[:90%]", "val": "train[90%:]", "test": "test"}


def select(examples, keys, where):
    """`examples` whose keys are `keys`, in that order (a DatasetError names the keys that are missing)."""
    if keys is None:
        return examples
    by_key = {e.key: e for e in examples}
    _check_known(keys, by_key, where)
    return [by_key[k] for k in keys]


def _check_known(keys, known, where):
    missing = [k for k in keys if k not in known]
    if missing:
        raise DatasetError(f"{where} has no example {', '.join(missing[:10])}"
                           f"{f' (and {len(missing) - 10} more)' if len(missing) > 10 else ''}, which the run's "
                           "split list names: was the dataset changed since the run?")


def _read_lines(path):
    """The non-blank lines of a text file a user wrote (UTF-8, a byte-order mark allowed), stripped."""
    with open(path, encoding="utf-8-sig") as f:
        return [line.strip() for line in f if line.strip()]


def _lines_as_written(path):
    """The non-blank lines of a text file, each exactly as it is (a file name may begin or end in a blank)."""
    with open(path, encoding="utf-8-sig", errors="surrogateescape", newline="") as f:
        return [line for line in f.read().replace("\r\n", "\n").split("\n") if line.strip()]


def _check_dir(path, what):
    if not os.path.isdir(path):
        raise DatasetError(f"{what} not found: {path}")


def _by_stem(directory, suffixes):
    """{stem: path} of the files in `directory` with one of `suffixes` (any case), hidden files skipped;
    a DatasetError names every stem that two files share and every name no split list can hold."""
    found = {}
    for name in sorted(os.listdir(directory)):
        path = os.path.join(directory, name)
        if not name.startswith(".") and name.lower().endswith(suffixes) and os.path.isfile(path):
            found.setdefault(os.path.splitext(name)[0], []).append(path)
    problems = [f"{' and '.join(paths)} share the stem {stem!r}: an example is an image and a mask with one "
                "stem, so rename one of them" for stem, paths in found.items() if len(paths) > 1]
    problems += [f"{paths[0]}: a file name with a line break cannot be listed in a run's split lists; rename it"
                 for stem, paths in found.items() if "\n" in stem or "\r" in stem]
    if problems:
        raise DatasetError(f"{len(problems)} problem(s) in {directory}:\n  " + "\n  ".join(problems))
    return {stem: paths[0] for stem, paths in found.items()}


class FolderSource:
    """`folder:DIR`: DIR/images/* and DIR/masks/*.png matched by file stem (two files with one stem are
    refused; hidden files are skipped).

    Optional: DIR/splits/{train,val,test}.txt (stems, one per line; without
    them a seeded 90/10 train/val split, and test is val) and DIR/labels.txt
    (class names, one per line, each once). Without labels.txt the classes are `classes`
    (--classes) or, failing that, the largest mask value + 1.
    """

    scanned = None  # (kerasseg.data.scan.Scan) the scan of every example, when the class names needed one

    def __init__(self, root, classes=None, seed=0, binary_masks=False):
        self.root, self.binary_masks = root, binary_masks
        images_dir, masks_dir = os.path.join(root, "images"), os.path.join(root, "masks")
        _check_dir(root, "dataset folder")
        _check_dir(images_dir, "image folder (folder:DIR needs DIR/images and DIR/masks)")
        _check_dir(masks_dir, "mask folder (folder:DIR needs DIR/images and DIR/masks)")
        images, masks = _by_stem(images_dir, IMAGE_SUFFIXES), _by_stem(masks_dir, IMAGE_SUFFIXES if binary_masks
                                                                         else (".png",))
        if not images:
            raise DatasetError(f"{images_dir} holds no images ({', '.join(IMAGE_SUFFIXES)})")
        missing = [images[stem] for stem in images if stem not in masks]
        if missing and not binary_masks:
            others = _by_stem(masks_dir, IMAGE_SUFFIXES)
            if all(os.path.splitext(os.path.basename(m))[0] in others for m in missing):
                raise DatasetError(f"the masks in {masks_dir} of {len(missing)} image(s) are not PNG ("
                                   f"{os.path.basename(others[os.path.splitext(os.path.basename(missing[0]))[0]])}, "
                                   "...): masks of class indices are PNG files; black-and-white masks of the "
                                   "foreground in any format are read with binary_masks=True (a binary segmenter; "
                                   "on the command line --binary-masks)")
        if missing:
            raise DatasetError(f"{len(missing)} image(s) without a mask in {masks_dir} (same stem, "
                               f"{'any image format' if binary_masks else '.png'}):\n  "
                               + "\n  ".join(missing))
        self.pairs = {stem: (images[stem], masks[stem]) for stem in images}
        self.class_names = self._class_names(classes)
        self.splits = self._splits(seed)

    def _class_names(self, classes):
        labels = os.path.join(self.root, "labels.txt")
        if os.path.isfile(labels):
            names = tuple(_read_lines(labels))
            twice = sorted({name for name in names if names.count(name) > 1})
            if twice:
                raise DatasetError(f"{labels} names {', '.join(repr(n) for n in twice)} more than once: each "
                                   f"class needs its own name (line {names.index(twice[0]) + 1} and "
                                   f"{names.index(twice[0], names.index(twice[0]) + 1) + 1})")
            if len(names) == 1:  # the foreground's name alone: a binary dataset, its background 0
                names = (BINARY_NAMES[0], *names)
            return ClassesError.check(1 if self.binary_masks else classes, names, labels)
        if classes == 1 or self.binary_masks:
            return BINARY_NAMES
        if classes is None:  # the classes are the values the masks hold: every one is scanned (and checked)
            from kerasseg.data.scan import scan

            self.scanned = scan([Example(image, image, mask, key=stem) for stem, (image, mask) in self.pairs.items()])
            classes = 1 + max((v for entry in self.scanned.entries.values() for v in entry["values"]
                               if v != IGNORE_LABEL), default=0)
        return tuple(f"class_{i}" for i in range(classes))

    def _splits(self, seed):
        split_dir = os.path.join(self.root, "splits")
        listed = {s: os.path.join(split_dir, f"{s}.txt") for s in ("train", "val", "test")}
        if os.path.isfile(listed["train"]):
            splits = {}
            for split, path in listed.items():
                if not os.path.isfile(path):
                    continue
                # a line is a stem as it is, or stripped of the blanks an editor may have added around it
                stems = [line if line in self.pairs else line.strip() for line in _lines_as_written(path)]
                unknown = [s for s in stems if s not in self.pairs]
                if unknown:
                    raise DatasetError(f"{path} lists {len(unknown)} stem(s) with no image and mask: "
                                       f"{', '.join(unknown[:10])}")
                splits[split] = stems
            splits.setdefault("val", [])
            splits.setdefault("test", splits["val"])
            return splits
        stems = sorted(self.pairs)
        random.Random(seed).shuffle(stems)
        cut = max(1, len(stems) // 10) if len(stems) > 1 else 0
        return {"train": sorted(stems[cut:]), "val": sorted(stems[:cut]), "test": sorted(stems[:cut])}

    def keys(self, split):
        return list(self.splits[split])

    def examples(self, split, keys=None):
        stems = self.splits[split] if keys is None else keys
        _check_known(stems, self.pairs, f"folder:{self.root}")
        return [Example(self.pairs[s][0], *self.pairs[s], key=s, binary_mask=self.binary_masks) for s in stems]


class VocSource:
    """`voc:DIR`: Pascal VOC 2012 (JPEGImages, SegmentationClass, ImageSets/Segmentation/{train,val}.txt),
    21 classes, the border label 255 ignored; test is val (VOC's test masks are not public)."""

    class_names = VOC_CLASSES

    def __init__(self, root):
        self.root = root
        for sub in ("JPEGImages", "SegmentationClass", os.path.join("ImageSets", "Segmentation")):
            _check_dir(os.path.join(root, sub), "Pascal VOC folder")

    def _listed(self, split):
        return os.path.join(self.root, "ImageSets", "Segmentation", f"{'val' if split == 'test' else split}.txt")

    def keys(self, split):
        if not os.path.isfile(self._listed(split)):
            raise DatasetError(f"split list not found: {self._listed(split)}")
        return _read_lines(self._listed(split))

    def examples(self, split, keys=None):
        listed = self._listed(split) if keys is None else "the run's split list"
        examples = []
        for stem in self.keys(split) if keys is None else keys:
            image = os.path.join(self.root, "JPEGImages", f"{stem}.jpg")
            mask = os.path.join(self.root, "SegmentationClass", f"{stem}.png")
            examples.append(Example(image, image, mask, key=stem))
        missing = [e.mask for e in examples if not os.path.isfile(e.mask)] + \
                  [e.image for e in examples if not os.path.isfile(e.image)]
        if missing:
            raise DatasetError(f"{len(missing)} file(s) listed in {listed} do not exist:\n  "
                               + "\n  ".join(missing[:20]))
        return examples


class ShapesSource:
    """`shapes` / `shapes:hard`: the built-in generated datasets at `image_size`; an example's key is its index."""

    def __init__(self, image_size, variant=""):
        from kerasseg.data import shapes

        self.shapes, self.image_size, self.spec = shapes, tuple(image_size), ":".join(filter(None, ("shapes", variant)))
        self.class_names, self.sample = shapes.VARIANTS[variant]

    def keys(self, split):
        return [str(i) for i in range(self.shapes.DEFAULT_SIZES[split])]

    def examples(self, split, keys=None, count=None):
        keys = self.keys(split)[:count] if keys is None else keys
        return [Example(f"{self.spec} {split} #{k}", None, None, key=k, size=self.image_size,
                        generate=functools.partial(self.sample, 0, split, int(k), *self.image_size)) for k in keys]


class TfdsSource:
    """`tfds:NAME`: a TFDS segmentation dataset (`--data-dir` for data downloaded beforehand).

    oxford_iiit_pet's trimap becomes background / pet with the border
    ignored; other datasets need an "image" and a mask feature (a feature
    named *mask* or *segmentation*) whose values are the classes
    (--classes says how many).
    """

    def __init__(self, name, data_dir=None, classes=None):
        import tensorflow_datasets as tfds

        self.name, self.data_dir = name, data_dir
        try:
            self.builder = tfds.builder(name, data_dir=data_dir)
        except Exception as error:  # DatasetNotFoundError and friends
            raise DatasetError(f"tfds:{name}: {type(error).__name__}: {str(error).splitlines()[0]}") from None
        if name in TFDS_DATASETS:
            self.mask_key, self.class_names, self.mapping = TFDS_DATASETS[name]
        else:
            keys = [k for k in self.builder.info.features if "mask" in k or "segmentation" in k]
            if "image" not in self.builder.info.features or not keys:
                raise DatasetError(f"tfds:{name} has no 'image' and mask feature (features: "
                                   f"{', '.join(self.builder.info.features)}); known: {', '.join(TFDS_DATASETS)}")
            if classes is None:
                raise DatasetError(f"tfds:{name}: pass --classes N (its mask values are the classes)")
            names = BINARY_NAMES if classes == 1 else tuple(f"class_{i}" for i in range(classes))
            self.mask_key, self.class_names, self.mapping = keys[0], names, None

    def keys(self, split):
        """The split's indices, or None where TFDS knows no size for it (not prepared here): TFDS fixes its
        splits anyway, so a run needs no list of them."""
        try:
            return [str(i) for i in range(self.builder.info.splits[TFDS_SPLITS[split]].num_examples)]
        except (KeyError, ValueError):
            return None

    def examples(self, split, keys=None):
        import tensorflow_datasets as tfds

        try:
            data = tfds.load(self.name, split=TFDS_SPLITS[split], data_dir=self.data_dir, download=False)
        except Exception as error:
            raise DatasetError(f"tfds:{self.name}: cannot read split {split!r} from "
                               f"{self.data_dir or 'the default TFDS folder'} ({type(error).__name__}: "
                               f"{str(error).splitlines()[0]}); download it first (tfds build {self.name})") from None
        lookup = None
        if self.mapping:
            lookup = np.full(256, 254, np.uint8)  # 254: "no class", reported as a bad value below
            for value, target in self.mapping.items():
                lookup[value] = target
        examples = []
        for i, record in enumerate(tfds.as_numpy(data)):
            mask = np.asarray(record[self.mask_key])
            mask = mask[..., 0] if mask.ndim == 3 else mask
            if lookup is not None:
                unknown = ~np.isin(mask, list(self.mapping))
                if unknown.any():
                    raise DatasetError(f"tfds:{self.name} {split} example {i}: mask values "
                                       f"{sorted(np.unique(mask[unknown]).tolist())[:8]} are not in "
                                       f"{sorted(self.mapping)}")
                mask = lookup[mask]
            examples.append(Example(f"tfds:{self.name} {split} example {i}", record["image"], mask.astype(np.uint8),
                                    key=str(i)))
        return select(examples, keys, f"tfds:{self.name} {split}")
