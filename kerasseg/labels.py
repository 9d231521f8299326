"""What a mask means: class indices 0..C-1, and IGNORE_LABEL for pixels that nothing counts; and how a
model's per-pixel scores decide a class.

The one convention the data readers (which check masks), the loss (which
gives ignored pixels no weight), the metrics (which leave them out) and the
pipeline (which pads masks with it) share; a leaf module, importing nothing
of kerasseg.

A binary segmenter (`classes=1`: people, lesions, documents) scores one
foreground logit z per pixel; its masks hold two classes, background 0 and
foreground 1. Every decision, loss and metric reads z as the two-class
scores (0, z): their softmax is (1 - sigmoid(z), sigmoid(z)), their argmax
is "z > 0", so cross-entropy on them is binary cross-entropy, exactly.
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


def mask_classes(channels):
    """The classes a mask holds for a model of `channels` output channels: one per channel, or two for one
    channel (a binary segmenter: background 0, foreground 1)."""
    return 2 if channels == 1 else channels


def decide(scores, kind="logits"):
    """The class of every pixel (int64) of per-pixel scores (..., C) in numpy: the highest of several
    channels; of one channel, foreground (1) where the logit is above 0 (`kind` "probabilities": where the
    probability is above 0.5)."""
    scores = np.asarray(scores)
    if scores.shape[-1] == 1:
        return (scores[..., 0] > (0.5 if kind == "probabilities" else 0.0)).astype(np.int64)
    return scores.argmax(-1)


def class_scores(scores):
    """Per-pixel scores as one per class, in keras.ops: one foreground logit z becomes (0, z); several channels
    stay as they are."""
    from keras import ops

    if scores.shape[-1] == 1:
        return ops.concatenate([ops.zeros_like(scores), scores], axis=-1)
    return scores
