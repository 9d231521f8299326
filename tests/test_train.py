import csv
import json
import os
import platform
import re
import subprocess
import sys

import numpy as np
import pytest

import keras
import tensorflow as tf

from conftest import program_lines, run_main
from kerasseg import data, losses, metrics, models
from kerasseg.data.pipeline import make_dataset


def test_short_fit_lowers_the_loss():
    keras.utils.set_random_seed(0)
    split = data.load_split("shapes", "train", (32, 32), count=64)
    model = models.unet_tiny(classes=split.num_classes)
    model.compile(optimizer=keras.optimizers.Adam(0.01), loss=losses.cross_entropy(),
                  metrics=[metrics.mean_iou_metric(split.num_classes)])
    model.optimizer.build(model.trainable_variables)  # (the first step traced once: see kerasseg/training/_fitting.py)
    dataset = make_dataset(split, (32, 32), 16, shuffle=True, seed=0)
    before = model.evaluate(dataset, verbose=0, return_dict=True)["loss"]
    model.fit(dataset, epochs=8, verbose=0)
    after = model.evaluate(dataset, verbose=0, return_dict=True)["loss"]
    assert after < 0.7 * before, (before, after)


def test_ignore_label_pixels_add_no_loss():
    logits = np.random.default_rng(0).normal(size=(1, 2, 2, 3)).astype("float32")
    labels = np.array([[[0, 255], [2, 255]]])
    full = losses.cross_entropy()(labels, logits)
    kept = keras.losses.SparseCategoricalCrossentropy(from_logits=True)(
        np.array([[0, 2]]), logits[:, [0, 1], [0, 0]])
    assert float(full) == pytest.approx(float(kept), rel=1e-5)


def test_train_cli_writes_model_metrics_and_history(trained_run):
    model = keras.saving.load_model(trained_run / "model.keras")
    assert model.output_shape[-1] == 4
    report = json.loads((trained_run / "metrics.json").read_text())
    assert set(report["per_class_iou"]) == set(data.class_names("shapes"))
    assert report["image_size"] == [32, 32]
    # the metrics are the model's own: recompute on the validation split, as evaluation runs each image (at
    # 0.75-1.5 times the training scale, the probabilities resized back and averaged)
    val = data.load_split("shapes", "val", (32, 32))
    total = 0
    for side in (24, 32, 40, 48):
        images = tf.image.resize(val.images.astype("float32"), (side, side))
        logits = model.predict(tf.round(tf.clip_by_value(images, 0, 255)), verbose=0)
        total = total + tf.nn.softmax(tf.image.resize(logits, (32, 32))).numpy()
    cm = metrics.confusion_matrix(val.masks, total.argmax(-1), val.num_classes)
    # (within a few pixels decided apart on a near-tie by TensorFlow's float rounding and numpy's; one scale
    # alone is 5e-4 off)
    assert metrics.scores(cm, val.class_names)["miou"] == pytest.approx(report["miou"], abs=1e-4)
    with open(trained_run / "history.csv") as f:
        rows = list(csv.DictReader(f))
    assert [int(r["epoch"]) for r in rows] == [0, 1, 2]
    assert {"loss", "miou", "val_loss", "val_miou"} <= set(rows[0])
    assert float(rows[-1]["loss"]) < float(rows[0]["loss"])


@pytest.mark.parametrize("args, message", [
    (["--dataset", "mnist"], "unknown dataset 'mnist'; accepted: shapes"),
    (["--model", "unet_smal"], "Did you mean: unet"),
    (["--image-size", "0"], "image size must be N or HxW"),
    (["--image-size", "big"], "image size must be N or HxW"),
    (["--epochs", "-1"], "expected a positive integer"),
    (["--model-args", "{base_filters: 8}"], "--model-args: not valid JSON"),
    # known once the data is read (shapes: 4 classes), still before anything is written
    (["--model", "unet_tiny", "--class-weights", "1,2", "--epochs", "1", "--train-samples", "2"],
     "--class-weights [1.0, 2.0] has 2 values for 4 classes"),
    (["--model", "unet_tiny", "--model-args", '{"depth": 0}', "--epochs", "1", "--train-samples", "2"],
     "--model-args {'depth': 0} cannot build unet_tiny"),
])
def test_train_cli_bad_input_is_one_line_exit_2(args, message, tmp_path, capsys):
    from kerasseg import train

    assert run_main(train.main, "--output", tmp_path / "out", *args) == 2
    stderr = capsys.readouterr().err
    assert message in stderr
    assert "Traceback" not in stderr
    assert len(program_lines(stderr)) == 1
    assert not (tmp_path / "out").exists()


def test_a_trained_model_loads_with_plain_keras_after_import_kerasseg(trained_run):
    """model.keras holds its compiled loss (kerasseg's SegmentationLoss); `import kerasseg` is all it needs."""
    import subprocess
    import sys

    from conftest import ROOT

    code = ("import kerasseg, keras; m = keras.saving.load_model(r'%s'); print(type(m.loss).__name__)"
            % (trained_run / "model.keras"))
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, cwd=ROOT,
                            env={**__import__("os").environ, "PYTHONPATH": ROOT})
    assert result.returncode == 0, result.stderr[-2000:]
    assert result.stdout.strip().endswith("SegmentationLoss")


def test_train_from_python_returns_its_run_and_words_errors_in_values(tmp_path):
    """kerasseg.train.train(TrainConfig) -> Run: the run read once (scores, class names, split lists, its
    settings, its model carrying its labels); TrainConfig.resumed continues it; bad settings are ConfigErrors
    (ValueErrors) naming the setting and its value, raised before anything is written."""
    from kerasseg.train import ConfigError, TrainConfig, train

    path = tmp_path / "a run"
    run = train(TrainConfig(path, model="unet_tiny", image_size=32, epochs=1, train_samples=16, batch_size=8,
                            seed=2))
    names = ("background", "disc", "square", "triangle")
    assert run.class_names == names and run.metrics["epochs_run"] == 1 and run.metrics["seed"] == 2
    assert run.image_size == (32, 32) and run.arguments["seed"] == 2 and len(run.split_keys("train")) == 16
    model = run.load_model()
    assert model.class_names == names and model.image_size == (32, 32)

    resumed = TrainConfig.resumed(path, epochs=2)  # epochs may grow (the resumed training: tests/test_resume.py)
    assert resumed.seed == 2 and resumed.resume and resumed.image_size == (32, 32) and resumed.epochs == 2
    with pytest.raises(ConfigError, match=re.escape("image_size=(48, 48) contradicts")):
        TrainConfig.resumed(path, image_size=48)
    for settings, message in [({"epochs": 0}, "epochs=0 must be a positive integer"),
                              ({"model": "vgg16"}, "model='vgg16' cannot be used: 'vgg16' is a classifier"),
                              ({"quantization_aware": True}, "quantization_aware=True fine-tunes a trained float "
                                                             "model: give it as init_from"),
                              ({"qat_calibration": "percentile"}, "qat_calibration='percentile' sets where "
                                                                  "quantization-aware training's ranges start: add "
                                                                  "quantization_aware"),
                              ({"qat_calibration": "mse", "quantization_aware": True, "init_from": "m.keras"},
                               "qat_calibration='mse' is not one of minmax, percentile"),
                              ({"augment": "lots"}, "augment='lots' is not one of full, flip, none")]:
        with pytest.raises(ConfigError, match=re.escape(message)):
            TrainConfig(tmp_path / "b", **settings)
    missing = str(tmp_path / "missing.keras")
    with pytest.raises(ValueError, match=re.escape(f"init_from={missing!r} is not a file")):
        train(TrainConfig(tmp_path / "b", model="unet_tiny", image_size=32, init_from=missing, train_samples=8))
    with pytest.raises(ConfigError, match="holds another run: continue it \\(resume=True\\)"):
        train(TrainConfig(path, model="unet_tiny", image_size=32, epochs=1))
    assert not (tmp_path / "b").exists() and run.metrics["epochs_run"] == 1


@pytest.mark.parametrize("imports, setting, kernels", [
    ("import kerasseg", None, True),
    ("import export.tflite", None, True),
    ("import kerasseg", "0", False),  # the user's own setting wins
    ("import tensorflow, kerasseg, os; print(os.environ.get('TF_ENABLE_ONEDNN_OPTS'))", None, None),  # too late
])
@pytest.mark.skipif(platform.machine().lower() not in ("x86_64", "amd64"), reason="kerasseg sets it on x86 only")
def test_importing_kerasseg_before_tensorflow_runs_onednns_cpu_kernels(imports, setting, kernels):
    """On Linux TensorFlow turns oneDNN on by itself only on CPUs with AVX-512 VNNI or BF16, AVX-VNNI or AMX;
    on the others kerasseg does (a training step of the demo's U-Net 1.3-1.8 times as fast, a DeepLab v3+ on
    MobileNetV2's about 5 times: docs/training.md)."""
    env = {name: value for name, value in os.environ.items() if name != "TF_ENABLE_ONEDNN_OPTS"}
    if setting is not None:
        env["TF_ENABLE_ONEDNN_OPTS"] = setting
    code = f"{imports}\nimport tensorflow\nfrom export.internals import onednn_kernels\nprint(onednn_kernels())"
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, env=env, timeout=300)
    assert result.returncode == 0, result.stderr[-2000:]
    if kernels is None:  # imported after TensorFlow: the variable left unset, not saying what TensorFlow did not do
        assert result.stdout.split()[0] == "None"
    else:
        assert result.stdout.split()[-1] == str(kernels)
