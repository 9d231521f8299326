"""The README's custom-data path on a user's own folder as real folders are (tests/data/awkward_folders.py:
sideways phone photos, 16-bit and palette images, names with spaces and non-ASCII letters; custom class
names, a non-zero seed, a dim camera's narrow pixel range): the run records its view of the data, every
later stage reads that record, whatever the folder's spelling, and the exports are held to the default
thresholds of a well-trained model."""

import json
import os
import shutil

import numpy as np
import pytest

from awkward_folders import spellings
from conftest import ROOT, USER_CLASSES, program_lines, run_cli
from kerasseg import files
from kerasseg.data.sources import read_image


def _litert(path):
    from ai_edge_litert.interpreter import Interpreter

    interpreter = Interpreter(model_path=str(path))
    interpreter.allocate_tensors()
    return interpreter


def _split(run, name):
    return files.read_lines(run / "splits" / f"{name}.txt")


def _folder_images(folder, size, count):
    """The first `count` of a folder's images as a viewer shows them, resized to `size` (as a camera frame)."""
    from PIL import Image

    paths = sorted((folder / "images").iterdir())[:count]
    return [np.asarray(Image.fromarray(read_image(str(p))).resize((size, size), Image.BILINEAR)) for p in paths]


def test_the_run_records_disjoint_splits_and_evaluate_reproduces_its_validation_miou(user_run, tmp_path):
    run, folder = user_run
    train, val, test = (_split(run, s) for s in ("train", "val", "test"))
    stems = sorted(os.path.splitext(p.name)[0] for p in (folder / "images").iterdir())
    assert sorted(train + val) == stems and not set(train) & set(val)
    assert any(" " in stem for stem in val)  # names with spaces among the held-out images
    assert test == val  # a folder without splits/ holds out its validation images for testing too
    record = json.loads((run / "run.json").read_text())
    assert record["class_names"] == list(USER_CLASSES) and record["arguments"]["seed"] == 3
    assert record["arguments"]["dataset"] == f"folder:{folder}"  # typed with a trailing slash: its location
    metrics = json.loads((run / "metrics.json").read_text())
    assert metrics["miou"] >= 0.9  # a trained model: the exports below are held to the default thresholds
    result = run_cli("kerasseg.evaluate", run / "model.keras", "--output", tmp_path / "eval.json")
    assert result.returncode == 0, result.stderr
    scores = json.loads((tmp_path / "eval.json").read_text())
    assert scores["dataset"] == f"folder:{folder}" and scores["samples"] == len(val)
    assert scores["miou"] == pytest.approx(metrics["miou"], abs=1e-9)
    assert list(scores["per_class_iou"]) == list(USER_CLASSES)


def test_every_spelling_of_the_folder_keeps_the_runs_held_out_split(user_run, tmp_path, capsys):
    """`folder:DIR/`, `folder:DIR/../DIR`, a symlink and a relative path are the run's dataset: scored on its
    held-out images (the old code compared the strings, and scored these on training images)."""
    from kerasseg import cli, evaluate

    run, folder = user_run
    metrics = json.loads((run / "metrics.json").read_text())
    cwd = os.getcwd()
    os.chdir(ROOT)  # the relative spelling is relative to where the user stands
    try:
        for i, spelling in enumerate(spellings(folder, ROOT)):
            assert cli.run(evaluate.main, [str(run / "model.keras"), "--dataset", f"folder:{spelling}",
                                           "--output", str(tmp_path / f"{i}.json")]) == 0, capsys.readouterr().err
            scores = json.loads((tmp_path / f"{i}.json").read_text())
            assert scores["samples"] == len(_split(run, "val")), spelling
            assert scores["miou"] == pytest.approx(metrics["miou"], abs=1e-9), spelling
    finally:
        os.chdir(cwd)


def test_the_runs_files_with_spaces_in_their_names_resume_and_export(user_run, tmp_path):
    """Every later step reads the split lists of a run on files named with spaces (the old code read
    "field plot 00" as three names and stopped with "has no example field, plot, ...")."""
    from export import commands, formats, onnx
    from kerasseg import resolve, train

    run, _ = user_run
    args = train.parse_args(["--output", str(run), "--resume"])
    assert args.dataset.startswith("folder:") and args.seed == 3
    stage = resolve.stage(run / "model.keras")
    report = onnx.export(stage.file, tmp_path / "m.onnx",
                         **formats.exporter_inputs(stage, commands.DataOptions(), calibrate=False))
    assert report["passed"] and report["samples"] == len(_split(run, "test"))


def test_int8_export_of_a_dim_camera_run_takes_raw_pixels_exactly(user_run, tmp_path):
    run, folder = user_run
    for io, zero_point, dtype in (("uint8", 0, np.uint8), ("int8", -128, np.int8)):
        path = tmp_path / f"{io}.tflite"
        result = run_cli("export.tflite", run / "model.keras", "--output", path, "--io", io)
        assert result.returncode == 0, result.stderr
        report = json.loads((tmp_path / f"{io}.report.json").read_text())
        # calibrated and compared on the run's own data and splits, not on `shapes`
        assert report["dataset"] == report["calibration_dataset"] == f"folder:{folder}"
        assert report["samples"] == len(_split(run, "test"))
        assert report["calibration_samples"] == len(_split(run, "train"))
        interpreter = _litert(path)
        detail = interpreter.get_input_details()[0]
        assert detail["dtype"] == dtype and detail["quantization"] == (1.0, zero_point)
        # what MediaPipe and pycoral do: the camera's pixels go in as they are, no re-quantization
        import keras

        model = keras.saving.load_model(run / "model.keras")
        images = _folder_images(folder, 32, 12)
        agree = []
        for image in images:
            interpreter.set_tensor(detail["index"], (image.astype(np.int16) + zero_point).astype(dtype)[None])
            interpreter.invoke()
            out = interpreter.get_tensor(interpreter.get_output_details()[0]["index"])[0]
            expected = model.predict_on_batch(image[None].astype("float32"))[0]
            agree.append((out.argmax(-1) == expected.argmax(-1)).mean())
        assert np.mean(agree) >= 0.99, agree


def test_a_model_without_a_run_record_needs_a_dataset(user_run, tmp_path):
    run, _ = user_run
    shutil.copy(run / "model.keras", tmp_path / "loose.keras")
    result = run_cli("export.tflite", tmp_path / "loose.keras", "--output", tmp_path / "m.tflite", "--image-size", "32")
    assert result.returncode == 2 and "Traceback" not in result.stderr
    lines = program_lines(result.stderr)
    assert len(lines) == 1 and "--dataset" in lines[0] and "loose.keras" in lines[0], lines
    assert not (tmp_path / "m.tflite").exists()


def test_a_dataset_with_other_classes_calibrates_and_compares_without_miou(user_run, tmp_path, run_here):
    run, _ = user_run
    path = tmp_path / "m.tflite"
    # images this model never saw, whose pixels are nearer ties than its own data's: measured 0.989
    result = run_here("export.tflite", run / "model.keras", "--output", path, "--dataset", "shapes",
                     "--samples", "6", "--min-pixel-agreement", "0.97")
    assert result.returncode == 0, result.stderr
    report = json.loads((tmp_path / "m.report.json").read_text())
    assert report["calibration_dataset"] == "shapes" and report["pixel_agreement"] >= 0.97
    assert report["miou_reference"] is None and report["miou_drop"] is None
    assert "mIoU not computed" in report["miou_note"] and "mIoU not computed" in result.stdout


def test_a_mixed_precision_run_exports(mixed_run, tmp_path, run_here):
    for quantize in ("float32", "int8"):
        path = tmp_path / f"{quantize}.tflite"
        report = _exported(run_here, "export.tflite", mixed_run / "model.keras", path, "--quantize", quantize)
        assert report["training_policy"] == "mixed_bfloat16" and report["passed"]
        if quantize == "float32":  # compared with the float32 rebuild of the same weights
            assert report["max_abs_error"] < 1e-4


def _exported(run, module, model, path, *flags):
    """Exports `model` to `path` with `run` (run_cli or run_here: 16 calibration images, the default
    thresholds); returns the report."""
    result = run(module, model, "--output", path, "--calibration-samples", "16", *flags)
    assert result.returncode == 0, result.stderr
    return json.loads(path.with_suffix(".report.json").read_text())


def test_onnx_int8_quantizes_the_pixel_input_over_0_to_255(user_run, tmp_path):
    import onnx
    from onnx import numpy_helper

    run, folder = user_run
    path = tmp_path / "q.onnx"
    report = _exported(run_cli, "export.onnx", run / "model.keras", path, "--quantize", "int8")
    graph = onnx.load(str(path)).graph
    values = {init.name: numpy_helper.to_array(init) for init in graph.initializer}
    first = next(node for node in graph.node if node.op_type == "QuantizeLinear" and node.input[0] == "image")
    assert float(values[first.input[1]]) == 1.0 and int(values[first.input[2]]) == -128  # no pixel clipped
    assert report["calibration_dataset"] == f"folder:{folder}"


def test_keep_float_exports_quantize_the_pixel_input_over_0_to_255(user_run, tmp_path, run_here):
    from export.internals import read_tflite

    run, _ = user_run
    path = tmp_path / "kept.tflite"
    _exported(run_here, "export.tflite", run / "model.keras", path, "--keep-float", "bottleneck_1_conv")
    model = read_tflite(path.read_bytes())
    graph = model.subgraphs[0]
    first = next(op for op in graph.operators if graph.inputs[0] in op.inputs)  # float pixels -> int8
    quantization = graph.tensors[first.outputs[0]].quantization
    assert (list(quantization.scale), list(quantization.zeroPoint)) == ([1.0], [-128])


def test_predict_segments_a_sideways_phone_photo_as_a_viewer_shows_it(user_run, tmp_path, capsys):
    """The old code segmented the stored pixels: a portrait photo came out as a landscape mask."""
    from PIL import Image

    from conftest import run_main
    from kerasseg import predict

    run, folder = user_run
    photo = next(p for p in (folder / "images").iterdir() if p.name.startswith("IMG_") and
                 Image.open(p).getexif().get(0x0112) == 6 and Image.open(p).size[0] != Image.open(p).size[1])
    assert run_main(predict.main, run / "model.keras", photo, "--output", tmp_path) == 0, capsys.readouterr().err
    upright = read_image(str(photo))
    mask = np.asarray(Image.open(tmp_path / f"{os.path.splitext(photo.name)[0]}_mask.png"))
    assert mask.shape == upright.shape[:2] != Image.open(photo).size[::-1]
    truth = np.asarray(Image.open(folder / "masks" / f"{os.path.splitext(photo.name)[0]}.png"))
    assert (mask == truth).mean() >= 0.9  # the model's classes where the user drew them


def test_predict_takes_a_folder_and_evaluate_keeps_each_splits_scores(user_run, tmp_path, capsys):
    """A new user's trial: `predict DIR/` said "image file(s) not found" of a folder that exists, `--image-size
    native` was refused by predict (evaluate takes it), and every evaluate of another split or size overwrote
    the one MODEL.eval.json."""
    import shutil

    from conftest import run_main
    from kerasseg import evaluate, predict

    run, folder = user_run
    model = tmp_path / "run" / "model.keras"
    shutil.copytree(run, model.parent, ignore=shutil.ignore_patterns("backup", "logs"))
    images = sorted(p for p in (folder / "images").iterdir())
    assert run_main(predict.main, model, f"{folder / 'images'}/", "--image-size", "native", "--output",
                    tmp_path / "masks") == 0, capsys.readouterr().err
    assert sorted(p.name for p in (tmp_path / "masks").glob("*_mask.png")) == \
        sorted(f"{os.path.splitext(p.name)[0]}_mask.png" for p in images)
    assert "(height x width)" in capsys.readouterr().out
    for args in ([], ["--split", "train"], ["--image-size", "native"]):
        assert run_main(evaluate.main, model, *args) == 0, capsys.readouterr().err
    written = sorted(p.name for p in model.parent.glob("model.eval*.json"))
    assert written == ["model.eval.json", "model.eval.native.json", "model.eval.train.json"]
    assert json.loads((model.parent / "model.eval.train.json").read_text())["split"] == "train"
