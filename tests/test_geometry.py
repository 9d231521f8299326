"""One inference geometry, the training's (kerasseg.inference): every stage that runs a model on an image
prepares it as training showed images to the model (aspect kept), runs it whole or in windows, and scores
each label at its own resolution."""

import json
import os
import re
import subprocess
import sys

import keras
import numpy as np
import pytest
from PIL import Image

from conftest import ROOT, once_per_session, run_cli, run_main
from kerasseg import inference, resample
from kerasseg.errors import InputError

CROP = 32


def _pointwise(channels=3):
    """A model whose every output pixel depends on its input pixel alone: windows cannot change its logits."""
    pixels = keras.Input((None, None, 3))
    return keras.Model(pixels, keras.layers.Conv2D(channels, 1, kernel_initializer="glorot_uniform")(pixels))


def test_bilinear_resizing_is_tensorflows_and_bands_of_rows_give_the_whole():
    import tensorflow as tf

    rng = np.random.default_rng(1)
    for (height, width), size in (((37, 53), (64, 128)), ((600, 400), (97, 65)), ((9, 9), (9, 23))):
        array = rng.random((height, width, 4)).astype(np.float32)
        whole = resample.resize_bilinear(array, size)
        np.testing.assert_allclose(whole, tf.image.resize(array, size, "bilinear").numpy(), atol=1e-4)
        resampler = resample.RowResampler((height, width), size)  # rows arriving 7 at a time
        bands = [resampler.push(array[i:i + 7]) for i in range(0, height, 7)]
        np.testing.assert_array_equal(np.concatenate([b for b in bands if len(b)]), whole)
        mask = rng.integers(0, 5, (height, width)).astype(np.uint8)
        nearest = tf.image.resize(mask[..., None], size, "nearest").numpy()[..., 0]
        np.testing.assert_array_equal(resample.resize_mask(mask, size), nearest)


@pytest.mark.parametrize("resize", ["cover", "native"])
def test_windows_average_to_the_whole_image_and_their_padding_is_cut_off(resize):
    model = _pointwise()
    rng = np.random.default_rng(2)
    for size in ((123, 77), (20, 13)):  # (the second smaller than a window: padded, then cut off)
        image = rng.integers(0, 256, (*size, 3)).astype(np.uint8)
        whole = inference.Inference(model, inference.Geometry(resize, (32, 32), "whole")).mask(image)
        slide = inference.Inference(model, inference.Geometry(resize, (32, 32), "slide", tile=(24, 30),
                                                              stride=(7, 11))).mask(image)
        assert whole.shape == slide.shape == size
        np.testing.assert_array_equal(whole, slide)


def test_a_model_of_one_input_size_runs_any_image_in_windows_of_that_size():
    pixels = keras.Input((16, 24, 3))
    fixed = keras.Model(pixels, keras.layers.Conv2D(2, 1)(pixels))
    image = np.random.default_rng(3).integers(0, 256, (50, 41, 3)).astype(np.uint8)
    run = inference.Inference(fixed, inference.Geometry("native"))
    assert run.plan(image.shape).mode == "slide"
    mask = run.mask(image)
    assert mask.shape == (50, 41)
    np.testing.assert_array_equal(mask, inference.Inference(_copy_of(fixed), inference.Geometry("native")).mask(image))


def _copy_of(fixed):
    """The same 1x1 convolution taking any size."""
    pixels = keras.Input((None, None, 3))
    conv = keras.layers.Conv2D(2, 1)
    model = keras.Model(pixels, conv(pixels))
    conv.set_weights(fixed.layers[-1].get_weights())
    return model


def test_cover_keeps_the_aspect_and_the_memory_budget_decides_windows_and_batches():
    covering = inference.Geometry("cover", (32, 32), scale=1)
    assert covering.working_size((96, 192)) == (32, 64)  # a 2:1 picture at the crop's scale, not squashed
    assert covering.working_size((200, 150)) == (43, 32)
    assert covering.working_size((10, 20)) == (32, 64)  # smaller than the crop: scaled up to cover it
    # the default: every quarter step of the training's random factors (0.75-1.5 times the covering scale)
    assert inference.TEST_SCALES == (0.75, 1.0, 1.25, 1.5)
    default = inference.Geometry("cover", (32, 32))
    assert default.scale == inference.TEST_SCALES
    assert default.working_sizes((96, 192)) == ((24, 48), (32, 64), (40, 80), (48, 96))
    assert default.working_sizes((10, 20)) == ((24, 48), (32, 64), (40, 80), (48, 96))
    with pytest.raises(InputError, match="at 4 scales"):
        default.working_size((96, 192))
    assert inference.Geometry("cover", (32, 32), scale=1.25).working_size((96, 192)) == (40, 80)
    assert inference.Geometry("cover", (32, 32), scale=[1, 2]).scale == (1.0, 2.0)
    assert inference.Geometry("stretch", (32, 32)).working_size((96, 192)) == (32, 32)
    assert inference.Geometry("native").working_size((4000, 6000)) == (4000, 6000)
    model = _pointwise(4)
    small = inference.Inference(model, inference.Geometry("native"), budget=inference.activation_bytes(model) * 5000)
    assert small.plan((50, 50)).mode == "whole" and small.plan((100, 100)).mode == "slide"
    assert small.batch_for(1000) == 5 and small.batch_for(10**6) == 1  # (16 asked for: lowered to what fits)
    with pytest.raises(InputError, match="resize must be one of"):
        inference.Geometry("squash", (32, 32))
    with pytest.raises(InputError, match="give size"):
        inference.Geometry("cover")
    for wrong in (0, -1, "big", "1", True, float("nan"), 17, (), (1, -1)):
        with pytest.raises(InputError, match=f"scale must be a number above 0 and at most 16.*received "
                                             f"{re.escape(repr(wrong))}"):
            inference.Geometry("cover", (32, 32), scale=wrong)
    with pytest.raises(InputError, match="scale applies to resize 'cover'.*scale 2 with resize 'stretch'"):
        inference.Geometry("stretch", (32, 32), scale=2)


def test_scores_are_taken_at_the_labels_own_resolution():
    """A label's thin line survives: scored where it was drawn, not on a mask resized to the training size
    (where nearest resizing keeps or drops it by its position)."""
    from kerasseg import evaluate

    pixels = keras.Input((None, None, 3))
    always_one = keras.Model(pixels, keras.layers.Conv2D(2, 1, kernel_initializer="zeros", bias_initializer=(
        keras.initializers.Constant([0.0, 1.0])))(pixels), name="always_one")
    mask = np.zeros((64, 128), np.uint8)
    mask[33] = 1  # a one-pixel line
    image = np.zeros((64, 128, 3), np.uint8)
    scores = evaluate.evaluate(always_one, (image[None], mask[None]), image_size=(32, 32))
    assert scores.per_class_iou["class_1"] == pytest.approx(128 / (64 * 128))
    assert scores.geometry["resize"] == "cover" and scores.sizes == ((64, 128),)


@pytest.fixture(scope="session")
def wide_run(tmp_path_factory):
    """A small U-Net trained at square 32x32 crops, with the default augmentation, on a folder of mostly 2:1
    pictures (and portrait, odd-sized and smaller-than-the-crop ones) whose classes only geometry tells apart
    (awkward_folders.write_aspect_folder: validation mIoU about 0.92; squashed to 32x32, 0.72)."""
    from awkward_folders import write_aspect_folder

    def make(base):
        folder = write_aspect_folder(base / "streets")
        result = run_cli("kerasseg.train", "--model", "unet_tiny", "--model-args", '{"base_filters": 8}',
                              "--dataset", f"folder:{folder}", "--image-size", str(CROP), "--epochs", "14",
                              "--batch-size", "8", "--lr", "0.01", "--seed", "1", "--output", base / "run")
        # (a non-zero seed; the default augmentation: random scale around the covering one, crop, flip, colour)
        assert result.returncode == 0, result.stderr

    base = once_per_session(tmp_path_factory, "wide", make)
    return base / "run", base / "streets"


def test_fit_evaluate_and_predict_score_in_the_trainings_geometry(wide_run, tmp_path, capsys):
    """fit's validation, evaluate and predict run a 2:1 picture at the scales training showed (aspect kept,
    0.75-1.5 times the 32x64 that covers the crop, their probabilities averaged), not squashed to 32x32;
    evaluate's mIoU is that of predict's masks against the labels at their own size, and of fit's last
    validation; the default (the four scales' probabilities averaged) scores at least as well as those scales
    do on average, as an ensemble does its members, and far above the squashed pictures. (Not "as well as one
    of them": which scale scores best is noise. One clean-clone run's model scored 0.926 at 1.25, 0.874 at 1
    and 0.911 by default; another's 0.899 at 1 and 0.886 by default.)"""
    from kerasseg import evaluate, predict
    from kerasseg.metrics import confusion_matrix, scores

    run, folder = wide_run
    model_path = run / "model.keras"
    metrics = json.loads((run / "metrics.json").read_text())
    assert run_main(evaluate.main, model_path, "--output", tmp_path / "default.json") == 0
    default = json.loads((tmp_path / "default.json").read_text())
    assert default["geometry"]["resize"] == "cover" and "aspect kept" in capsys.readouterr().out
    assert default["miou"] == pytest.approx(metrics["miou"], abs=1e-9)  # fit's validation is this evaluation
    others = {}
    scales = ("0.75", "1", "1.125", "1.25", "1.5")
    for name, arguments in {"native": ("--image-size", "native"), **{f: ("--scale", f) for f in scales},
                            "squashed": ("--resize", "stretch")}.items():
        assert run_main(evaluate.main, model_path, *arguments, "--output", tmp_path / f"{name}.json") == 0
        others[name] = json.loads((tmp_path / f"{name}.json").read_text())["miou"]
    assert json.loads((tmp_path / "1.json").read_text())["geometry"]["scale"] == [1.0]
    assert default["geometry"]["scale"] == [0.75, 1.0, 1.25, 1.5]
    members = np.mean([others[scale] for scale in ("0.75", "1", "1.25", "1.5")])
    assert default["miou"] >= members - 0.005 and default["miou"] > 0.85, (default["miou"], others)
    assert others["squashed"] < default["miou"] - 0.05  # (its discs look like the tall class squashed)
    # predict's mask of a 2:1 picture: the model's probabilities at 24x48, 32x64, 40x80 and 48x96 (0.75-1.5
    # times the covering scale), each resized back to the picture's size, averaged
    model = keras.saving.load_model(model_path)
    small = np.asarray(Image.open(folder / "images" / "street 000.png"))
    image = np.asarray(Image.fromarray(small).resize((150, 75), Image.BILINEAR))  # (an odd size: 75x150)
    total = 0
    for working in ((24, 48), (32, 64), (40, 80), (48, 96)):
        logits = model.predict_on_batch(resample.resize_image(image, working)[None].astype("float32"))[0]
        total = total + keras.ops.convert_to_numpy(keras.ops.softmax(resample.resize_bilinear(logits, (75, 150))))
    differ = np.mean(next(predict.predict(model_path, [image])) != total.argmax(-1))
    assert differ <= 1e-3, differ  # (TensorFlow's softmax and numpy's may part on a near-tie; any error is more)
    # predict's masks, read back from their files, scored against the labels: evaluate's mIoU
    val = [line for line in (run / "splits" / "val.txt").read_text().splitlines() if line]
    images = [folder / "images" / f"{stem}.png" for stem in val]
    assert run_main(predict.main, model_path, *images, "--output", tmp_path / "masks") == 0
    cm = 0
    for stem in val:
        predicted = np.asarray(Image.open(tmp_path / "masks" / f"{stem}_mask.png"))
        label = np.asarray(Image.open(folder / "masks" / f"{stem}.png"))
        assert predicted.shape == label.shape
        cm = cm + confusion_matrix(label, predicted, 3)
    assert scores(cm, range(3))["miou"] == pytest.approx(default["miou"], abs=1e-9)


def test_each_geometry_scores_into_its_own_file_and_a_bad_scale_is_refused_before_any_image(wide_run, tmp_path):
    """evaluate's default file (MODEL.eval.json) is the training's geometry; another scale writes its own file
    beside it instead of overwriting it; predict() refuses a bad scale when called, not at its first mask."""
    import shutil

    from kerasseg import evaluate, predict

    run = tmp_path / "run"
    shutil.copytree(wide_run[0], run)
    model = run / "model.keras"
    for scale in ((), ("1",), ("0.75", "1.5")):
        assert run_main(evaluate.main, model, *(("--scale", *scale) if scale else ())) == 0
    written = {path.name: json.loads(path.read_text())["geometry"]["scale"] for path in run.glob("model.eval*.json")}
    assert written == {"model.eval.json": [0.75, 1.0, 1.25, 1.5], "model.eval.scale1.json": [1.0],
                       "model.eval.scale0.75-1.5.json": [0.75, 1.5]}
    with pytest.raises(InputError, match="scale must be"):
        predict.predict(model, [np.zeros((8, 8, 3), np.uint8)], scale=0)


@pytest.mark.large
def test_a_24_megapixel_photo_predicted_at_its_own_size_stays_within_4_gib(wide_run, tmp_path):
    """`predict --image-size native` of a 6000x4000 photo: the model runs in windows (its activations at once
    would take tens of GiB), the logits are decided in bands, and the mask and overlay are written whole; the
    process's peak memory stays under 4 GiB (the old code aborted with std::bad_alloc)."""
    run, folder = wide_run
    photo = tmp_path / "DSC 0001.jpg"
    small = Image.open(folder / "images" / "street 000.png")
    small.resize((6000, 4000), Image.BILINEAR).save(photo, quality=85)
    code = ("import resource, sys, runpy; sys.argv = ['predict'] + sys.argv[1:]\n"
            "try:\n    runpy.run_module('kerasseg.predict', run_name='__main__')\n"
            "finally:\n    print('PEAK', resource.getrusage(resource.RUSAGE_SELF).ru_maxrss, file=sys.stderr)\n")
    result = subprocess.run([sys.executable, "-c", code, str(run / "model.keras"), str(photo), "--image-size",
                             "native", "--tile", "256", "--output", str(tmp_path / "out")], capture_output=True,
                            text=True, cwd=ROOT, env={**os.environ, "PYTHONPATH": ROOT}, timeout=900)
    assert "4000x6000" in result.stdout, result.stderr[-3000:]
    peak = int(result.stderr.rsplit("PEAK", 1)[1].split()[0]) * 1024
    assert peak < 4 * 2**30, f"peak {peak / 2**30:.2f} GiB"
    assert Image.open(tmp_path / "out" / "DSC 0001_mask.png").size == (6000, 4000)


def test_native_evaluation_of_large_images_lowers_the_batch_and_runs_windows_within_the_budget(wide_run):
    """Where the activations of 16 large images would not fit (the old code aborted with std::bad_alloc at the
    default batch size), each runs alone, or in windows, within the budget."""
    from kerasseg import evaluate

    run, folder = wide_run
    pairs = []
    for first in (0, 10, 20):  # mosaics of six 48x96 pictures: 96x288 images at the pictures' own scale
        tiles = [[np.asarray(Image.open(folder / kind / f"street {first + i:03d}.png")) for i in range(6)]
                 for kind in ("images", "masks")]
        pairs.append(tuple(np.concatenate([np.concatenate(t[:3], 1), np.concatenate(t[3:], 1)]) for t in tiles))
    model = keras.saving.load_model(run / "model.keras")
    per_image = inference.activation_bytes(model) * 96 * 288
    calls = []
    original = model.predict_on_batch
    model.predict_on_batch = lambda batch: calls.append(np.shape(batch)) or original(batch)
    whole = evaluate.evaluate(model, pairs, image_size="native", budget=1.5 * per_image)
    assert calls and all(shape[0] == 1 and shape[1:3] == (96, 288) for shape in calls)  # one image a call
    calls.clear()
    slid = evaluate.evaluate(model, pairs, image_size="native", budget=0.5 * per_image)
    assert calls and all(shape[1:3] == (CROP, CROP) for shape in calls)  # windows of the training crop
    assert whole.miou > 0.75 and slid.miou > 0.65  # (a window's borders see less context than the whole)


def test_the_check_feeds_the_file_as_mediapipe_does_and_the_bundle_takes_the_pictures_aspect(wide_run, tmp_path,
                                                                                              capsys):
    """MediaPipe's ImageSegmenter stretches a camera frame of any aspect to the file's input size and its mask
    back (found here: a frame's corners and rows land on the input's). So the bundle of a run on 2:1 pictures
    is exported at 2:1 (32x64, not the 32x32 crop a 2:1 frame would be squashed into), its README says what an
    app must do, and what the check scores is what MediaPipe computes: the file on the frame stretched to its
    size, the scores resized back to the frame."""
    from test_android import _category_mask

    from export import android
    from kerasseg.data.values import prepared
    from export.runtimes import LiteRTRunner

    run, folder = wide_run
    assert run_main(android.main, run / "model.keras", "--output", tmp_path / "bundle") == 0
    err = capsys.readouterr().err
    assert "exporting at 32x64, not the training size 32x32" in err and "have another aspect than" in err
    card = json.loads((tmp_path / "bundle" / "model_card.json").read_text())
    assert (card["input"]["height"], card["input"]["width"]) == (32, 64) and card["agreement"]["passed"]
    from export import tflite  # a 32x32 file, which squashes the 2:1 frames, scores far less
    from kerasseg import resolve

    squashed = tflite.export(run / "model.keras", tmp_path / "square.tflite", quantize="float32", image_size=32,
                             validation=resolve.data_view(run / "model.keras").pairs("test"))
    assert card["agreement"]["miou_reference"] > squashed.miou_reference + 0.05
    readme = (tmp_path / "bundle" / "README.md").read_text()
    assert "stretches" in readme and "32x64" in readme
    file = tmp_path / "bundle" / "segmenter.tflite"
    runner = LiteRTRunner(file)
    for stem in ("street 000", "street 006", "street 009"):  # 2:1, portrait, smaller than the crop
        image = np.asarray(Image.open(folder / "images" / f"{stem}.png"))
        _, mediapipe = _category_mask(file, image)
        split = prepared([(image, None)], (32, 64), ("ground", "disc", "tall"))
        scores = runner(split.images[0].astype(np.float32))
        ours = resample.resize_bilinear(scores, image.shape[:2]).argmax(-1)
        assert mediapipe.shape == image.shape[:2] and (mediapipe == ours).mean() > 0.97, stem
