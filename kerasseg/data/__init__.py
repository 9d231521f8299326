"""Dataset specs: one string names a dataset for training, evaluation, calibration.

Accepted specs:
    shapes      the built-in generated dataset (kerasseg.data.shapes)
"""

from dataclasses import dataclass

import numpy as np

from kerasseg.data import shapes

IGNORE_LABEL = 255
ACCEPTED_SPECS = ("shapes",)


@dataclass
class Split:
    """Images (N, H, W, 3) uint8 in [0, 255], masks (N, H, W) uint8 class indices."""

    images: np.ndarray
    masks: np.ndarray
    class_names: tuple

    @property
    def num_classes(self):
        return len(self.class_names)

    def __len__(self):
        return len(self.images)


def check_spec(spec):
    """Returns `spec` if it names a dataset kerasseg can read, else a ValueError listing the accepted ones."""
    if spec not in ACCEPTED_SPECS:
        raise ValueError(
            f"unknown dataset {spec!r}; accepted: {', '.join(ACCEPTED_SPECS)}"
        )
    return spec


def class_names(spec):
    check_spec(spec)
    return shapes.CLASS_NAMES


def load_split(spec, split, image_size, count=None):
    """Loads `count` samples (all when None) of `split` ("train", "val", "test") at `image_size` (h, w)."""
    check_spec(spec)
    height, width = image_size
    images, masks = shapes.load(split, height, width, count=count)
    return Split(images, masks, shapes.CLASS_NAMES)
