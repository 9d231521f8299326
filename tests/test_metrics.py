import numpy as np
import pytest

from kerasseg import metrics


def _reference_iou(y_true, y_pred, num_classes, ignore=255):
    keep = y_true != ignore
    ious = {}
    for c in range(num_classes):
        t, p = (y_true == c) & keep, (y_pred == c) & keep
        union = (t | p).sum()
        ious[c] = (t & p).sum() / union if union else None
    return ious


def test_scores_match_a_plain_reference_with_ignore_and_absent_class():
    y_true = np.array([[0, 0, 1, 1], [1, 255, 2, 2], [0, 0, 255, 255]])
    y_pred = np.array([[0, 1, 1, 1], [1, 0, 2, 0], [0, 0, 3, 3]])  # class 3 only on ignored pixels
    cm = metrics.confusion_matrix(y_true, y_pred, 5)
    assert cm.sum() == 9  # the three ignore-label pixels do not count
    result = metrics.scores(cm, ["a", "b", "c", "d", "e"])
    reference = _reference_iou(y_true, y_pred, 5)
    for c, name in enumerate("abcde"):
        if reference[c] is None:
            assert result["per_class_iou"][name] is None
        else:
            assert result["per_class_iou"][name] == pytest.approx(reference[c])
    present = [v for v in reference.values() if v is not None]
    assert result["miou"] == pytest.approx(np.mean(present))
    assert result["pixel_accuracy"] == pytest.approx(7 / 9)


def test_label_outside_classes_is_an_error():
    with pytest.raises(ValueError, match="Label 7"):
        metrics.confusion_matrix(np.array([7]), np.array([0]), 4)


def test_split_miou_is_not_a_mean_of_batch_ious():
    # batch 1: a tiny object missed; batch 2: a big object found
    t1, p1 = np.array([1, 0, 0, 0]), np.array([0, 0, 0, 0])
    t2, p2 = np.array([1, 1, 1, 0]), np.array([1, 1, 1, 0])
    total = metrics.confusion_matrix(t1, p1, 2) + metrics.confusion_matrix(t2, p2, 2)
    assert metrics.scores(total, "ab")["per_class_iou"]["b"] == pytest.approx(3 / 4)


def test_confusion_matrix_rejects_a_prediction_that_is_no_class():
    with pytest.raises(ValueError, match=r"Prediction 4 is outside \[0, 4\)"):
        metrics.confusion_matrix(np.array([[0, 1]]), np.array([[0, 4]]), 4)
