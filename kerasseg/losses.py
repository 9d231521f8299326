"""Segmentation losses on integer masks and logits."""

import keras

from kerasseg.data import IGNORE_LABEL


def cross_entropy(ignore_label=IGNORE_LABEL):
    """Per-pixel softmax cross-entropy from logits; ignore-label pixels add nothing."""
    return keras.losses.SparseCategoricalCrossentropy(from_logits=True, ignore_class=ignore_label)
