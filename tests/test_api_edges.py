"""The Python API at its edges, as a new user meets them with their own values: endless pipelines, TFDS-style
dicts, values in the wrong range, misspelt thresholds, files that cannot be written, NaN pixels, masks that
count nothing; each refused in one InputError before any work, or handled as the command lines handle it."""

import json
import os
import subprocess
import sys

import numpy as np
import pytest

import keras

from conftest import ROOT, run_main
from kerasseg import data, models


@pytest.fixture(scope="module")
def model():
    keras.utils.set_random_seed(0)
    return models.unet_tiny(classes=4)


@pytest.fixture(scope="module")
def shapes():
    return data.load_split("shapes", "test", (32, 32), count=64)


def _dataset(shapes):
    import tensorflow as tf

    return tf.data.Dataset.from_tensor_slices((shapes.images, shapes.masks))


def test_an_endless_pipeline_is_capped_with_a_note_and_all_of_it_refused(model, shapes, tmp_path, capsys):
    from kerasseg import qat
    from export import tflite

    endless = _dataset(shapes).repeat().batch(8)  # (the old code read it until memory ran out)
    report = tflite.export(model, tmp_path / "m.tflite", quantize="int8", validation=endless, calibration=endless)
    assert report.samples == 50 and report["calibration_samples"] == 200
    err = capsys.readouterr().err
    assert "validation: the tf.data pipeline never ends (repeat()): its first 50 samples are used" in err
    assert "calibration: the tf.data pipeline never ends (repeat()): its first 200 samples" in err
    with pytest.raises(ValueError, match="never ends"):
        tflite.export(model, tmp_path / "n.tflite", quantize="float32", validation=endless, samples="all")
    assert not (tmp_path / "n.tflite").exists()
    qat.quantization_aware(model, endless)  # (the old code: TypeError: The dataset is infinite.)


def test_tfds_style_dicts_keep_their_masks(model, shapes, tmp_path):
    import tensorflow as tf

    from export import tflite

    pets = tf.data.Dataset.from_tensor_slices({"image": shapes.images, "segmentation_mask": shapes.masks[..., None],
                                               "label": np.zeros(len(shapes.images), np.int64)})
    report = tflite.export(model, tmp_path / "m.tflite", quantize="float32", validation=pets)
    assert report.miou_reference is not None  # (the old code: None, "the samples have no masks")


def test_qat_calibration_is_read_and_checked_as_the_exporters_do(model, shapes):
    from kerasseg import qat

    with pytest.raises(ValueError, match=r"values lie in \[0, 1\]"):  # (the old code accepted it)
        qat.quantization_aware(model, shapes.images / 255.0)
    with pytest.raises(ValueError, match="grayscale"):
        qat.quantization_aware(model, shapes.images[..., 0])
    from kerasseg import describe

    described = describe(model, image_size=32)  # (a dataset spec is read at the size the model carries)
    for value in (_dataset(shapes).batch(4), "shapes", iter(shapes.images)):  # (the old code: arrays only)
        assert qat.is_quantization_aware(qat.quantization_aware(described, value))


def test_thresholds_sizes_and_outputs_are_checked_before_converting(model, shapes, tmp_path, capsys, trained_run):
    from export import tflite

    for thresholds, message in (({"pixel_agrement": 0.5}, "did you mean 'pixel_agreement'"),
                                (0.9, "must be a dict"), ({"pixel_agreement": 1.5}, "from 0 to 1")):
        with pytest.raises(ValueError, match=message):
            tflite.export(model, tmp_path / "t.tflite", quantize="float32", validation=shapes, thresholds=thresholds)
        assert "converting" not in capsys.readouterr().out and not (tmp_path / "t.tflite").exists()
    assert tflite.export(model, tmp_path / "s.tflite", quantize="float32", validation=shapes,
                         image_size=48)["image_size"] == [48, 48]  # (the old code: TypeError)
    (tmp_path / "u.report.json").mkdir()  # the report's place is taken: refused before the work, not after it
    with pytest.raises(ValueError, match="u.report.json is a folder"):
        tflite.export(model, tmp_path / "u.tflite", quantize="float32", validation=shapes)
    assert not (tmp_path / "u.tflite").exists()
    code = run_main(tflite.main, trained_run / "model.keras", "--output", tmp_path / "c.tflite",
                    "--min-pixel-agreement", "1.5")
    stderr = capsys.readouterr().err
    assert code == 2 and "pixel_agreement=1.5 must be a number from 0 to 1" in stderr and "Traceback" not in stderr


def test_nan_pixels_are_refused_naming_the_image(model, shapes, tmp_path):
    from export import tflite

    images = shapes.images[:8].astype(np.float32)
    images[2, 3, 4, 1] = np.nan
    with pytest.raises(ValueError, match="validation: image 2 holds 1 NaN or infinite values"):
        tflite.export(model, tmp_path / "v.tflite", quantize="float32", validation=images)
    with pytest.raises(ValueError, match="calibration: image 2 holds 1 NaN"):
        tflite.export(model, tmp_path / "c.tflite", quantize="int8", validation=shapes, calibration=images)


def test_masks_that_count_no_pixel_are_refused_and_reports_stay_json(model, shapes, tmp_path):
    from kerasseg import files, metrics
    from export import tflite

    ignored = np.full(shapes.masks.shape, 255, np.uint8)
    with pytest.raises(ValueError,
                       match=r"every pixel of the 50 masks \(given images and masks\) is the ignore label 255"):
        tflite.export(model, tmp_path / "f.tflite", quantize="float16", validation=(shapes.images, ignored),
                      thresholds={"miou_drop": 0.5})
    nothing = metrics.scores(np.zeros((4, 4)), shapes.class_names)
    assert json.loads(files.json_text(nothing))["miou"] is None  # (the old report: a bare NaN, not JSON)


def test_a_threshold_the_user_set_that_cannot_be_measured_fails(model, tmp_path):
    """Masks of another dataset's classes: the mIoU is not computed, and a mIoU threshold asked for fails."""
    from export import tflite

    other = data.load_split("shapes:hard", "test", (32, 32), count=8)  # 9 classes, the model's 4
    report = tflite.export(model, tmp_path / "o.tflite", quantize="float16", validation=other)
    assert report.passed and report.miou_reference is None
    report = tflite.export(model, tmp_path / "o.tflite", quantize="float16", validation=other,
                           thresholds={"miou_drop": 0.5})
    assert not report.passed and report.failed[0].startswith("miou_drop not measured")


def test_one_sample_and_files_that_are_not_what_they_say(model, shapes, tmp_path):
    from kerasseg import files
    from kerasseg.train import ConfigError, TrainConfig
    from export import tflite

    report = tflite.export(model, tmp_path / "one.tflite", quantize="float32",
                           validation=(shapes.images[0], shapes.masks[0]))  # (the old code: "image 1" of shape ...)
    assert report.samples == 1 and report.miou_reference is not None
    (tmp_path / "notes.keras").write_text("not a model")
    with pytest.raises(ValueError, match="notes.keras is not a Keras model file: a .keras file is a zip archive"):
        files.load_keras_model(tmp_path / "notes.keras")  # (the old code: "File not found")
    run = tmp_path / "run"
    (run / "splits").mkdir(parents=True)
    (run / "run.json").write_text(json.dumps({"arguments": TrainConfig(run).recorded(), "class_names": ["a"]}))
    with pytest.raises(ConfigError, match=r"epoch=3 is not a setting of a training run \(did you mean epochs\?\)"):
        TrainConfig.resumed(run, epoch=3)  # (the old code: "... leave {epoch} out")


def test_errors_of_classes_and_sizes_are_worded_in_values(tmp_path):
    from kerasseg.train import ConfigError, TrainConfig, train
    from export import tflite

    with pytest.raises(ConfigError, match=r"^classes=5 disagrees with dataset 'shapes', which names 4 classes"):
        train(TrainConfig(tmp_path / "r", model="unet_tiny", classes=5, epochs=1))  # (the old code: --classes 5)
    pixels = keras.Input((None, None, 3))
    half = keras.layers.UpSampling2D()(keras.layers.MaxPooling2D()(pixels))
    skip = keras.Model(pixels, keras.layers.Conv2D(2, 1)(keras.layers.Concatenate()([pixels, half])), name="skip")
    with pytest.raises(ValueError, match="skip cannot run on a 97x131 image"):  # (the old code: "output smaller")
        tflite.export(skip, tmp_path / "k.tflite", quantize="float32", image_size=(97, 131),
                      validation=np.zeros((2, 97, 131, 3), np.uint8))


def test_an_unknown_model_is_answered_with_the_segmenters(tmp_path, capsys):
    from kerasseg import train

    assert run_main(train.main, "--model", "resnet50", "--output", tmp_path / "r") == 2
    stderr = capsys.readouterr().err
    assert "'resnet50' is a classifier; accepted segmenters:" in stderr
    assert "resnet18" not in stderr and "unet_edge" in stderr  # (the old code listed the classifiers too)


# A sitecustomize that makes importing TensorFlow fail: a --help that needs it fails too
NO_TENSORFLOW = """
import sys
class _NoTensorFlow:
    def find_spec(self, name, path=None, target=None):
        if name == "tensorflow" or name.startswith("tensorflow.") or name == "keras":
            print(f"BLOCKED: {name} imported by --help", file=sys.stderr)  # (said even where a caller swallows it)
            raise ImportError(f"{name} imported by --help")
sys.meta_path.insert(0, _NoTensorFlow())
"""


@pytest.mark.parametrize("command", ["kerasseg.train", "kerasseg.evaluate", "kerasseg.predict", "export.tflite",
                                     "export.onnx", "export.android", "export.agreement"])
def test_help_answers_without_importing_tensorflow(command, tmp_path):
    (tmp_path / "sitecustomize.py").write_text(NO_TENSORFLOW)
    result = subprocess.run([sys.executable, "-m", command, "--help"], capture_output=True, text=True, cwd=ROOT,
                            env={**os.environ, "PYTHONPATH": f"{tmp_path}{os.pathsep}{ROOT}"}, timeout=120)
    assert result.returncode == 0, result.stderr[-2000:]
    assert "BLOCKED" not in result.stderr, result.stderr[-2000:]
    assert "usage: python -m " + command in result.stdout
    if command == "export.tflite":  # --quantize, --output-kind and --calibration-samples say what they are
        text = " ".join(result.stdout.split())
        for words in ("how the file is quantized", "what the file outputs", "training images to calibrate int8 on"):
            assert words in text, words


def test_fewer_samples_than_asked_for_are_said(model, shapes, tmp_path, capsys):
    """`samples=30` (--samples 30) where 10 exist: all 10 are used, and a note says so (the old code, nothing)."""
    from export import tflite

    report = tflite.export(model, tmp_path / "m.tflite", quantize="float32", samples=30,
                           validation=(shapes.images[:10], shapes.masks[:10]))
    assert report.samples == 10
    assert "validation: 30 samples asked for, and given images and masks has 10: all 10 are used" in \
        capsys.readouterr().err
    tflite.export(model, tmp_path / "m.tflite", quantize="float32", samples=8, validation=(shapes.images[:10],
                                                                                           shapes.masks[:10]))
    assert "asked for" not in capsys.readouterr().err


def test_an_unknown_io_or_calibration_method_is_refused_in_values_before_converting(model, shapes, tmp_path, capsys):
    """The Python API's options no command line can give (its choices= refuse them there): the old code
    converted, then failed with a bare KeyError."""
    from export import onnx, tflite

    with pytest.raises(ValueError, match=r"io='uint16' is not one of uint8, int8, float32"):
        tflite.export(model, tmp_path / "t.tflite", quantize="int8", io="uint16", validation=shapes,
                      calibration=shapes)
    with pytest.raises(ValueError, match=r"calibration_method='kl' is not one of percentile, minmax, entropy"):
        onnx.export(model, tmp_path / "o.onnx", quantize="int8", calibration_method="kl", validation=shapes,
                    calibration=shapes)
    assert "converting" not in capsys.readouterr().out
    assert not list(tmp_path.iterdir())
