"""Binary segmentation end to end: one foreground logit trained from a folder of 0/1 (or 0/255) masks with
losses that are not zero by construction, scored by foreground IoU, and exported with a check that compares
decisions (logit > 0), so that a file that disagrees fails; the Android bundle in MediaPipe."""

import json

import numpy as np
import pytest
from PIL import Image

import keras

from conftest import binary_folder, run_main
from kerasseg import losses


def test_a_binary_unet_learns_the_foreground_from_a_folder_of_0_1_masks(binary_run):
    run, _ = binary_run
    model = run.load_model()
    assert model.outputs[0].shape[-1] == 1 and run.class_names == ("background", "shape")
    assert run.metrics["foreground_iou"] >= 0.6, run.metrics  # (the old code: 0, its loss exactly 0)
    assert run.metrics["foreground_iou"] == run.metrics["per_class_iou"]["shape"]
    with open(f"{run.directory}/history.csv") as f:
        assert "val_foreground_iou" in f.readline()


def test_cross_entropy_on_one_logit_is_binary_cross_entropy_and_every_loss_learns(tmp_path):
    rng = np.random.default_rng(0)
    logits = rng.normal(size=(2, 6, 7, 1)).astype("float32") * 3
    labels = rng.integers(0, 2, (2, 6, 7))
    labels[0, 0] = 255
    valid = labels != 255
    z, y = logits[..., 0][valid], labels[valid]
    bce = np.mean(np.logaddexp(0, z) - y * z)
    assert float(losses.SegmentationLoss("ce")(labels, logits)) == pytest.approx(bce, rel=1e-5)  # (old: 0.0)
    p = 1 / (1 + np.exp(-z))
    dice = 1 - (2 * (p * y).sum() + 1) / (p.sum() + y.sum() + 1)  # the foreground's Dice alone
    assert float(losses.SegmentationLoss("dice")(labels, logits)) == pytest.approx(dice, rel=1e-5)
    pt = np.where(y == 1, p, 1 - p)
    focal = np.mean(-np.log(pt) * (1 - pt) ** 2)
    assert float(losses.SegmentationLoss("focal")(labels, logits)) == pytest.approx(focal, rel=1e-5)
    assert float(losses.SegmentationLoss("lovasz")(labels, logits)) == pytest.approx(_lovasz_hinge(z, y), rel=1e-5)


def _lovasz_grad(truth):
    total = truth.sum()
    intersection = total - np.cumsum(truth)
    union = total + np.cumsum(1 - truth)
    jaccard = 1 - intersection / union
    jaccard[1:] = jaccard[1:] - jaccard[:-1]
    return jaccard


def _lovasz_hinge(logits, labels):
    """Berman et al.'s Lovasz hinge, as their reference implementation computes it (flattened pixels)."""
    errors = 1 - logits * (2 * labels - 1)
    order = np.argsort(-errors, kind="stable")
    return float(np.dot(np.maximum(errors[order], 0), _lovasz_grad(labels[order].astype(float))))


def test_lovasz_softmax_matches_the_reference_with_the_ignore_label():
    rng = np.random.default_rng(1)
    logits = rng.normal(size=(2, 5, 6, 4)).astype("float32") * 2
    labels = rng.integers(0, 3, (2, 5, 6))  # class 3 absent: left out of the mean
    labels[1, :2] = 255
    valid = labels != 255
    probs = np.exp(logits) / np.exp(logits).sum(-1, keepdims=True)
    p, y = probs[valid], labels[valid]
    per_class = []
    for c in range(4):
        truth = (y == c).astype(float)
        if not truth.any():
            continue
        errors = np.abs(truth - p[:, c])
        order = np.argsort(-errors, kind="stable")
        per_class.append(np.dot(errors[order], _lovasz_grad(truth[order])))
    expected = float(np.mean(per_class))
    assert float(losses.SegmentationLoss("lovasz")(labels, logits)) == pytest.approx(expected, rel=1e-5)


def test_a_softmax_over_one_channel_is_refused_by_name(tmp_path):
    from kerasseg import models
    from export import tflite

    with pytest.raises(ValueError, match="softmax over one channel"):
        models.unet_tiny(classes=1, activation="softmax")
    pixels = keras.Input((16, 16, 3))
    model = keras.Model(pixels, keras.layers.Conv2D(1, 1, activation="softmax")(pixels), name="always_one")
    images = np.random.default_rng(0).integers(0, 255, (4, 16, 16, 3)).astype("float32")
    with pytest.raises(ValueError, match="always_one ends in a softmax over one channel"):
        tflite.export(model, tmp_path / "x.tflite", quantize="float32", validation=images)
    assert not (tmp_path / "x.tflite").exists()


def test_masks_painted_0_255_read_as_background_and_foreground(tmp_path, capsys):
    from kerasseg import evaluate, train
    from kerasseg.data.reading import read_mask

    folder, split = binary_folder(tmp_path / "kvasir", count=24, size=40, labels=None, painted=True)
    jpeg = np.asarray(Image.open(folder / "masks" / "p 003.jpg"))
    assert len(np.unique(jpeg)) > 2  # the ringing of a JPEG mask
    np.testing.assert_array_equal(read_mask(str(folder / "masks" / "p 003.jpg"), binary=True),
                                  (split.masks[3] > 0).astype(np.uint8))
    # as they are, the masks are refused: the foreground would be the ignore label; what to do is said
    code = run_main(train.main, "--dataset", f"folder:{folder}", "--model", "unet_tiny", "--image-size", "32",
                    "--epochs", "1", "--output", tmp_path / "refused")
    stderr = capsys.readouterr().err
    assert code == 2 and "are not PNG (p 000.jpg, ...)" in stderr and "--binary-masks" in stderr
    out = tmp_path / "run"
    assert run_main(train.main, "--dataset", f"folder:{folder}", "--binary-masks", "--model", "unet_tiny",
                    "--image-size", "32", "--epochs", "1", "--batch-size", "8", "--output", out) == 0
    report = json.loads((out / "metrics.json").read_text())
    assert report["classes"] == ["background", "foreground"] and "foreground_iou" in report
    assert json.loads((out / "run.json").read_text())["arguments"]["binary_masks"] is True
    capsys.readouterr()
    # evaluate reads them as the run did, from its record
    assert run_main(evaluate.main, out / "model.keras", "--output", tmp_path / "eval.json") == 0
    scored = json.loads((tmp_path / "eval.json").read_text())
    assert scored["miou"] == pytest.approx(report["miou"], abs=1e-6)


def test_evaluate_and_predict_decide_the_foreground_where_the_logit_is_above_0(binary_run, tmp_path, capsys):
    from kerasseg import evaluate, predict

    run, folder = binary_run
    assert run_main(evaluate.main, run.model_path, "--output", tmp_path / "eval.json") == 0
    scored = json.loads((tmp_path / "eval.json").read_text())
    assert scored["foreground_iou"] == pytest.approx(run.metrics["foreground_iou"], abs=1e-6)
    image = folder / "images" / f"{run.split_keys('val')[0]}.png"
    assert run_main(predict.main, run.model_path, image, "--native", "--output", tmp_path / "pred") == 0
    mask = np.asarray(Image.open(tmp_path / "pred" / f"{image.stem}_mask.png"))
    logits = run.load_model().predict_on_batch(np.asarray(Image.open(image))[None].astype("float32"))[0, ..., 0]
    np.testing.assert_array_equal(mask, (logits > 0).astype(np.uint8))
    assert 0 < mask.mean() < 1


def test_the_binary_bundle_segments_in_mediapipe(binary_run, tmp_path):
    from test_android import _read
    from export import android

    run, _ = binary_run
    out = tmp_path / "bundle"
    assert run_main(android.main, run.model_path, "--output", out, "--calibration-samples", "32") == 0
    labels, sample, expected, card = _read(out)
    assert labels == ["shape"] and set(np.unique(expected)) <= {0, 1}
    assert [c["name"] for c in card["classes"]] == ["background", "shape"]
    import mediapipe as mp
    from mediapipe.tasks.python import BaseOptions, vision

    options = vision.ImageSegmenterOptions(base_options=BaseOptions(model_asset_path=str(out / "segmenter.tflite")),
                                           output_category_mask=True, output_confidence_masks=True)
    with vision.ImageSegmenter.create_from_options(options) as segmenter:
        result = segmenter.segment(mp.Image(image_format=mp.ImageFormat.SRGB, data=np.ascontiguousarray(sample)))
        assert list(segmenter.labels) == ["shape"]
        category = result.category_mask.numpy_view().reshape(sample.shape[:2])
        confidence = result.confidence_masks[0].numpy_view().reshape(sample.shape[:2])
    assert 0 < expected.mean() < 1
    assert (category == np.where(expected == 1, 0, 255)).mean() >= 0.99  # MediaPipe: 0 foreground, 255 not
    assert ((confidence > 0.5) == (expected == 1)).mean() >= 0.99
