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


@pytest.mark.large
@NOT_ON_JAX  # (it starts its JAX processes itself)
def test_a_model_trained_on_jax_exports_from_the_jax_command_line_as_under_tensorflow(tmp_path):
    from awkward_folders import write_awkward_folder

    jax = {"KERAS_BACKEND": "jax"}
    run = tmp_path / "run"
    write_awkward_folder(tmp_path / "plots", count=48)  # (a model trained well: validation mIoU about 0.93,
    # whose int8 file is held to 0.99 without near-tied pixels deciding the verdict)
    result = run_cli("kerasseg.train", "--model", "unet_tiny", "--model-args", '{"base_filters": 8}', "--dataset",
                     f"folder:{tmp_path / 'plots'}", "--image-size", "32", "--epochs", "15", "--batch-size", "8",
                     "--lr", "0.01", "--augment", "flip", "--seed", "3", "--output", run, env=jax)
    assert result.returncode == 0, result.stderr[-3000:]
    reports = {}
    for backend, name in (("jax", "from_jax"), ("tensorflow", "from_tf")):
        result = run_cli("export.tflite", run / "model.keras", "--quantize", "int8", "--calibration-samples", "32",
                         "--output", tmp_path / f"{name}.tflite", env={"KERAS_BACKEND": backend})
        assert result.returncode == 0, result.stderr[-3000:]  # (the old code: a traceback under JAX)
        reports[backend] = json.loads((tmp_path / f"{name}.report.json").read_text())
    assert reports["jax"]["passed"]
    for key in ("pixel_agreement", "max_abs_error", "miou_reference", "miou_exported", "size_bytes"):
        assert reports["jax"][key] == reports["tensorflow"][key], key
    result = run_cli("export.onnx", run / "model.keras", "--output", tmp_path / "m.onnx", env=jax)
    assert result.returncode == 0, result.stderr[-3000:]
    assert json.loads((tmp_path / "m.report.json").read_text())["passed"]


@ON_JAX
def test_the_python_api_exports_a_model_built_and_trained_on_jax(tmp_path, capfd):
    from awkward_folders import CLASSES, write_awkward_folder

    from kerasseg import data, describe, losses, models
    from export import onnx, tflite

    write_awkward_folder(tmp_path / "plots", count=48)
    train, test = (data.load_split(f"folder:{tmp_path / 'plots'}", split, (32, 32)) for split in ("train", "test"))
    keras.utils.set_random_seed(3)
    model = models.unet_tiny(classes=len(CLASSES), base_filters=8)
    model.compile(optimizer=keras.optimizers.Adam(0.01), loss=losses.SegmentationLoss("ce"))
    model.fit(train.images.astype("float32"), train.masks, batch_size=8, epochs=40, verbose=0)
    model = describe(model, class_names=CLASSES, image_size=32)
    import tensorflow as tf

    pipeline = tf.data.Dataset.from_tensor_slices((test.images, test.masks)).batch(2)  # (read here, sent as arrays)
    report = tflite.export(model, tmp_path / "m.tflite", quantize="int8", calibration=train.images, validation=pipeline)
    assert report.passed and report.samples == len(test) and report["model"] == model.name, report.failed
    said = capfd.readouterr().out  # (the TensorFlow child's lines name the model, not the file it went there as)
    assert f"converting {model.name} to m.tflite" in said and ".keras" not in said, said
    assert report.miou_reference > 0.8
    assert json.loads((tmp_path / "m.report.json").read_text())["model"] == model.name
    test_images, test_masks = test.images, test.masks
    report = onnx.export(model, tmp_path / "m.onnx", validation=(test_images, test_masks))
    assert report.passed and report.max_abs_error < 1e-4
    with pytest.raises(ValueError, match="did you mean 'pixel_agreement'"):  # the child's refusal, raised here
        tflite.export(model, tmp_path / "x.tflite", quantize="float32", validation=test_images,
                      thresholds={"pixel_agrement": 0.5})
    assert np.isfinite(report.pixel_agreement)
