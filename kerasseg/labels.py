"""What a mask means: class indices 0..C-1, and IGNORE_LABEL for pixels that nothing counts.

The one convention the data readers (which check masks), the loss (which
gives ignored pixels no weight), the metrics (which leave them out) and the
pipeline (which pads masks with it) share; a leaf module, importing nothing
of kerasseg.
"""

import numpy as np

IGNORE_LABEL = 255


def out_of_range(values, num_classes, ignore_label=IGNORE_LABEL):
    """The sorted distinct values of `values` that are neither a class 0..num_classes-1 nor `ignore_label`."""
    values = np.asarray(values)
    bad = ((values < 0) | (values >= num_classes)) & (values != ignore_label)
    return sorted(set(np.unique(values[bad]).tolist()))


def split_ignored(labels, ignore_label=IGNORE_LABEL):
    """(labels with ignored pixels set to class 0, float 1/0 weights: 0 where ignored), in keras.ops."""
    from keras import ops

    labels = ops.cast(labels, "int32")
    ignored = ops.equal(labels, ignore_label)
    return ops.where(ignored, 0, labels), ops.cast(ops.logical_not(ignored), "float32")


def blank_masks(count, shape, dtype=np.uint8):
    """`count` masks of `shape` ignored everywhere (padding examples that must not score)."""
    return np.full((count, *shape), IGNORE_LABEL, dtype)
