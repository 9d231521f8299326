import json
import os

import numpy as np
import pytest

import keras

from conftest import COMPILER_LOGS, run_cli, run_main
from kerasseg import resolve
from export import report as reports

REPORT_KEYS = {"runtime", "quantization", "samples", "max_abs_error", "mean_abs_error", "pixel_agreement",
               "miou_reference", "miou_exported", "miou_drop", "size_bytes", "thresholds", "passed"}


def _independent_agreement(model_path, exported_path, samples):
    """Pixel agreement and max error recomputed here, straight from the runtimes' APIs."""
    model = keras.saving.load_model(model_path)
    images = samples.images.astype("float32")
    reference = model.predict(images, verbose=0)
    if exported_path.suffix == ".onnx":
        import onnxruntime as ort

        session = ort.InferenceSession(str(exported_path), providers=["CPUExecutionProvider"])
        name = session.get_inputs()[0].name
        out = np.stack([session.run(None, {name: image[None]})[0][0] for image in images])
    else:
        from ai_edge_litert.interpreter import Interpreter

        interpreter = Interpreter(model_path=str(exported_path))
        interpreter.allocate_tensors()
        inp, outp = interpreter.get_input_details()[0], interpreter.get_output_details()[0]
        out = []
        for image in samples.images:
            x = image[None] if inp["dtype"] == np.uint8 else image[None].astype("float32")
            interpreter.set_tensor(inp["index"], x)
            interpreter.invoke()
            y = interpreter.get_tensor(outp["index"])[0]
            if outp["dtype"] == np.uint8:
                scale, zero = outp["quantization"]
                y = (y.astype("float32") - zero) * scale
            out.append(y)
        out = np.stack(out)
    return (reference.argmax(-1) == out.argmax(-1)).mean(), np.abs(reference - out).max()


@pytest.mark.parametrize("module, quantize, suffix", [
    ("export.tflite", "float32", ".tflite"),
    ("export.tflite", "float16", ".tflite"),
    ("export.tflite", "dynamic", ".tflite"),
    ("export.tflite", "int8", ".tflite"),
    ("export.tflite", "int16x8", ".tflite"),
    ("export.onnx", None, ".onnx"),
])
def test_export_runs_in_its_runtime_and_report_is_true(user_run, tmp_path, module, quantize, suffix, run_here):
    """On the well-trained model of a user's folder (the barely trained `trained_run`'s near-tied pixels put
    int8's agreement on either side of 0.99 from one training to the next)."""
    model_path = user_run[0] / "model.keras"
    output = tmp_path / f"model{suffix}"
    args = [module, model_path, "--output", output, "--samples", "12"]
    if quantize:
        args += ["--quantize", quantize, "--calibration-samples", "32"]
    result = run_here(*args, *(["--latency"] if quantize == "int8" else []))
    report = json.loads((tmp_path / "model.report.json").read_text())
    assert REPORT_KEYS <= set(report)
    # every mode passes its default thresholds on this model (the tests that a wrong file fails them:
    # tests/test_wrong_files.py)
    assert result.returncode == 0 and report["passed"], (report["failed"], result.stderr)
    # latency is timed only when asked (--latency): the suite's exports need not time 20 runs of each
    assert (report["latency_ms"] is None) == (quantize != "int8") and (report["keras_latency_ms"] is None) == \
        (quantize != "int8")
    assert report["quantization"] == (quantize or "float32")
    assert report["runtime"] == ("onnxruntime" if suffix == ".onnx" else "litert")
    samples = resolve.data_view(model_path).load_split("test", (32, 32), 12)  # the run's own held-out images
    assert report["samples"] == len(samples) and report["size_bytes"] == os.path.getsize(output)
    assert report["image_size"] == [32, 32]  # from metrics.json beside the model
    # the thresholds are the documented defaults and `passed` is their verdict
    assert report["thresholds"] == reports.DEFAULT_THRESHOLDS[report["quantization"]]
    assert report["passed"] == (not reports.check(report, report["thresholds"]))
    pixel_agreement, max_error = _independent_agreement(model_path, output, samples)
    assert report["pixel_agreement"] == pytest.approx(pixel_agreement, abs=1e-9)
    assert report["max_abs_error"] == pytest.approx(max_error, rel=1e-3, abs=1e-6)
    assert report["miou_drop"] == pytest.approx(100 * (report["miou_reference"] - report["miou_exported"]))
    if quantize == "int16x8":  # 16-bit activations, 8-bit weights, float pixels in
        interpreter = _litert(output)
        types = {np.dtype(t["dtype"]) for t in interpreter.get_tensor_details()}
        assert {np.dtype(np.int16), np.dtype(np.int8)} <= types
        assert interpreter.get_input_details()[0]["dtype"] == np.float32
        # its weights are int8's, so what 16-bit activations buy is a smaller logit error than int8's on the
        # same images
        int8 = tmp_path / "int8.tflite"
        assert run_here(*args[:3], int8, "--samples", "12", "--quantize", "int8", "--calibration-samples", "32"
                        ).returncode == 0
        int8_report = json.loads((tmp_path / "int8.report.json").read_text())
        assert report["mean_abs_error"] < int8_report["mean_abs_error"]
    if quantize == "int8":
        from ai_edge_litert.interpreter import Interpreter

        interpreter = Interpreter(model_path=str(output))
        detail = interpreter.get_input_details()[0]
        assert detail["dtype"] == np.uint8 and tuple(detail["shape"]) == (1, 32, 32, 3)
        assert detail["quantization"] == (1.0, 0)  # camera pixels go in exactly
        assert interpreter.get_output_details()[0]["dtype"] == np.uint8


def test_failed_threshold_exits_1_names_it_and_keeps_the_file(trained_run, tmp_path, run_here):
    # (a threshold no quantized file meets: its logits equal the model's; the check catching a genuinely
    # wrong file is tests/test_wrong_files.py's)
    output = tmp_path / "strict.tflite"
    result = run_here("export.tflite", trained_run / "model.keras", "--quantize", "dynamic", "--output", output,
                     "--samples", "4", "--max-abs-error", "0")
    assert result.returncode == 1
    assert "max_abs_error" in result.stderr and "> 0" in result.stderr
    report = json.loads((tmp_path / "strict.report.json").read_text())
    assert report["passed"] is False and report["thresholds"]["max_abs_error"] == 0
    assert output.exists()
    assert "recovers" not in result.stderr  # dynamic: nothing calibrated to recalibrate

    # an int8 file that fails says what else recovers post-training int8 losses, except what it already used
    result = run_here("export.tflite", trained_run / "model.keras", "--output", output, "--samples", "4",
                     "--calibration-samples", "8", "--max-abs-error", "0")
    assert result.returncode == 1
    assert all(way in result.stderr for way in ("--calibration percentile", "--auto-keep-float",
                                                 "--quantization-aware"))
    result = run_here("export.tflite", trained_run / "model.keras", "--output", output, "--samples", "4",
                     "--calibration-samples", "8", "--max-abs-error", "0", "--calibration", "percentile")
    assert result.returncode == 1
    assert "--calibration percentile" not in result.stderr and "--quantization-aware" in result.stderr


def test_agreement_cli_rechecks_an_exported_file(trained_run, tmp_path):
    output = tmp_path / "m.onnx"
    assert run_cli("export.onnx", trained_run / "model.keras", "--output", output, "--samples", "4").returncode == 0
    result = run_cli("export.agreement", trained_run / "model.keras", output, "--samples", "6",
                     "--report", tmp_path / "again.json")
    assert result.returncode == 0, result.stderr
    assert json.loads((tmp_path / "again.json").read_text())["samples"] == 6


@pytest.mark.parametrize("make_model, message", [
    (None, "model file not found"),
    ("text", "is not a Keras model file: a .keras file is a zip archive"),
    ("h5", "is not a Keras model"),
])
def test_bad_model_path_is_named(tmp_path, make_model, message, capsys):
    from export import tflite

    model = tmp_path / ("broken.keras" if make_model != "h5" else "weights.h5")
    if make_model:
        model.write_text("not a model")
    output = tmp_path / "out.tflite"
    output.write_bytes(b"previous export")
    assert run_main(tflite.main, model, "--quantize", "float32", "--output", output) == 2
    stderr = capsys.readouterr().err
    assert message in stderr and str(model) in stderr
    assert "Traceback" not in stderr
    assert output.read_bytes() == b"previous export"  # nothing written over, nothing partial
    assert sorted(os.listdir(tmp_path)) == sorted([model.name, output.name] if make_model else [output.name])


def test_exported_file_that_is_not_a_model(trained_run, tmp_path, capsys):
    from export import agreement

    fake = tmp_path / "fake.tflite"
    fake.write_bytes(b"\x00" * 64)
    assert run_main(agreement.main, trained_run / "model.keras", fake) == 2
    stderr = capsys.readouterr().err
    assert "is not a TFLite model" in stderr and str(fake) in stderr


@pytest.mark.parametrize("args, message", [
    (["--samples", "0"], "--samples: expected a positive integer"),
    (["--calibration-samples", "-5"], "--calibration-samples: expected a positive integer"),
    (["--quantize", "int4"], "invalid choice: 'int4'"),
    (["--image-size", "64x"], "image size must be N or HxW"),
])
def test_export_cli_bad_arguments(trained_run, tmp_path, args, message, capsys):
    from export import tflite

    output = tmp_path / "m.tflite"
    assert run_main(tflite.main, trained_run / "model.keras", "--output", output, *args) == 2
    assert message in capsys.readouterr().err
    assert not output.exists()


def _litert(path):
    from ai_edge_litert.interpreter import Interpreter

    interpreter = Interpreter(model_path=str(path))
    interpreter.allocate_tensors()
    return interpreter


@pytest.mark.parametrize("args, input_dtype, output", [
    (["--io", "int8"], np.int8, ((1, 32, 32, 3), np.int8, "logits")),
    (["--output-kind", "category"], np.uint8, ((1, 32, 32), np.int32, "category")),
])
def test_int8_io_types_and_output_kinds(user_run, tmp_path, args, input_dtype, output, run_here):
    """On the well-trained model of a user's three classes, at the default thresholds. The file has a
    serving_default signature (input "image", output named by its kind), the checked runner runs it through."""
    path = tmp_path / "m.tflite"
    result = run_here("export.tflite", user_run[0] / "model.keras", "--output", path, "--samples", "16",
                     "--calibration-samples", "32", *args)
    assert result.returncode == 0, result.stderr
    interpreter = _litert(path)
    assert interpreter.get_input_details()[0]["dtype"] == input_dtype
    details = interpreter.get_output_details()[0]
    assert (tuple(details["shape"]), details["dtype"]) == output[:2]
    assert interpreter.get_signature_list() == {"serving_default": {"inputs": ["image"], "outputs": [output[2]]}}
    report = json.loads((tmp_path / "m.report.json").read_text())
    assert report["passed"] and report["pixel_agreement"] >= 0.99
    assert min(report["per_class_iou_exported"].values()) > 0.8  # every class decided, not only the background
    assert (tmp_path / "m.disagreement.png").stat().st_size > 0


def test_edgetpu_target_exports_a_mappable_model_and_refuses_the_rest(user_run, tmp_path, run_here):
    # the tiny U-Net (transposed-convolution upsampling) maps entirely; trained well (the user's run, mIoU about
    # 0.94), so that int8's verdict at the default thresholds is not decided by near-tied pixels (the weakly
    # trained `trained_run` agreed at 0.986 to 0.99+ from one training to the next)
    model = user_run[0] / "model.keras"
    output = tmp_path / "edge.tflite"
    result = run_here("export.tflite", model, "--target", "edgetpu", "--output", output,
                     "--samples", "8", "--calibration-samples", "32")
    assert result.returncode == 0, result.stderr
    report = json.loads((tmp_path / "edge.report.json").read_text())
    assert report["passed"] and report["pixel_agreement"] >= 0.99  # the default thresholds (it was held to 0)
    assert report["edgetpu"]["fully_mapped"] and report["edgetpu"]["mapped_share"] == 1.0
    assert "static check" in report["edgetpu"]["compiler"]  # no edgetpu_compiler on this machine

    # with edgetpu_compiler on PATH its log decides: here a (recorded) log where 6 operators fall to the CPU
    fake = tmp_path / "bin" / "edgetpu_compiler"
    fake.parent.mkdir()
    fake.write_text(f"#!/bin/sh\ncat {COMPILER_LOGS / 'partial.log'}\n")
    fake.chmod(0o755)
    result = run_here("export.tflite", model, "--target", "edgetpu", "--output", output,
                     "--samples", "8", "--calibration-samples", "32",
                     env={"PATH": f"{fake.parent}:{os.environ['PATH']}"})
    assert result.returncode == 1, result.stderr
    compiled = json.loads((tmp_path / "edge.report.json").read_text())["edgetpu"]["compiler"]
    assert (compiled["total_operators"], compiled["edge_tpu_operators"], compiled["cpu_operators"]) == (161, 155, 6)
    assert "edgetpu_compiler: 6 operators run on the CPU (RESHAPE x2" in result.stderr
    assert (tmp_path / "edge_edgetpu.log").read_text() == (COMPILER_LOGS / "partial.log").read_text()

    # an argmax head is not in Coral's table: refused, with the op report, nothing written
    refused = tmp_path / "refused.tflite"
    result = run_here("export.tflite", model, "--target", "edgetpu", "--output", refused,
                     "--output-kind", "category", "--samples", "4", "--calibration-samples", "8")
    assert result.returncode == 2
    assert "refusing target edgetpu" in result.stderr and "ARG_MAX" in result.stderr
    assert "not in the Edge TPU's operation table" in result.stderr
    assert not refused.exists() and not (tmp_path / "refused.report.json").exists()
    result = run_here("export.tflite", model, "--target", "edgetpu", "--auto-keep-float",
                     "--output", refused)
    assert result.returncode == 2 and "not allowed with target edgetpu" in result.stderr


def test_auto_keep_float_refuses_tuning_samples_on_which_the_int8_file_already_passes(tmp_path):
    """auto_keep_float keeps the worst tensors until the file passes on the tuning samples. On samples where the
    all-int8 file already passes, it kept one tensor at random and "passed" (LR-ASPP Large: its training images;
    the kept sigmoid left the held-out agreement at 0.983, as all-int8): now it says the samples cannot choose."""
    from export import tflite
    from kerasseg.errors import InputError

    image = keras.Input((16, 16, 3))
    conv = keras.layers.Conv2D(2, 1, name="red_or_green")
    model = keras.Model(image, conv(keras.layers.Conv2D(3, 1, activation="relu", name="c")(image)), name="m")
    model.get_layer("c").set_weights([np.eye(3, dtype=np.float32)[None, None] / 255, np.zeros(3, np.float32)])
    conv.set_weights([np.array([[1, -1], [-1, 1], [0, 0]], np.float32)[None, None], np.zeros(2, np.float32)])
    rng = np.random.default_rng(5)
    pixels = np.zeros((8, 16, 16, 3), np.float32)
    pixels[rng.integers(0, 2, (8, 16, 16))[..., None] == np.arange(3)] = 250.0  # red or green pixels
    with pytest.raises(InputError, match=r"already meets the thresholds on the 8 tuning samples.*held-out"):
        tflite.export(model, tmp_path / "m.tflite", auto_keep_float=True, calibration=pixels, validation=pixels)
    assert not (tmp_path / "m.tflite").exists()


def test_keep_float_keeps_the_layer_named_not_its_namesake_with_a_suffix(tmp_path):
    """Layers c and c_1: TensorFlow writes c's ops under the scope c_1 (entered again) and c_1's under c_1_1,
    and keeping c_1 in float kept c too."""
    from export import tflite

    image = keras.Input((16, 16, 3))
    x = keras.layers.Conv2D(4, 3, padding="same", activation="relu", name="c")(image)
    x = keras.layers.Conv2D(4, 3, padding="same", activation="relu", name="c_1")(x)
    model = keras.Model(image, keras.layers.Conv2D(2, 1, name="head")(x), name="m")
    pixels = np.random.default_rng(0).integers(0, 256, (8, 16, 16, 3)).astype(np.float32)
    report = tflite.export(model, tmp_path / "m.tflite", keep_float=["c_1"], calibration=pixels, validation=pixels,
                           thresholds={"pixel_agreement": 0.0})
    assert [cost["layers"] for cost in report["kept_float_costs"]["tensors"]] == [["c_1"]]
    # in the file: c_1's kernel (4 input channels) in float32, c's (3) in int8
    kernels = {(t["shape"][-1], t["dtype"]) for t in _litert(tmp_path / "m.tflite").get_tensor_details()
               if len(t["shape"]) == 4 and tuple(t["shape"][:3]) == (4, 3, 3)}
    assert kernels == {(3, np.int8), (4, np.float32)}, kernels


def test_quantization_debugger_table_and_keep_float(trained_run, tmp_path, run_here, monkeypatch):
    from export import per_tensor

    path = tmp_path / "m.tflite"
    result = run_here("export.tflite", trained_run / "model.keras", "--output", path, "--samples", "4",
                     "--calibration-samples", "8", "--debug", "--keep-float", "bottleneck_1_conv",
                     "--min-pixel-agreement", "0")
    assert result.returncode == 0, result.stderr
    assert "rmse/scale" in result.stdout
    rows = list(__import__("csv").DictReader((tmp_path / "m.debug.csv").open()))
    values = [float(row["rmse/scale"]) for row in rows]
    assert rows and values == sorted(values, reverse=True)
    report = json.loads((tmp_path / "m.report.json").read_text())
    assert report["kept_float"] and all("bottleneck_1_conv" in name for name in report["kept_float"])
    assert report["io"] == "float32" and _litert(path).get_input_details()[0]["dtype"] == np.float32
    # what each costs: the layer, and the bytes and milliseconds it adds to the all-int8 file
    costs = report["kept_float_costs"]
    assert [c["tensor"] for c in costs["tensors"]] == report["kept_float"]
    assert all("bottleneck_1_conv" in c["layers"] for c in costs["tensors"])
    assert all(c["bytes"] > 0 for c in costs["tensors"])  # float32 weights instead of int8
    assert costs["int8_bytes"] < report["size_bytes"] and "kept in float, each against all-int8" in result.stdout

    result = run_here("export.tflite", trained_run / "model.keras", "--output", path, "--keep-float", "no_such_layer",
                     "--calibration-samples", "8")
    assert result.returncode == 2 and "no quantized tensor belongs to layer 'no_such_layer'" in result.stderr

    # the same table for a file already exported, from the agreement check (every tensor flagged: the
    # report names them as the table does, after the layers' own names)
    plain = tmp_path / "plain.tflite"
    assert run_here("export.tflite", trained_run / "model.keras", "--output", plain, "--samples", "4",
                   "--calibration-samples", "8", "--min-pixel-agreement", "0").returncode == 0
    monkeypatch.setattr(per_tensor, "FLAG_RMSE_PER_SCALE", -1.0)
    result = run_here("export.agreement", trained_run / "model.keras", plain, "--samples", "4", "--debug",
                     "--calibration-samples", "8", "--min-pixel-agreement", "0")
    assert result.returncode == 0, result.stderr
    assert (tmp_path / "plain.debug.csv").is_file() and "rmse/scale" in result.stdout
    rows = list(__import__("csv").DictReader((tmp_path / "plain.debug.csv").open()))
    flagged = json.loads((tmp_path / "plain.report.json").read_text())["flagged_tensors"]
    assert flagged and flagged == [row["tensor_name"] for row in rows]


def test_onnx_int8_qdq_and_dynamic_batch(trained_run, tmp_path, run_here):
    import onnx
    import onnxruntime as ort

    path = tmp_path / "q.onnx"
    result = run_here("export.onnx", trained_run / "model.keras", "--output", path, "--quantize", "int8",
                     "--samples", "6", "--calibration-samples", "16", "--min-pixel-agreement", "0.9",
                     "--max-miou-drop", "5")  # (6 samples of a briefly trained model: a point is 1-3 pixels' worth)
    assert result.returncode == 0, result.stderr
    ops = {node.op_type for node in onnx.load(str(path)).graph.node}
    assert {"QuantizeLinear", "DequantizeLinear"} <= ops
    report = json.loads((tmp_path / "q.report.json").read_text())
    assert (report["quantization"], report["calibration_method"]) == ("int8", "percentile")

    path = tmp_path / "dyn.onnx"
    assert run_here("export.onnx", trained_run / "model.keras", "--output", path, "--dynamic-batch",
                   "--samples", "4").returncode == 0
    session = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    out = session.run(None, {"image": np.zeros((3, 32, 32, 3), np.float32)})[0]
    assert out.shape == (3, 32, 32, 4)


def test_a_model_that_does_not_take_images_and_an_unwritable_output(tmp_path, capsys):
    from export import onnx, tflite

    model = keras.Sequential([keras.Input((10,)), keras.layers.Dense(3)])
    model.save(tmp_path / "dense.keras")
    assert run_main(tflite.main, tmp_path / "dense.keras", "--output", tmp_path / "out.tflite") == 2
    assert "is not one RGB image batch (N, H, W, 3)" in capsys.readouterr().err
    assert not (tmp_path / "out.tflite").exists()

    blocker = tmp_path / "a_file"  # an output "directory" that is a file: not creatable, even as root
    blocker.write_text("")
    assert run_main(onnx.main, tmp_path / "dense.keras", "--output", blocker / "m.onnx") == 2
    assert f"cannot create output directory {blocker}" in capsys.readouterr().err


def test_percentile_calibration_narrows_activation_ranges_and_keeps_pixels_unscaled(tmp_path):
    from export import tflite
    from kerasseg import models

    keras.utils.set_random_seed(0)
    model = models.unet_tiny(classes=3)
    images = np.random.default_rng(0).uniform(60, 190, (16, 32, 32, 3)).astype("float32")
    scales = {}
    for method in ("minmax", "percentile"):
        path = tmp_path / f"{method}.tflite"
        path.write_bytes(tflite.convert(model, "int8", (32, 32), images, calibration=method))
        interpreter = _litert(path)
        assert tuple(interpreter.get_input_details()[0]["quantization"]) == (1.0, 0)  # pixels as they are
        scales[method] = {t["name"]: t["quantization"][0] for t in interpreter.get_tensor_details()
                          if t["dtype"] == np.int8 and len(t["shape"]) == 4 and t["quantization"][0]}
    common = scales["minmax"].keys() & scales["percentile"].keys()
    assert len(common) >= 5
    narrower = [name for name in common if scales["percentile"][name] < scales["minmax"][name] * 0.999]
    assert narrower and all(scales["percentile"][n] <= scales["minmax"][n] * 1.001 for n in common)
    with pytest.raises(Exception, match="calibration must be one of"):
        tflite.convert(model, "int8", (32, 32), images, calibration="mse")


def test_ai_edge_quantizer_files_are_camera_exact_and_checked_as_ours(user_run, tmp_path, run_here):
    """--quantizer ai-edge: Google's ai-edge-quantizer on our float32 file (it reads the file's serving_default
    signature), pinned to camera pixels (uint8, scale 1.0, zero point 0), held to the default thresholds on the
    user's well-trained model; its int16x8 file takes int16 (a scale of its own), fed as an app must."""
    model = user_run[0] / "model.keras"
    for quantize, args, dtype in (("int8", ["--ai-edge-algorithm", "mse"], np.uint8), ("int16x8", [], np.int16)):
        path = tmp_path / f"aeq_{quantize}.tflite"
        result = run_here("export.tflite", model, "--quantizer", "ai-edge", "--quantize", quantize, "--output", path,
                          "--samples", "16", "--calibration-samples", "32", *args)
        assert result.returncode == 0, result.stderr
        # one line of ours, not its progress bar of a step per op and image (9,300 lines on the demo)
        assert "Running Calibration" not in result.stderr and "%|" not in result.stderr
        assert f"ai-edge-quantizer: static_wi8_ai{8 if quantize == 'int8' else 16}" in result.stdout
        report = json.loads((tmp_path / f"aeq_{quantize}.report.json").read_text())
        assert report["passed"] and report["quantizer"] == "ai-edge" and report["quantization"] == quantize
        assert report["io"] == dtype.__name__  # (int16x8: an int16 input, unlike kerasseg's float32 one)
        detail = _litert(path).get_input_details()[0]
        assert detail["dtype"] == dtype
        if dtype == np.uint8:
            assert detail["quantization"] == (1.0, 0) and report["ai_edge_algorithm"] == "mse"
    result = run_here("export.tflite", model, "--quantizer", "ai-edge", "--calibration", "percentile", "--output",
                      tmp_path / "no.tflite")
    assert result.returncode == 2 and "'minmax' or 'moving-average'" in result.stderr
    for args in (["--calibration", "moving-average"], ["--ai-edge-algorithm", "mse"]):  # (not silently unused)
        result = run_here("export.tflite", model, *args, "--output", tmp_path / "no.tflite")
        assert result.returncode == 2 and "applies with quantizer 'ai-edge' only" in result.stderr
    result = run_here("export.tflite", model, "--quantizer", "ai-edge", "--quantize", "float16", "--output",
                      tmp_path / "no.tflite")
    assert result.returncode == 2 and "received quantize='float16'" in result.stderr
    assert not (tmp_path / "no.tflite").exists()


def test_lraspp_on_mobilenet_v3_goes_through_every_format(tmp_path):
    """LR-ASPP on MobileNetV3 (hard-swish, squeeze-excitation gated by hard-sigmoid, the global-pool gate of the
    head) converts to float16 and int8 LiteRT and to ONNX, and each file computes what the Keras model does:
    the float files within float error, the int8 file with its hard-swish ops in int8 (not float fallbacks
    between a DEQUANTIZE and a QUANTIZE) and its outputs near the model's."""
    from export import internals, onnx, tflite
    from kerasseg import data, models

    keras.utils.set_random_seed(3)
    split = data.load_split("shapes", "train", (64, 64), 48)
    model = models.create_model("lraspp_tiny", classes=len(split.class_names))
    model.compile("adam", keras.losses.SparseCategoricalCrossentropy(from_logits=True))
    model.fit(split.images.astype("float32"), split.masks, epochs=3, batch_size=8, verbose=0)  # (settled norms)
    def activations(model):
        for layer in model.layers:
            yield from activations(layer) if hasattr(layer, "layers") else [layer.get_config().get("activation")]

    assert set(activations(model)) >= {"hard_silu", "hard_sigmoid"}  # (Keras's name for hard-swish)
    validation = (split.images[:8], split.masks[:8])
    spread = float(np.ptp(model.predict(split.images[:8].astype("float32"), verbose=0)))
    reports = {}
    for name, exporter, options in [("f16.tflite", tflite.export, {"quantize": "float16"}),
                                    ("int8.tflite", tflite.export, {"quantize": "int8",
                                                                    "calibration": split.images}),
                                    ("model.onnx", onnx.export, {})]:
        reports[name] = exporter(model, tmp_path / name, validation=validation, image_size=(64, 64), **options)
    assert reports["model.onnx"].max_abs_error < 1e-4 * spread, reports["model.onnx"]
    assert reports["f16.tflite"].max_abs_error < 1e-2 * spread, reports["f16.tflite"]
    assert reports["int8.tflite"].mean_abs_error < 0.05 * spread, reports["int8.tflite"]
    assert all(report.miou_reference is not None for report in reports.values())
    schema = internals.tflite_schema()
    file = internals.read_tflite((tmp_path / "int8.tflite").read_bytes())
    names = {code: name for name, code in vars(schema.BuiltinOperator).items() if not name.startswith("_")}
    graph = file.subgraphs[0]
    ops = [(names[max(file.operatorCodes[op.opcodeIndex].builtinCode,
                      file.operatorCodes[op.opcodeIndex].deprecatedBuiltinCode)], op) for op in graph.operators]
    hard_swish = [op for name, op in ops if name == "HARD_SWISH"]
    assert hard_swish and all(graph.tensors[i].type == schema.TensorType.INT8 for op in hard_swish
                              for i in list(op.inputs) + list(op.outputs))
    assert "DEQUANTIZE" not in [name for name, _ in ops], [name for name, _ in ops]
