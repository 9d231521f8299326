"""A segmenter trained on JAX exports, from the command line and from Python, as it does under TensorFlow: the
conversion and the check run in a TensorFlow child process (export.backend), and the report is the same."""

import json

import numpy as np
import pytest

import keras

from conftest import run_cli
from helpers import NOT_ON_JAX

ON_JAX = pytest.mark.skipif(keras.backend.backend() != "jax", reason="the JAX backend in this process (make test's "
                                                                      "JAX run)")


@NOT_ON_JAX  # (it starts its JAX processes itself)
def test_a_model_trained_on_jax_exports_from_the_jax_command_line_as_under_tensorflow(tmp_path):
    jax = {"KERAS_BACKEND": "jax"}
    run = tmp_path / "run"
    result = run_cli("kerasseg.train", "--model", "unet_tiny", "--image-size", "32", "--epochs", "2",
                     "--train-samples", "128", "--lr", "0.01", "--augment", "flip", "--output", run, env=jax)
    assert result.returncode == 0, result.stderr[-3000:]
    reports = {}
    for backend, name in (("jax", "from_jax"), ("tensorflow", "from_tf")):
        result = run_cli("export.tflite", run / "model.keras", "--quantize", "int8", "--calibration-samples", "32",
                         "--samples", "16", "--output", tmp_path / f"{name}.tflite", env={"KERAS_BACKEND": backend})
        assert result.returncode == 0, result.stderr[-3000:]  # (the old code: a traceback under JAX)
        reports[backend] = json.loads((tmp_path / f"{name}.report.json").read_text())
    assert reports["jax"]["passed"]
    for key in ("pixel_agreement", "max_abs_error", "miou_reference", "miou_exported", "size_bytes"):
        assert reports["jax"][key] == reports["tensorflow"][key], key
    result = run_cli("export.onnx", run / "model.keras", "--samples", "16", "--output", tmp_path / "m.onnx", env=jax)
    assert result.returncode == 0, result.stderr[-3000:]
    assert json.loads((tmp_path / "m.report.json").read_text())["passed"]


@ON_JAX
def test_the_python_api_exports_a_model_built_and_trained_on_jax(tmp_path):
    from kerasseg import describe, losses, models
    from kerasseg.data import shapes
    from export import onnx, tflite

    images, masks = shapes.load("train", 32, 32, 128)
    test_images, test_masks = shapes.load("test", 32, 32, 16)
    keras.utils.set_random_seed(0)
    model = models.unet_tiny(classes=4)
    model.compile(optimizer=keras.optimizers.Adam(0.01), loss=losses.SegmentationLoss("ce"))
    model.fit(images.astype("float32"), masks, batch_size=16, epochs=2, verbose=0)
    model = describe(model, class_names=shapes.CLASS_NAMES, image_size=32)
    import tensorflow as tf

    pipeline = tf.data.Dataset.from_tensor_slices((test_images, test_masks)).batch(4)  # (read here, sent as arrays)
    report = tflite.export(model, tmp_path / "m.tflite", quantize="int8", calibration=images[:32], validation=pipeline)
    assert report.passed and report.samples == 16 and report["model"] == model.name
    assert report.miou_reference == pytest.approx(report.miou_exported, abs=0.01)
    assert json.loads((tmp_path / "m.report.json").read_text())["model"] == model.name
    report = onnx.export(model, tmp_path / "m.onnx", validation=(test_images, test_masks))
    assert report.passed and report.max_abs_error < 1e-4
    with pytest.raises(ValueError, match="did you mean 'pixel_agreement'"):  # the child's refusal, raised here
        tflite.export(model, tmp_path / "x.tflite", quantize="float32", validation=test_images,
                      thresholds={"pixel_agrement": 0.5})
    assert np.isfinite(report.pixel_agreement)
