"""Quantization-aware training: the simulation is TFLite's arithmetic, the export keeps what was learned, and
the pixel normalization of VGG/ResNet ("caffe") survives int8."""

import json
import signal

import keras
import numpy as np
import pytest

from conftest import USER_CLASSES, run_cli
from kerasseg import layers, losses, models, qat
from kerasseg.layers.quantization import FakeQuant
from export import tflite


def _litert_outputs(content, images):
    """The file's dequantized outputs on `images`, and the output scale."""
    from ai_edge_litert.interpreter import Interpreter

    interpreter = Interpreter(model_content=bytes(content))
    interpreter.allocate_tensors()
    source, sink = interpreter.get_input_details()[0], interpreter.get_output_details()[0]
    scale, zero_point = sink["quantization"]
    outputs = []
    for image in images:
        interpreter.set_tensor(source["index"], image[None].astype(source["dtype"]))
        interpreter.invoke()
        outputs.append((interpreter.get_tensor(sink["index"]).astype(np.float32) - zero_point) * scale)
    return np.concatenate(outputs), scale


@pytest.mark.parametrize("mode", ["caffe", "torch", "tf", "unit"])
def test_int8_files_normalize_pixels_as_the_model_does(mode):
    # the bug: with ops.flip, TFLite's int8 REVERSE_V2 read every pixel p as (p - 83) * 1.485 ("caffe": VGG,
    # ResNet and every segmenter on them)
    image = keras.Input((8, 8, 3))
    # followed by a convolution (an identity here), as in every model: the bug needs the op after
    conv = keras.layers.Conv2D(3, 1, use_bias=False)
    model = keras.Model(image, conv(layers.PixelNormalization(mode)(image)))
    conv.set_weights([np.eye(3, dtype=np.float32).reshape(1, 1, 3, 3)])
    rng = np.random.default_rng(0)
    pixels = rng.integers(0, 256, (16, 8, 8, 3)).astype(np.float32)
    lite, scale = _litert_outputs(tflite.convert(model, "int8", (8, 8), pixels), pixels[:4])
    # within the rounding of its int8 ops (torch: 3 steps; the bug: off by up to 120 pixel values)
    assert np.abs(lite - model.predict(pixels[:4], verbose=0)).max() <= 4 * scale


# depthwise convolutions, ASPP and a decoder concatenation; VGG (caffe pixels) with transposed convolutions
@pytest.mark.parametrize("name", ["deeplab_v3_plus_tiny", "fcn8s_tiny"])
def test_every_family_trains_quantization_aware_and_its_int8_file_agrees(name):
    keras.utils.set_random_seed(0)
    rng = np.random.default_rng(0)
    images = rng.integers(0, 256, (8, 32, 32, 3)).astype(np.float32)
    model = qat.quantization_aware(models.create_model(name, classes=3), images)
    model.compile(optimizer=keras.optimizers.Adam(1e-4), loss=losses.SegmentationLoss("ce"))
    model.fit(images, rng.integers(0, 3, (8, 32, 32)), batch_size=8, epochs=1, verbose=0)
    lite, scale = _litert_outputs(tflite.convert(model, "int8", (32, 32), images), images)
    simulated = model.predict(images, verbose=0)
    # an untrained model's logits are near ties everywhere: measured 0.987-1.0 agreement, 0.3-2.5 steps of
    # mean error (LiteRT's own XNNPACK and reference kernels differ by 0.4 steps on such a file)
    assert (lite.argmax(-1) == simulated.argmax(-1)).mean() >= 0.98
    assert np.abs(lite - simulated).mean() < 4 * scale


def test_quantization_aware_cli_on_a_users_folder_exports_its_learned_ranges(user_run, tmp_path):
    run, folder = user_run
    out = tmp_path / "qat"
    # killed after its first epoch, then resumed: the second process rebuilds the same simulation
    result = run_cli("kerasseg.train", "--init-from", run / "model.keras", "--quantization-aware",
                     "--dataset", f"folder:{folder}", "--image-size", "32", "--epochs", "2", "--batch-size", "8",
                     "--lr", "1e-3", "--seed", "5", "--output", out, env={"KERASSEG_CRASH_AT": "history:0"})
    assert result.returncode == -signal.SIGKILL, result.stderr[-3000:]
    result = run_cli("kerasseg.train", "--output", out, "--resume")
    assert result.returncode == 0, result.stderr
    assert "resuming" in result.stdout and len((out / "history.csv").read_text().splitlines()) == 3
    metrics = json.loads((out / "metrics.json").read_text())
    assert metrics["quantization_aware"] and list(metrics["per_class_iou"]) == list(USER_CLASSES)
    assert metrics["epochs_run"] == 2
    model = keras.saving.load_model(out / "model.keras", compile=False)
    points = {layer.name: layer for layer in model.layers if isinstance(layer, FakeQuant)}
    head = points["head_logits_quant"]
    low, high = (float(keras.ops.convert_to_numpy(v)) for v in (head.range_min, head.range_max))

    path = tmp_path / "qat.tflite"
    result = run_cli("export.tflite", out / "model.keras", "--output", path, "--min-pixel-agreement", "0.9")
    assert result.returncode == 0, result.stderr
    report = json.loads((tmp_path / "qat.report.json").read_text())
    assert report["quantization_aware"] and report["dataset"] == f"folder:{folder}"
    from ai_edge_litert.interpreter import Interpreter

    interpreter = Interpreter(model_path=str(path))
    assert interpreter.get_input_details()[0]["quantization"] == (1.0, 0)
    # the logits' range is the one training learned (not recalibrated: the EMA moved it)
    assert interpreter.get_output_details()[0]["quantization"][0] == pytest.approx((high - low) / 255, rel=1e-5)
    images = np.stack([np.asarray(keras.utils.load_img(p, target_size=(32, 32)))
                       for p in sorted((folder / "images").iterdir())[:8]]).astype(np.float32)
    lite, scale = _litert_outputs(path.read_bytes(), images)
    assert np.abs(lite - model.predict(images, verbose=0)).mean() < scale


def test_quantization_aware_refusals(user_run, tmp_path, capsys):
    from kerasseg import cli, train
    from export import onnx

    def refused(main, *args):
        capsys.readouterr()
        assert cli.run(main, [str(a) for a in args]) == 2
        return capsys.readouterr().err

    run, folder = user_run
    assert "--init-from" in refused(train.main, "--quantization-aware", "--output", tmp_path / "a")
    assert "predicts 3 classes" in refused(train.main, "--init-from", run / "model.keras", "--quantization-aware",
                                           "--dataset", "shapes", "--output", tmp_path / "b")
    qat_run = tmp_path / "qat"
    qat_run.mkdir()
    for name in ("run.json", "splits"):
        (qat_run / name).symlink_to(run / name)
    images = np.zeros((2, 32, 32, 3), np.float32)
    qat.quantization_aware(keras.saving.load_model(run / "model.keras", compile=False), images).save(
        qat_run / "model.keras")
    for main, flags in ((onnx.main, []), (tflite.main, ["--keep-float", "head_logits"])):
        assert "quantization-aware" in refused(main, qat_run / "model.keras", "--output", tmp_path / "x.out", *flags)
        assert not (tmp_path / "x.out").exists()


def test_a_run_recorded_before_init_from_existed_still_resumes(user_run, tmp_path):
    from kerasseg import train

    run, _ = user_run
    record = json.loads((run / "run.json").read_text())
    for key in ("init_from", "quantization_aware"):
        record["arguments"].pop(key)
    (tmp_path / "run.json").write_text(json.dumps(record))
    args = train.parse_args(["--output", str(tmp_path), "--resume"])
    assert args.init_from is None and args.quantization_aware is False and args.seed == 3
