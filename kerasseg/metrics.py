"""Segmentation metrics from a confusion matrix accumulated over a whole split, and a model scored with them.

The mean IoU of a split is computed from the summed confusion matrix, not as
an average of per-batch IoUs (which weighs a batch with one small object like
a batch full of it). Pixels labelled with the ignore label do not count.
"""

import keras
import numpy as np

from kerasseg.labels import IGNORE_LABEL, class_scores, decide, out_of_range


def confusion_matrix(y_true, y_pred, num_classes, ignore_label=IGNORE_LABEL):
    """(num_classes, num_classes) counts; rows are ground truth, columns predictions."""
    y_true = np.asarray(y_true).ravel().astype(np.int64)
    y_pred = np.asarray(y_pred).ravel().astype(np.int64)
    bad = out_of_range(y_true, num_classes, ignore_label)
    if bad:
        raise ValueError(f"Label {bad[0]} is outside [0, {num_classes}) and is not the ignore label {ignore_label}.")
    keep = y_true != ignore_label
    y_true, y_pred = y_true[keep], y_pred[keep]
    bad = (y_pred < 0) | (y_pred >= num_classes)
    if bad.any():
        raise ValueError(
            f"Prediction {int(y_pred[bad][0])} is outside [0, {num_classes}): the predictions come from a model "
            f"of more classes than the {num_classes} scored."
        )
    return np.bincount(num_classes * y_true + y_pred, minlength=num_classes**2).reshape(
        num_classes, num_classes
    )


def scores(cm, class_names):
    """mIoU, per-class IoU and pixel accuracy of a confusion matrix.

    A class absent from both ground truth and prediction has no IoU (None) and
    is left out of the mean, rather than counting as a perfect 1 or a 0.
    """
    cm = np.asarray(cm, dtype=np.float64)
    tp = np.diag(cm)
    union = cm.sum(0) + cm.sum(1) - tp
    with np.errstate(invalid="ignore", divide="ignore"):
        iou = np.where(union > 0, tp / union, np.nan)
    total = cm.sum()
    return {
        "miou": float(np.nanmean(iou)) if np.isfinite(iou).any() else float("nan"),
        "per_class_iou": {n: (None if np.isnan(v) else float(v)) for n, v in zip(class_names, iou)},
        "pixel_accuracy": float(tp.sum() / total) if total else float("nan"),
    }


def mean_iou_metric(num_classes, ignore_label=IGNORE_LABEL, name="miou"):
    """The Keras metric model.fit reports: mIoU of argmax(logits), accumulated over the epoch."""
    return keras.metrics.MeanIoU(
        num_classes=num_classes, ignore_class=ignore_label, sparse_y_pred=False, name=name
    )


@keras.saving.register_keras_serializable(package="kerasseg")
class ScoresIoU(keras.metrics.IoU):
    """keras.metrics.IoU of per-pixel scores decided as kerasseg.labels.decide decides them: one channel's
    logit z as the two classes (0, z) (foreground where z > 0), several channels by their argmax."""

    def update_state(self, y_true, y_pred, sample_weight=None):
        return super().update_state(y_true, class_scores(y_pred), sample_weight)


def segmentation_metrics(channels, ignore_label=IGNORE_LABEL):
    """What model.fit reports for a model of `channels` output channels: "miou" (its classes' mean IoU); for a
    binary segmenter (one channel) also "foreground_iou"."""
    if channels > 1:
        return [mean_iou_metric(channels, ignore_label)]
    common = {"num_classes": 2, "ignore_class": ignore_label, "sparse_y_pred": False}
    return [ScoresIoU(target_class_ids=[0, 1], name="miou", **common),
            ScoresIoU(target_class_ids=[1], name="foreground_iou", **common)]


def evaluate_split(model, split, batch_size=16, kind="logits"):
    """Scores of `model` on a whole split, from one accumulated confusion matrix."""
    return evaluate_pairs(model, zip(split.images, split.masks), split.class_names, batch_size, kind=kind)


def evaluate_batches(model, batches, class_names, kind="logits"):
    """Scores of `model` on every (images, masks) batch of `batches` (a tf.data.Dataset of them, as
    kerasseg.data.pipeline.make_dataset streams, or any iterable of arrays), from one accumulated confusion
    matrix: memory holds one batch at a time. Pixels are decided as kerasseg.labels.decide decides them
    (`kind`: what the model outputs, "logits" or "probabilities")."""
    if hasattr(batches, "as_numpy_iterator"):
        batches = batches.as_numpy_iterator()
    cm = 0
    for images, masks in batches:
        logits = model.predict_on_batch(np.asarray(images, "float32"))
        cm = cm + confusion_matrix(np.asarray(masks), decide(logits, kind), len(class_names))
    return scores(cm, class_names)


def evaluate_pairs(model, pairs, class_names, batch_size=16, pending=64, kind="logits"):
    """Scores of `model` on (image, mask) pairs of any sizes (an iterable: read as it is consumed), from one
    accumulated confusion matrix.

    Pairs of the same size are predicted together, `batch_size` at a time; at most `pending` pairs wait for
    others of their size.
    """

    def batches():
        by_size = {}
        for image, mask in pairs:
            group = by_size.setdefault(image.shape[:2], [])
            group.append((image, mask))
            if len(group) < batch_size and sum(map(len, by_size.values())) < pending:
                continue
            images, masks = zip(*by_size.pop(max(by_size, key=lambda size: len(by_size[size]))))
            yield np.stack(images), np.stack(masks)
        for group in by_size.values():
            images, masks = zip(*group)
            yield np.stack(images), np.stack(masks)

    return evaluate_batches(model, batches(), class_names, kind)
