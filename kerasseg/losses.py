"""Segmentation losses on integer masks and logits, ignore label excluded everywhere.

    ce      softmax cross-entropy, optionally weighted per class (a weighted mean
            over pixels: the weights of the pixels' classes sum to one)
    dice    soft Dice over the batch, averaged over classes: 1 - 2|P.Y| / (|P| + |Y|);
            insensitive to how many pixels a class has, it lifts small classes
    focal   cross-entropy scaled by (1 - p)^gamma: confident pixels count less
            (Lin et al., 2017); class weights act as its alpha
    lovasz  the Lovasz extension of the Jaccard loss (Berman et al., 2018): the
            IoU itself, made differentiable; over the batch, averaged over the
            classes present (Lovasz-softmax), or the Lovasz hinge on one logit

A name combines them: "ce+dice", "0.5*ce+dice", "focal", "ce+lovasz" (--loss).

A binary segmenter's one foreground logit z is scored as the two classes (0, z)
(kerasseg.labels.class_scores): ce is then binary cross-entropy and focal the
binary focal loss; dice is the foreground's alone, as binary Dice is (a
background's near-perfect Dice would dilute it), and lovasz the Lovasz hinge.
Two class weights (background, foreground) weigh it as any two classes.
"""

import re

import keras
from keras import ops

from kerasseg.labels import IGNORE_LABEL, class_scores, split_ignored

TERMS = ("ce", "dice", "focal", "lovasz")


def parse_loss(text):
    """[(weight, term)] of a loss name such as "ce+dice" or "0.5*ce+2*dice"."""
    terms = []
    for part in str(text).replace(" ", "").split("+"):
        match = re.fullmatch(r"(?:(\d*\.?\d+)\*)?([a-z]+)", part)
        if not match or match.group(2) not in TERMS:
            raise ValueError(f"unknown loss {text!r}: expected terms from {', '.join(TERMS)} joined by '+', "
                             "each optionally weighted, e.g. 'ce+dice' or '0.5*ce+dice'")
        terms.append((float(match.group(1) or 1.0), match.group(2)))
    return terms


@keras.saving.register_keras_serializable(package="kerasseg")
class SegmentationLoss(keras.losses.Loss):
    """A weighted sum of ce / dice / focal on (N, H, W) integer masks and (N, H, W, C) logits."""

    def __init__(self, loss="ce", class_weights=None, ignore_label=IGNORE_LABEL, gamma=2.0, name=None, **kwargs):
        self.terms = parse_loss(loss)
        super().__init__(name=name or re.sub(r"[^A-Za-z0-9_.]", "_", str(loss)), **kwargs)
        self.loss, self.class_weights = loss, None if class_weights is None else [float(w) for w in class_weights]
        self.ignore_label, self.gamma = ignore_label, gamma

    def call(self, y_true, y_pred):
        logits = ops.cast(y_pred, "float32")
        binary = logits.shape[-1] == 1
        foreground = logits[..., 0] if binary else None
        logits = class_scores(logits)
        classes = logits.shape[-1]
        labels, valid = split_ignored(y_true, self.ignore_label)
        onehot = ops.one_hot(labels, classes) * valid[..., None]
        log_probs = ops.log_softmax(logits, axis=-1)
        if self.class_weights is not None:
            if len(self.class_weights) != classes:
                raise ValueError(f"class_weights has {len(self.class_weights)} values for {classes} classes")
            weights = ops.sum(onehot * ops.convert_to_tensor(self.class_weights, "float32"), axis=-1)
        else:
            weights = valid
        total = 0.0
        for factor, term in self.terms:
            if term == "dice":
                probs = ops.softmax(logits, axis=-1) * valid[..., None]
                axes = tuple(range(len(logits.shape) - 1))
                overlap = ops.sum(probs * onehot, axis=axes)
                sizes = ops.sum(probs, axis=axes) + ops.sum(onehot, axis=axes)
                dice = (2.0 * overlap + 1.0) / (sizes + 1.0)
                value = 1.0 - (dice[1] if binary else ops.mean(dice))
            elif term == "lovasz":
                value = lovasz_hinge(foreground, labels, valid) if binary else \
                    lovasz_softmax(ops.softmax(logits, axis=-1), onehot, valid)
            else:
                nll = -ops.sum(onehot * log_probs, axis=-1)
                if term == "focal":
                    nll = nll * ops.power(1.0 - ops.exp(-nll), self.gamma)
                value = ops.sum(weights * nll) / ops.maximum(ops.sum(weights), 1e-6)
            total = total + factor * value
        return total

    def get_config(self):
        return {"loss": self.loss, "class_weights": self.class_weights, "ignore_label": self.ignore_label,
                "gamma": self.gamma, "name": self.name, "reduction": self.reduction}


def cross_entropy(ignore_label=IGNORE_LABEL, class_weights=None):
    """Per-pixel softmax cross-entropy from logits; ignore-label pixels add nothing."""
    return SegmentationLoss("ce", class_weights, ignore_label)


def _lovasz_gradient(truth):
    """The Lovasz extension's gradient for pixels sorted by decreasing error: `truth` (..., P) is 1 where the
    sorted pixel belongs to the class (Berman et al., 2018, Algorithm 1)."""
    total = ops.sum(truth, axis=-1, keepdims=True)
    intersection = total - ops.cumsum(truth, axis=-1)
    union = total + ops.cumsum(1.0 - truth, axis=-1)
    jaccard = 1.0 - intersection / ops.maximum(union, 1e-6)
    return ops.concatenate([jaccard[..., :1], jaccard[..., 1:] - jaccard[..., :-1]], axis=-1)


def _sorted_lovasz(errors, truth, valid):
    """sum(sorted errors * the Lovasz gradient) per row of (..., P); ignored pixels sort last with no error
    (they change the gradient only after every counted pixel, where it multiplies nothing)."""
    errors = ops.where(valid > 0, errors, -1.0)
    order = ops.argsort(-errors, axis=-1)
    errors, truth = ops.take_along_axis(errors, order, axis=-1), ops.take_along_axis(truth, order, axis=-1)
    return ops.sum(ops.relu(errors) * _lovasz_gradient(truth), axis=-1)


def lovasz_hinge(logits, labels, valid):
    """The Lovasz hinge of foreground logits (N, H, W) against 0/1 `labels`, over the whole batch."""
    truth = ops.cast(ops.reshape(labels, (-1,)), "float32")
    signs = 2.0 * truth - 1.0
    errors = 1.0 - ops.reshape(logits, (-1,)) * signs
    return _sorted_lovasz(errors, truth, ops.reshape(valid, (-1,)))


def lovasz_softmax(probs, onehot, valid):
    """The Lovasz-softmax loss of probabilities (N, H, W, C), averaged over the classes present in the batch."""
    classes = probs.shape[-1]
    truth = ops.transpose(ops.reshape(onehot, (-1, classes)))  # (C, P)
    errors = ops.abs(truth - ops.transpose(ops.reshape(probs, (-1, classes))))
    valid = ops.broadcast_to(ops.reshape(valid, (1, -1)), ops.shape(errors))
    losses = _sorted_lovasz(errors, truth, valid)
    present = ops.cast(ops.sum(truth, axis=-1) > 0, "float32")
    return ops.sum(losses * present) / ops.maximum(ops.sum(present), 1.0)
