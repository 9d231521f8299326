"""The Android / Coral bundle: the committed android_demo_assets in MediaPipe, and export.android itself."""

import json
import pathlib

import numpy as np
from PIL import Image

from conftest import ROOT, USER_CLASSES, run_cli, run_main
from export.android import FILES

ASSETS = pathlib.Path(ROOT) / "android_demo_assets"


def _category_mask(model_path, image):
    """MediaPipe's ImageSegmenter (the C++ task Android runs) on `image`: its labels and class mask."""
    import mediapipe as mp
    from mediapipe.tasks.python import BaseOptions, vision

    options = vision.ImageSegmenterOptions(base_options=BaseOptions(model_asset_path=str(model_path)),
                                           output_category_mask=True, output_confidence_masks=False)
    segmenter = vision.ImageSegmenter.create_from_options(options)
    try:
        result = segmenter.segment(mp.Image(image_format=mp.ImageFormat.SRGB, data=np.ascontiguousarray(image)))
        return list(segmenter.labels), result.category_mask.numpy_view().reshape(image.shape[:2]).copy()
    finally:
        segmenter.close()


def _read(folder):
    labels = (folder / "labels.txt").read_text().splitlines()
    sample = np.asarray(Image.open(folder / "sample.png").convert("RGB"))
    expected = np.asarray(Image.open(folder / "sample_expected_mask.png"))
    return labels, sample, expected, json.loads((folder / "model_card.json").read_text())


def test_committed_assets_segment_in_mediapipe_with_their_labels():
    assert all((ASSETS / name).is_file() for name in FILES)
    labels, sample, expected, card = _read(ASSETS)
    assert [c["name"] for c in card["classes"]] == labels
    assert (card["input"]["height"], card["input"]["width"]) == sample.shape[:2] == expected.shape
    assert card["agreement"]["passed"] and card["edgetpu_static_check"]["fully_mapped"]
    from ai_edge_litert.interpreter import Interpreter  # (run by name on Android: runSignature)

    signatures = Interpreter(model_path=str(ASSETS / "segmenter.tflite")).get_signature_list()
    assert signatures == {"serving_default": {"inputs": ["image"], "outputs": ["logits"]}}

    read_labels, mask = _category_mask(ASSETS / "segmenter.tflite", sample)
    assert read_labels == labels  # from the file's TENSOR_AXIS_LABELS metadata
    assert (mask == expected).mean() >= 0.99
    # other sizes than the model's: MediaPipe resizes the frame in and the mask back out (interpolating
    # the scores, so boundaries move by a pixel); at the centre of each enlarged pixel the class is kept
    for factor in (2, 3):
        large = sample.repeat(factor, axis=0).repeat(factor, axis=1)
        _, mask = _category_mask(ASSETS / "segmenter.tflite", large)
        assert mask.shape == large.shape[:2]
        assert (mask[factor // 2 :: factor, factor // 2 :: factor] == expected).mean() >= 0.99


def test_export_android_writes_the_bundle_or_nothing(user_run, tmp_path, capsys):
    """On a well-trained model of a user's folder, held to the default thresholds: what MediaPipe computes on
    the device is what the Keras model predicts."""
    from export import android

    run, _ = user_run
    out = tmp_path / "assets"
    args = [run / "model.keras", "--output", out, "--calibration-samples", "16"]
    assert run_main(android.main, *args, "--max-abs-error", "0") == 1  # (no int8 file's logits are exact)
    err = capsys.readouterr().err
    assert "max_abs_error" in err and f"nothing written to {out}" in err
    assert not out.exists()  # (not even an empty folder)

    result = run_cli("export.android", *args)
    assert result.returncode == 0, result.stderr
    assert sorted(p.name for p in out.iterdir()) == sorted(FILES)
    labels, sample, expected, card = _read(out)
    assert labels == list(USER_CLASSES) and card["agreement"]["passed"]
    assert card["input"] == {"height": 32, "width": 32, "channels": "RGB", "type": "uint8", "range": [0, 255],
                             "normalization": "none: the model takes pixels"}
    assert [c["name"] for c in card["classes"]] == labels
    read_labels, mask = _category_mask(out / "segmenter.tflite", sample)
    assert read_labels == labels  # the run's class names, in the file's own metadata
    assert (mask == expected).mean() >= 0.99
    from ai_edge_litert.interpreter import Interpreter  # (the signature survives the metadata)

    signatures = Interpreter(model_path=str(out / "segmenter.tflite")).get_signature_list()
    assert signatures == {"serving_default": {"inputs": ["image"], "outputs": ["logits"]}}
    readme = (out / "README.md").read_text()
    assert "ImageSegmenter" in readme and "pycoral" in readme


def test_a_model_copied_out_of_its_run_exports_with_its_own_labels_and_size(user_run, tmp_path, capsys):
    """model.keras carries its class names and training size: a copy far from run.json, given another folder
    (one without labels.txt, whose classes are only numbered), still makes a bundle labelled as the run was,
    at the training size; plain keras.saving.load_model gives them back too."""
    import shutil

    import keras

    from export import android

    run, folder = user_run
    moved = tmp_path / "sent by mail" / "model.keras"
    moved.parent.mkdir()
    shutil.copy(run / "model.keras", moved)
    other = tmp_path / "other folder"
    shutil.copytree(folder, other)
    (other / "labels.txt").unlink()
    loaded = keras.saving.load_model(moved)
    assert loaded.class_names == USER_CLASSES and loaded.image_size == (32, 32)

    out = tmp_path / "bundle"
    assert run_main(android.main, moved, "--output", out, "--dataset", f"folder:{other}",
                    "--calibration-samples", "16", "--samples", "16") == 0
    # the folder's photos are of other sizes: said once (it was said twice, the bundle checking them again)
    assert capsys.readouterr().err.count("held-out images (folder:") == 1
    labels, _, _, card = _read(out)
    assert labels == list(USER_CLASSES) and [c["name"] for c in card["classes"]] == labels
    assert (card["input"]["height"], card["input"]["width"]) == (32, 32)
    assert _category_mask(out / "segmenter.tflite", np.zeros((32, 32, 3), np.uint8))[0] == labels
