"""A check with power: a file of the same run one epoch later (a model that disagrees with this one on under 1%
of the pixels) fails the agreement check at the default thresholds, named as such, and the right file passes:
exactly by the fingerprint every file carries (export.fingerprint), and by what the same quantization of the
model does (export.expected) for a file converted elsewhere, which carries none."""

import numpy as np
import pytest

from conftest import once_per_session, run_cli, run_main


def _one_epoch_later(base, model, dataset, epochs, **settings):
    """The run's model after `epochs` epochs (first/model.keras), and the same model trained one epoch more
    (later.keras, beside its copy of the run's record: its held-out split)."""
    import keras

    from kerasseg import losses, resolve
    from kerasseg.train import TrainConfig, train

    first = base / "first"
    run = train(TrainConfig(first, model=model, dataset=dataset, image_size=32, epochs=epochs, batch_size=8,
                            lr=0.01, augment="flip", seed=2, **settings))
    later = run.load_model()
    split = resolve.data_view(first / "model.keras").load_split("train", (32, 32))
    later.compile(optimizer=keras.optimizers.Adam(1e-3), loss=losses.SegmentationLoss("ce"))
    later.optimizer.build(later.trainable_variables)  # (the first step traced once: see kerasseg/training/_fitting.py)
    later.fit(split.images.astype("float32"), split.masks, batch_size=8, epochs=1, verbose=0)
    later.save(first / "later.keras")


# (the DeepLab v3+'s cases, 210 s in all, run in make test-large)
@pytest.fixture(scope="session", params=["unet", pytest.param("deeplab", marks=pytest.mark.large)])
def epoch_apart(request, user_run, tmp_path_factory):
    """A U-Net (8 epochs) and a DeepLab v3+ (6 epochs) trained on the user's folder, and each one epoch later."""
    folder = user_run[1]
    if request.param == "unet":
        make = lambda base: _one_epoch_later(base, "unet_tiny", f"folder:{folder}", 8,  # noqa: E731
                                             model_args={"base_filters": 8})
    else:
        make = lambda base: _one_epoch_later(base, "deeplab_v3_plus_tiny", f"folder:{folder}", 6)  # noqa: E731
    base = once_per_session(tmp_path_factory, f"epoch-apart-{request.param}", make)
    return base / "first" / "model.keras", base / "first" / "later.keras"


def _held_out(model_path):
    """(the images compared on, those int8 is calibrated on): the user's folder holds 48 pictures, 4 of them
    held out, too few to measure a drift of a fraction of a percent; agreement needs no held-out images."""
    from kerasseg import resolve

    view = resolve.data_view(model_path)
    return view.pairs("train", 32, (32, 32)), view.pairs("train", 32, (32, 32))


FILES = [("tflite", "int8"), ("tflite", "float16"), ("onnx", "float32")]


@pytest.mark.parametrize("fmt, quantize", FILES)
def test_the_file_of_the_next_epoch_fails_by_its_fingerprint_and_its_own_passes(epoch_apart, fmt, quantize,
                                                                                tmp_path):
    from export import agreement, onnx, tflite

    first, later = epoch_apart
    validation, calibration = _held_out(first)
    path = tmp_path / f"later.{fmt}"
    exporter = tflite.export if fmt == "tflite" else onnx.export
    options = {"quantize": quantize} if fmt == "tflite" else {}
    made = exporter(later, path, validation=validation, calibration=calibration, **options)
    assert made.passed and made["fingerprint"]["file"] == made["fingerprint"]["model"]
    own = agreement.check(later, path, validation)
    assert own.passed, own.failed
    other = agreement.check(first, path, validation)
    assert not other.passed and other.failed[0].startswith("fingerprint: the file was converted from other weights")
    meant = agreement.check(first, path, validation, other_weights=True)  # (a pairing that is meant)
    assert not any(f.startswith("fingerprint") for f in meant.failed) and "other_weights" in meant[
        "fingerprint"]["note"]


def test_the_command_line_names_the_other_weights(epoch_apart, tmp_path, capsys):
    from export import agreement, tflite

    first, later = epoch_apart
    validation, calibration = _held_out(first)
    tflite.export(later, tmp_path / "later.tflite", quantize="int8", validation=validation, calibration=calibration)
    capsys.readouterr()
    assert run_main(agreement.main, first, tmp_path / "later.tflite") == 1
    assert "fingerprint: the file was converted from other weights" in capsys.readouterr().err


@pytest.mark.parametrize("quantize", ["int8", "float16"])
def test_a_file_converted_elsewhere_is_held_to_what_the_same_quantization_does(epoch_apart, quantize, tmp_path):
    """A file without a fingerprint (converted by other code: the converter's bytes as they come) is held to
    the same quantization of the model, made here: its weights are that file's (one epoch later, nearly half
    of int8's lie two rounding steps away or more), and its drift is within a few times that file's. The file of
    the weights one Adam step later, whose outputs drift within the bar (0.18% of the pixels against int8's
    own 0.13% in one run: the drift alone let it through, as it let CI's epoch-later file through, 0.71%
    against 0.33%), fails by its weights."""
    import keras

    from export import agreement, fingerprint, tflite
    from kerasseg import files, losses, resolve
    from kerasseg.resample import resize_image

    first, later = epoch_apart
    validation, calibration = _held_out(first)
    split = resolve.data_view(first).load_split("train", (32, 32))
    step = files.load_keras_model(first)
    step.compile(optimizer=keras.optimizers.Adam(1e-3), loss=losses.SegmentationLoss("ce"))
    step.optimizer.build(step.trainable_variables)  # (the first step traced once: see kerasseg/training/_fitting.py)
    step.train_on_batch(split.images[:8].astype("float32"), split.masks[:8])
    step.save(tmp_path / "step.keras")
    images = np.stack([resize_image(image, (32, 32)) for image, _ in calibration.pairs]).astype(np.float32)
    sources = {"later": later, "step": tmp_path / "step.keras"} if quantize == "int8" else {
        "step": tmp_path / "step.keras"}  # (float16's epoch-later file drifts beyond its bar as well)
    for name, source in sources.items():
        content = tflite.convert(files.load_keras_model(source), quantize, (32, 32), images[::2])  # (no fingerprint)
        path = tmp_path / f"{name}.tflite"
        path.write_bytes(content)
        assert fingerprint.read(path) is None
        own = agreement.check(source, path, validation)  # (calibrated on other images than the check's)
        assert own.passed and own["expected"]["weights"]["differing"] == 0, (own.failed, own["expected"])
        other = agreement.check(first, path, validation)
        assert not other.passed and other.failed[0].startswith("weights: ") and not any(
            f.startswith("fingerprint") for f in other.failed), other.failed
        assert other["expected"]["weights"]["differing"] > 0.05 and other["expected"]["how"].startswith(
            f"tflite {quantize}")
    meant = agreement.check(first, path, validation, other_weights=True)
    assert not any(f.startswith("weights") for f in meant.failed) and "other_weights" in meant["fingerprint"]["note"]


def test_the_command_line_compares_a_foreign_files_weights_and_checks_a_dynamic_file_at_the_training_size(
        epoch_apart, tmp_path):
    """`python -m export.agreement` on its own (no exporter imported in the process) still holds a file without
    a fingerprint to the same conversion made here: the epoch-later int8 file fails by its weights (the
    command once found no format to convert with and held it to the default 0.99 alone). A file converted with
    a dynamic height and width (TFLiteConverter.from_keras_model of a model that takes any size: a 1x1
    placeholder input) is run at the model's training size, 32x32, not at 1x1."""
    import tensorflow as tf

    from export import agreement, tflite
    from kerasseg import files
    from kerasseg.resample import resize_image

    first, later = epoch_apart
    validation, calibration = _held_out(first)
    images = np.stack([resize_image(image, (32, 32)) for image, _ in calibration.pairs]).astype(np.float32)
    foreign = tmp_path / "foreign int8.tflite"
    foreign.write_bytes(tflite.convert(files.load_keras_model(later), "int8", (32, 32), images))
    result = run_cli("export.agreement", first, foreign)
    assert result.returncode == 1 and "agreement: FAILED: weights: " in result.stderr, result.stderr[-2000:]
    dynamic = tmp_path / "dynamic.tflite"
    dynamic.write_bytes(tf.lite.TFLiteConverter.from_keras_model(files.load_keras_model(later)).convert())
    own = agreement.check(later, dynamic, validation)
    assert own.passed and own["image_size"] == [32, 32], own.failed  # (float32: max |error| under 1e-4)
    other = agreement.check(first, dynamic, validation)
    assert not other.passed and other["image_size"] == [32, 32], other.failed


def test_an_miou_gain_beyond_sampling_noise_is_flagged_not_passed():
    from export import report as reports

    rng = np.random.default_rng(0)
    cms = [np.diag(rng.integers(50, 100, 3)) + rng.integers(0, 5, (3, 3)) for _ in range(20)]
    assert reports.paired_noise(cms, cms) == 0.0  # the same predictions: no noise
    base = {"samples": 20, "pixel_agreement": 0.995, "miou_drop": -2.0, "miou_drop_noise": 0.3}
    failed = reports.check(base, {"pixel_agreement": 0.99})
    assert len(failed) == 1 and failed[0].startswith("miou_gain 2 > 1")
    assert reports.check({**base, "miou_drop": -0.9}, {"pixel_agreement": 0.99}) == []  # (under int8's bar)
    assert reports.check({**base, "miou_drop_noise": 1.0}, {"pixel_agreement": 0.99}) == []  # (within the noise)
