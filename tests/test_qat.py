"""Quantization-aware training: the simulation is TFLite's arithmetic, the export keeps what was learned, and
the pixel normalization of VGG/ResNet ("caffe") survives int8."""

import json
import shutil
import signal

import keras
import numpy as np
import pytest

from conftest import USER_CLASSES, run_cli
from export.commands import DataOptions
from export.formats import exporter_inputs
from kerasseg import resolve
from kerasseg.data.sources import read_image
from export.internals import read_tflite
from kerasseg import data, files, internals, layers, losses, models, qat
from kerasseg.quantization import kinds as layer_kinds
from kerasseg.layers.quantization import FakeQuant, HardSigmoidStep
from export import converter, tflite


def _litert_outputs(content, images, resolver=None):
    """The file's dequantized outputs on `images` (on the kernels of `resolver`, an OpResolverType), and the
    output scale."""
    from ai_edge_litert.interpreter import Interpreter, OpResolverType

    interpreter = Interpreter(model_content=bytes(content), experimental_op_resolver_type=resolver or
                              OpResolverType.AUTO)
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


def _trained(name, seed=0, steps=6, size=32, **kwargs):
    """`name` (registered, or a function of the class count building the model) trained for a few steps on
    `shapes` (in-process, eagerly: a graph would take longer to trace than
    to run; its batch norms' offsets and its ranges are then a trained model's, not zeros), then made
    quantization-aware and fine-tuned for two steps: (the quantization-aware model, its training images,
    held-out images)."""
    keras.utils.set_random_seed(seed)
    train, test = data.load_split("shapes", "train", (size, size), count=64), \
        data.load_split("shapes", "test", (size, size), count=16)
    images = train.images.astype(np.float32)
    model = name(train.num_classes) if callable(name) else models.create_model(name, classes=train.num_classes,
                                                                               **kwargs)
    model.compile(optimizer=keras.optimizers.Adam(1e-2), loss=losses.SegmentationLoss("ce"), run_eagerly=True)
    model.fit(images, train.masks, batch_size=32, epochs=steps // 2, verbose=0)
    quantized = qat.quantization_aware(model, images[:32])
    quantized.compile(optimizer=keras.optimizers.Adam(1e-4), loss=losses.SegmentationLoss("ce"), run_eagerly=True)
    quantized.fit(images, train.masks, batch_size=32, epochs=1, verbose=0)
    return quantized, images, test.images.astype(np.float32)


def _assert_computes_what_the_file_computes(content, images, simulated):
    """The int8 file `content` on `images` against `simulated` (its quantization-aware Keras model's logits),
    held to LiteRT's agreement with itself: the same file on its XNNPACK and its reference kernels. A
    simulation in float cannot be closer to the file than the file's two kernels are to each other.

    Classes are compared on the pixels the file decides: where its top two logits are three or more output
    steps apart. The two kernels' logits differ by up to a step or two at a pixel, so at a closer margin the
    last rounding picks the class, and picks differently in each. On the 6-step SE-ResNet half the pixels are
    that close: over all pixels its kernels agreed on 82-87% and the simulation on 84-86%, ahead or behind
    from one machine to the next; on the pixels three steps apart, 99.76% and 99.98%."""
    from ai_edge_litert.interpreter import OpResolverType

    lite, scale = _litert_outputs(content, images)
    reference, _ = _litert_outputs(content, images, OpResolverType.BUILTIN_REF)
    top = np.sort(lite, -1)
    decided = (top[..., -1] - top[..., -2]) / scale > 2.5
    assert decided.mean() > 0.1, decided.mean()  # (else the comparison below says little)
    classes = lite.argmax(-1)
    floor = (classes == reference.argmax(-1))[decided].mean()
    assert (classes == simulated.argmax(-1))[decided].mean() >= floor - 0.002
    # on average within half a step of the file's own two kernels (measured 0.02-0.4 steps beyond them, the
    # most where calibration rounds "torch" and "caffe" pixels, which the simulation leaves in float)
    assert np.abs(lite - simulated).mean() <= np.abs(lite - reference).mean() + 0.5 * scale


# DenseNet: pre-activation batch norms (MUL, ADD) and block concatenations; EfficientNet: swish (LOGISTIC, MUL)
# and squeeze-excitation (mean, sigmoid gate, MUL); MobileNetV2: depthwise, ReLU6, ASPP and a decoder
# concatenation; VGG: "caffe" pixels and transposed convolutions; SE-ResNet: ResNet's bottlenecks, projection
# shortcuts and residual additions, with SE gates, dilated by DeepLab v3's multi-grid; GoogLeNet: inception
# branches joined by concatenation, max pooling inside and between modules, convolutions with biases and no
# batch norm; LR-ASPP on MobileNetV3: hard-swish (HARD_SWISH), squeeze-excitation gated by hard-sigmoid (the
# convolution with +3 and ReLU6 fused, then MUL by 1/6) and the head's sigmoid-gated branch
# (make test runs three families, DenseNet's, SE-ResNet's and MobileNetV3's; make test-large the other four)
@pytest.mark.parametrize("name, backbone", [("deeplab_v3_plus_tiny", "densenet_tiny"),
                                            pytest.param("deeplab_v3_plus_tiny", "efficientnet_tiny",
                                                         marks=pytest.mark.large),
                                            pytest.param("deeplab_v3_plus_tiny", None, marks=pytest.mark.large),
                                            pytest.param("fcn8s_tiny", None, marks=pytest.mark.large),
                                            ("deeplab_v3_tiny", "se_resnet_tiny"),
                                            pytest.param("hypercolumns_tiny", "googlenet_tiny",
                                                         marks=pytest.mark.large),
                                            ("lraspp_tiny", None)])
def test_every_family_writes_every_learned_range_and_its_int8_file_computes_what_it_simulates(name, backbone):
    quantized, images, held_out = _trained(name, **({"backbone": backbone} if backbone else {}))
    content, learned = converter.convert_with_learned(quantized, "int8", (32, 32), images[:64])
    # every rounding the simulation learned is one tensor of the file (the old code left 62 of DenseNet-121's
    # 317 and 17 of EfficientNet-B0's 171 unwritten, and said "passed")
    assert learned["simulated"] == learned["written"] > 10, learned
    twin, _ = qat.export_twin(quantized)
    pixels = [layer.name for layer in twin.layers if qat.layer_kind(layer) == "pixels"]
    # what calibration still sets: only the pixel normalization, which the simulation leaves in float
    assert all(any(f"/{p}_" in t or f"/{p}/" in t for p in pixels) for t in learned["calibrated"]), learned
    _assert_computes_what_the_file_computes(content, held_out, quantized.predict(held_out, verbose=0))


def test_a_learned_range_lands_on_its_own_tensor_whatever_the_values():
    """Two ReLU branches summed, and a dark first calibration image on which one branch is all zero: the old
    code matched tensors by value on that image and wrote the sum's range onto the other branch."""
    image = keras.Input((8, 8, 3))
    branch_a = keras.layers.Conv2D(4, 1, activation="relu", name="branch_a")(image)
    branch_b = keras.layers.Conv2D(4, 1, activation="relu", name="branch_b")(image)
    total = keras.layers.Add(name="total")([branch_a, branch_b])
    model = keras.Model(image, keras.layers.Conv2D(2, 1, name="logits")(total))
    model.get_layer("branch_a").set_weights([np.full((1, 1, 3, 4), 0.002, np.float32), np.full(4, 0.1, np.float32)])
    model.get_layer("branch_b").set_weights([np.full((1, 1, 3, 4), 0.02, np.float32), np.full(4, -1.0, np.float32)])
    pixels = np.random.default_rng(0).integers(0, 256, (8, 8, 8, 3)).astype(np.float32)
    pixels[0] = 0  # dark: branch_b is 0 and the sum equals branch_a
    quantized = qat.quantization_aware(model, pixels)
    low, high = (float(keras.ops.convert_to_numpy(v)) for v in
                 (quantized.get_layer("branch_a_quant").range_min, quantized.get_layer("branch_a_quant").range_max))
    content = tflite.convert(quantized, "int8", (8, 8), pixels)
    graph = read_tflite(content).subgraphs[0]
    written = [graph.tensors[i] for op in graph.operators for i in op.outputs]  # not the weights
    tensor = next(t for t in written if "branch_a" in t.name.decode())
    assert tensor.quantization.scale[0] == pytest.approx((high - low) / 255, rel=1e-5)


def test_percentile_calibration_clips_a_rare_outlier_holds_its_range_while_training_and_the_file_keeps_it():
    """calibration="percentile": each range at the 99.99th percentiles of the calibration values, not their
    min and max (one bright pixel in 64 images sets "mid"'s max), and held while training (following the
    batches' extremes would widen it back), where "minmax" follows the batches."""
    keras.utils.set_random_seed(0)
    image = keras.Input((16, 16, 3))
    mid = keras.layers.Conv2D(4, 1, activation="relu", name="mid")(image)
    model = keras.Model(image, keras.layers.Conv2D(2, 1, name="logits")(mid))
    model.get_layer("mid").set_weights([np.full((1, 1, 3, 4), 0.01, np.float32), np.zeros(4, np.float32)])
    pixels = np.random.default_rng(3).integers(90, 150, (64, 16, 16, 3)).astype(np.float32)  # (uint8 frames)
    pixels[5, 7, 9] = 255.0  # (its 4 values of "mid" are the 4 largest of 65,536)
    values = keras.Model(image, mid).predict(pixels, verbose=0).ravel()
    with pytest.raises(qat.QuantizationError, match="'mse' is not one of minmax, percentile"):
        qat.quantization_aware(model, pixels, calibration="mse")
    ranges = {}
    for calibration in ("minmax", "percentile"):
        quantized = qat.quantization_aware(model, pixels, calibration=calibration)
        point = quantized.get_layer("mid_quant")
        ranges[calibration] = [float(keras.ops.convert_to_numpy(v)) for v in (point.range_min, point.range_max)]
        quantized.compile(optimizer=keras.optimizers.Adam(1e-3), loss="mse")
        quantized.fit(pixels[:16], np.zeros((16, 16, 16, 2), np.float32), batch_size=8, epochs=1, verbose=0)
        ranges[calibration].append(float(keras.ops.convert_to_numpy(point.range_max)))
    assert ranges["minmax"][:2] == pytest.approx([0.0, values.max()])
    assert ranges["minmax"][2] < ranges["minmax"][1]  # (the batches' max: the outlier's batch and one without)
    high = np.percentile(values, 99.99)
    assert ranges["percentile"] == pytest.approx([0.0, high, high]) and high < 0.8 * values.max()
    content, learned = converter.convert_with_learned(quantized, "int8", (16, 16), pixels)
    assert learned["simulated"] == learned["written"] == 2, learned
    _assert_computes_what_the_file_computes(content, pixels, quantized.predict(pixels, verbose=0))


def test_a_layer_the_simulation_cannot_compute_is_refused_by_name_before_training():
    image = keras.Input((16, 16, 3))
    x = keras.layers.Conv2D(8, 3, padding="same", activation="gelu", name="stem")(image)
    x = keras.layers.LayerNormalization(name="norm")(x)
    model = keras.Model(image, keras.layers.Conv2D(2, 1, name="logits")(x))
    with pytest.raises(qat.QuantizationError, match=r"2 layer\(s\).*stem \(Conv2D, activation gelu\), norm "
                                                     r"\(LayerNormalization\)"):
        qat.quantization_aware(model, np.zeros((2, 16, 16, 3), np.float32))


def test_a_mixed_precision_model_is_simulated_in_float32(mixed_run):
    """The old simulation kept the shared layers in bfloat16, up to 7 int8 steps from the float32 rebuild
    that the export compares with."""
    model = keras.saving.load_model(mixed_run / "model.keras", compile=False)
    pixels = data.load_split("shapes", "test", (32, 32), count=16).images.astype(np.float32)
    quantized = qat.quantization_aware(model, pixels)
    assert {layer.dtype_policy.compute_dtype for layer in internals.all_layers(quantized)} == {"float32"}
    lite, scale = _litert_outputs(tflite.convert(quantized, "int8", (32, 32), pixels), pixels)
    assert np.abs(lite - quantized.predict(pixels, verbose=0)).max() <= 3 * scale


def test_quantization_aware_cli_on_a_users_folder_exports_its_learned_ranges(user_run, tmp_path):
    run, folder = user_run
    out = tmp_path / "qat"
    shutil.copytree(run, tmp_path / "float run", ignore=shutil.ignore_patterns("backup", "logs"))
    float_model = tmp_path / "float run" / "model.keras"
    # no --lr: a fine-tuning rate (the float rate, 2e-3, took the demo U-Net from 0.930 to 0.678 in one epoch);
    # killed after its first epoch, then resumed with the --init-from file gone: the run holds all it needs
    # (--augment flip, as the float run: the float model is scored in this run's geometry, each picture
    # resized to 32x32 as flip-only training resizes, so its score here is its own run's)
    result = run_cli("kerasseg.train", "--init-from", float_model, "--quantization-aware",
                     "--dataset", f"folder:{folder}", "--image-size", "32", "--epochs", "2", "--batch-size", "8",
                     "--augment", "flip", "--seed", "5", "--output", out, env={"KERASSEG_CRASH_AT": "history:0"})
    assert result.returncode == -signal.SIGKILL, result.stderr[-3000:]
    float_model.unlink()
    result = run_cli("kerasseg.train", "--output", out, "--resume")
    assert result.returncode == 0, result.stderr
    assert "resuming" in result.stdout and len((out / "history.csv").read_text().splitlines()) == 3
    # the record names no model it did not build (it said "unet_edge", --model's default, for this U-Net)
    assert json.loads((out / "run.json").read_text())["arguments"]["model"] is None
    metrics = json.loads((out / "metrics.json").read_text())
    assert metrics["model"] == keras.saving.load_model(run / "model.keras", compile=False).name
    assert metrics["quantization_aware"] and list(metrics["per_class_iou"]) == list(USER_CLASSES)
    assert metrics["epochs_run"] == 2 and metrics["lr"] == 1e-4
    # the float model's score beside the quantization-aware one's, which keeps it; on the float run's own
    # validation images (its splits, not those of --seed 5)
    assert metrics["init_from_miou"] == pytest.approx(json.loads((run / "metrics.json").read_text())["miou"])
    assert files.read_lines(out / "splits" / "val.txt") == files.read_lines(run / "splits" / "val.txt")
    assert metrics["miou"] >= metrics["init_from_miou"] - 0.02
    assert "the float model it fine-tuned" in result.stdout
    model = keras.saving.load_model(out / "model.keras", compile=False)
    points = {layer.name: layer for layer in model.layers if isinstance(layer, FakeQuant)}
    head = points["head_logits_quant"]
    low, high = (float(keras.ops.convert_to_numpy(v)) for v in (head.range_min, head.range_max))

    path = tmp_path / "qat.tflite"
    stage = resolve.stage(out / "model.keras")
    report = tflite.export(stage.file, path, **exporter_inputs(stage, DataOptions(), calibrate=True))
    assert report["passed"], report["failed"]
    assert report["quantization_aware"] and report["dataset"] == f"folder:{folder}"
    # every tensor a FakeQuant rounds (a concatenation's rounds its inputs too; the rounding after a resize is
    # its input's) has its learned range in the file
    rounded = sum(not qat.keeps_scale(internals.producer(inputs[0]))
                  for point in points.values() for inputs in internals.calls(point))
    assert report["learned_ranges"]["written"] == report["learned_ranges"]["simulated"] == rounded
    from ai_edge_litert.interpreter import Interpreter

    interpreter = Interpreter(model_path=str(path))
    assert interpreter.get_input_details()[0]["quantization"] == (1.0, 0)
    # the logits' range is the one training learned (not recalibrated: the EMA moved it)
    assert interpreter.get_output_details()[0]["quantization"][0] == pytest.approx((high - low) / 255, rel=1e-5)
    images = np.stack([read_image(str(p)) for p in sorted((folder / "images").iterdir())
                       if read_image(str(p)).shape[:2] == (48, 48)]).astype(np.float32)
    images = np.round(keras.ops.convert_to_numpy(keras.ops.image.resize(images, (32, 32))))  # camera frames
    lite, scale = _litert_outputs(path.read_bytes(), images)
    assert np.abs(lite - model.predict(images, verbose=0)).mean() < 0.5 * scale
    # exported without int8 arithmetic, it is its float twin, and compared with that (the old code compared
    # the float32 file with the int8 simulation: max |error| 0.287, FAILED)
    for quantize in ("float32", "int16x8"):
        report = tflite.export(out / "model.keras", tmp_path / f"{quantize}.tflite", quantize=quantize,
                               **exporter_inputs(resolve.stage(out / "model.keras"),
                                                 DataOptions(calibration_samples=16), calibrate=True))
        assert report["passed"] and "float twin" in report["compared_with"], report["failed"]
        if quantize == "float32":
            assert report["max_abs_error"] < 1e-4


@pytest.mark.large
def test_percentile_qat_resumed_holds_the_ranges_it_calibrated(user_run, tmp_path):
    """`qat_calibration="percentile"`, trained one epoch, then resumed for a second (a resume after a kill
    restores the same backup: test above): the resumed epoch trains the weights and leaves every range where
    the calibration set it (a resume that rebuilt the points with min/max's moving average would move them)."""
    from kerasseg.train import TrainConfig, train

    run, folder = user_run
    out = tmp_path / "qat percentile"

    def state():
        """(ranges by point, the other weights) of the run's last backed-up epoch."""
        model = keras.saving.load_model(out / "model.keras", compile=False)
        model.load_weights(out / "backup" / json.loads((out / "backup" / "state.json").read_text())["weights"])
        points = [layer for layer in model.layers if isinstance(layer, FakeQuant)]
        assert points and {point.decay for point in points} == {1.0}
        ranges = {p.name: [float(keras.ops.convert_to_numpy(v)) for v in (p.range_min, p.range_max)] for p in points}
        kept = {id(v) for p in points for v in p.weights}
        return ranges, [keras.ops.convert_to_numpy(v) for v in model.weights if id(v) not in kept]

    train(TrainConfig(out, init_from=run / "model.keras", quantization_aware=True, qat_calibration="percentile",
                      lr=1e-3, dataset=f"folder:{folder}", image_size=32, epochs=1, batch_size=8))
    ranges, weights = state()
    resumed = train(TrainConfig.resumed(out, epochs=2))
    assert resumed.metrics["epochs_run"] == 2 and resumed.metrics["qat_calibration"] == "percentile"
    resumed_ranges, resumed_weights = state()
    assert resumed_ranges == ranges
    assert max(np.abs(a - b).max() for a, b in zip(weights, resumed_weights)) > 1e-4  # (it trained)


def test_quantization_aware_refusals(user_run, tmp_path, capsys):
    from kerasseg import cli, train
    from export import onnx

    def refused(main, *args):
        capsys.readouterr()
        assert cli.run(main, [str(a) for a in args]) == 2
        return capsys.readouterr().err

    run, folder = user_run
    assert "--init-from" in refused(train.main, "--quantization-aware", "--output", tmp_path / "a")
    assert "has 3 output channels (3 classes), but shapes has 4" in refused(
        train.main, "--init-from", run / "model.keras", "--quantization-aware", "--dataset", "shapes", "--output",
        tmp_path / "b")
    qat_run = tmp_path / "qat"
    qat_run.mkdir()
    for name in ("run.json", "splits"):
        (qat_run / name).symlink_to(run / name)
    images = np.zeros((2, 32, 32, 3), np.float32)
    qat.quantization_aware(keras.saving.load_model(run / "model.keras", compile=False), images).save(
        qat_run / "model.keras")
    for main, flags in ((onnx.main, ["--quantize", "int8", "--calibration-method", "minmax"]),
                        (tflite.main, ["--keep-float", "head_logits"]),
                        # the old code took percentile, then overwrote its ranges with the learned ones
                        (tflite.main, ["--calibration", "percentile"])):
        assert "quantization-aware" in refused(main, qat_run / "model.keras", "--output", tmp_path / "x.out", *flags)
        assert not (tmp_path / "x.out").exists()
    # a model whose layers the simulation cannot compute: named before any training (exit 2, nothing written)
    image = keras.Input((None, None, 3))
    x = keras.layers.Conv2D(8, 3, padding="same", activation="gelu", name="stem")(image)
    keras.Model(image, keras.layers.Conv2D(3, 1, name="logits")(x)).save(tmp_path / "gelu.keras")
    assert "stem (Conv2D, activation gelu)" in refused(train.main, "--init-from", tmp_path / "gelu.keras",
                                                       "--quantization-aware", "--dataset", f"folder:{folder}",
                                                       "--output", tmp_path / "c")
    assert not (tmp_path / "c").exists()


def test_a_run_recorded_before_init_from_existed_still_resumes(user_run, tmp_path):
    from kerasseg import train

    run, _ = user_run
    record = json.loads((run / "run.json").read_text())
    for key in ("init_from", "quantization_aware"):
        record["arguments"].pop(key)
    (tmp_path / "run.json").write_text(json.dumps(record))
    args = train.parse_args(["--output", str(tmp_path), "--resume"])
    assert args.init_from is None and args.quantization_aware is False and args.seed == 3


class _HalfSize(keras.layers.Layer):
    """A user's own layer: a bilinear resize to half the size (one RESIZE_BILINEAR in the file)."""

    def call(self, x):
        return keras.ops.image.resize(x, (x.shape[1] // 2, x.shape[2] // 2), interpolation="bilinear")

    def compute_output_shape(self, shape):
        return (shape[0], shape[1] // 2, shape[2] // 2, shape[3])


def test_a_users_own_layer_is_refused_until_registered_then_simulated_as_declared():
    """kerasseg.qat.register: the hook for a layer the simulation does not know, keyed by its class (exactly:
    a subclass of a known layer may compute something else)."""
    from kerasseg.errors import InputError

    class Conv2DSubclass(keras.layers.Conv2D):
        pass

    keras.utils.set_random_seed(0)
    image = keras.Input((16, 16, 3))
    x = keras.layers.Conv2D(8, 3, padding="same", activation="relu", name="stem")(image)
    x = keras.layers.Conv2D(8, 1, activation="relu", name="mix")(_HalfSize(name="half")(x))
    x = keras.layers.UpSampling2D(interpolation="bilinear", name="up")(x)
    model = keras.Model(image, keras.layers.Conv2D(2, 1, name="logits")(x))
    pixels = np.random.default_rng(0).integers(0, 256, (8, 16, 16, 3)).astype(np.float32)
    with pytest.raises(qat.QuantizationError, match=r"1 layer\(s\).*half \(_HalfSize\).*kerasseg\.qat\.register"):
        qat.quantization_aware(model, pixels)
    qat.register(_HalfSize, "interpolating")
    try:
        quantized = qat.quantization_aware(model, pixels)
        content, learned = converter.convert_with_learned(quantized, "int8", (16, 16), pixels)
    finally:
        del layer_kinds._RULES[_HalfSize]  # (registered for this test only)
    # stem, mix, logits (each resize rounds to its input's range: no range of its own)
    assert learned["simulated"] == learned["written"] == 3, learned
    _assert_computes_what_the_file_computes(content, pixels, quantized.predict(pixels, verbose=0))
    for layer_class, kind in ((_HalfSize, "resize"), (keras.layers.Conv2D, "same_scale"), (int, "learned")):
        with pytest.raises(InputError, match="kind must be one of|Layer subclass"):
            qat.register(layer_class, kind)
    subclassed = keras.Model(image, Conv2DSubclass(2, 1, name="custom_conv")(image))
    with pytest.raises(qat.QuantizationError, match=r"custom_conv \(Conv2DSubclass\)"):
        qat.quantization_aware(subclassed, pixels)


def test_a_quantization_aware_model_exports_to_int8_onnx_at_its_learned_ranges(user_run, tmp_path):
    """Its own graph in ONNX: every rounding it learned a QuantizeLinear / DequantizeLinear pair at that range
    (the old code refused it), ONNX Runtime computing what the quantization-aware Keras model computes."""
    import onnx as onnx_lib

    from export import onnx

    run, folder = user_run
    train, test = (data.load_split(f"folder:{folder}", split, (32, 32)) for split in ("train", "test"))
    quantized = qat.quantization_aware(keras.saving.load_model(run / "model.keras", compile=False),
                                       train.images[:16].astype(np.float32))
    assert quantized.class_names == USER_CLASSES and quantized.image_size == (32, 32)  # (its description kept)
    path = tmp_path / "qat int8.onnx"
    report = onnx.export(quantized, path, quantize="int8", validation=(test.images, test.masks))  # no calibration
    assert report.passed and report.pixel_agreement >= 0.995, report.failed
    learned = report["learned_ranges"]
    assert learned["written"] == learned["simulated"] > 10, learned
    graph = onnx_lib.load(str(path)).graph
    constants = {t.name: onnx_lib.numpy_helper.to_array(t) for t in graph.initializer}
    scales = sorted(float(constants[n.input[1]]) for n in graph.node if n.op_type == "QuantizeLinear")
    head = next(layer for layer in quantized.layers if isinstance(layer, FakeQuant) and "logits" in layer.name)
    low, high = (float(keras.ops.convert_to_numpy(v)) for v in (head.range_min, head.range_max))
    assert min(abs(s - (high - low) / 255) for s in scales) < 1e-6 * (high - low)  # the logits' learned range


def test_layer_names_that_tensorflow_would_confuse_still_place_every_range():
    """Layers named c, c_1, c_2 (Keras's own defaults are conv2d, conv2d_1, ...): TensorFlow writes the second
    trace of `c` under the scope `c_1`, and the old code found two tensors for c_1's range and refused the
    export (or could have written a range onto another layer's tensor)."""
    image = keras.Input((16, 16, 3))
    x = keras.layers.Conv2D(4, 3, padding="same", activation="relu", name="c")(image)
    x = keras.layers.Conv2D(4, 3, padding="same", activation="relu", name="c_1")(keras.layers.MaxPooling2D()(x))
    model = keras.Model(image, keras.layers.Conv2D(2, 1, name="c_2")(keras.layers.UpSampling2D()(x)), name="m")
    pixels = np.random.default_rng(0).integers(0, 256, (8, 16, 16, 3)).astype(np.float32)
    quantized = qat.quantization_aware(model, pixels)
    names = [layer.name for layer in internals.all_layers(quantized)]
    content, learned = converter.convert_with_learned(quantized, "int8", (16, 16), pixels)
    assert learned["simulated"] == learned["written"] == 3, learned
    assert [layer.name for layer in internals.all_layers(quantized)] == names  # (renamed while converting only)
    graph = read_tflite(content).subgraphs[0]
    point = quantized.get_layer("c_1_quant")
    low, high = (float(keras.ops.convert_to_numpy(v)) for v in (point.range_min, point.range_max))
    written = [graph.tensors[i] for op in graph.operators for i in op.outputs]
    assert any(t.quantization.scale[0] == pytest.approx((high - low) / 255, rel=1e-5) for t in written)
    assert not any(b"__l" in t.name for t in graph.tensors)  # (the file names its tensors after the layers)


def test_a_learned_range_padded_by_the_edge_tpu_resize_survives_quantization():
    """The Edge TPU resize (edge=True, unet_edge's decoder) pads its input by concatenating it with its own
    border slices; the quantizer gives that input the concatenation's calibrated scale, and the old code
    refused the export (4 learned ranges of the demo's QAT model "did not survive quantization")."""
    from kerasseg.layers import Upsample

    keras.utils.set_random_seed(0)
    image = keras.Input((16, 16, 3))
    skip = keras.layers.Conv2D(4, 3, padding="same", activation="relu", name="skip")(image)
    x = keras.layers.Conv2D(4, 1, name="upconv")(keras.layers.MaxPooling2D()(skip))  # linear: its own range
    x = keras.layers.Activation("relu", name="upconv_relu")(Upsample(2, edge=True, name="upsample")(x))
    x = keras.layers.Concatenate(name="concat")([skip, x])
    model = keras.Model(image, keras.layers.Conv2D(2, 1, name="logits")(x))
    pixels = np.random.default_rng(0).integers(0, 256, (8, 16, 16, 3)).astype(np.float32)
    quantized = qat.quantization_aware(model, pixels)
    point = quantized.get_layer("upconv_quant")  # as training moves it: away from the float model's min / max
    low, high = (float(keras.ops.convert_to_numpy(v)) for v in (point.range_min, point.range_max))
    point.set_range(0.8 * low, 0.8 * high)
    content, learned = converter.convert_with_learned(quantized, "int8", (16, 16), pixels)
    assert learned["simulated"] == learned["written"] >= 3, learned  # upconv's among them
    _assert_computes_what_the_file_computes(content, pixels, quantized.predict(pixels, verbose=0))


def test_a_learned_range_resized_by_the_edge_tpu_resize_at_the_output_is_written():
    """DeepLab's edge model ends in the Edge TPU resize of its logits to the image: the file's output is then
    written by the resize's last op, and the old code took it for the logits' own tensor, found two tensors
    leaving the logits and refused the export of every QAT DeepLab with edge=True."""
    from kerasseg.layers import ResizeToMatch

    keras.utils.set_random_seed(0)
    image = keras.Input((16, 16, 3))
    x = keras.layers.Conv2D(4, 3, strides=2, padding="same", activation="relu", name="features")(image)
    x = keras.layers.Conv2D(3, 1, name="logits")(x)
    model = keras.Model(image, ResizeToMatch(edge=True, name="to_image")(x, image))
    pixels = np.random.default_rng(0).integers(0, 256, (8, 16, 16, 3)).astype(np.float32)
    quantized = qat.quantization_aware(model, pixels)
    content, learned = converter.convert_with_learned(quantized, "int8", (16, 16), pixels)
    assert learned["simulated"] == learned["written"] == 2, learned
    _assert_computes_what_the_file_computes(content, pixels, quantized.predict(pixels, verbose=0))


def test_hard_swish_and_hard_sigmoid_are_simulated_where_a_model_puts_them():
    """Hard-swish and hard-sigmoid as a convolution's own activation, as a layer after a convolution (its +3 and
    ReLU6 fused into it by the converter) and after an addition (not fused): every rounding is one tensor of the
    file, and the file computes what the simulation does."""
    keras.utils.set_random_seed(1)
    image = keras.Input((16, 16, 3))
    x = keras.layers.Conv2D(8, 3, padding="same", activation="hard_swish", name="stem")(image)
    gate = keras.layers.Conv2D(8, 1, activation="hard_sigmoid", name="gate")(x)
    y = keras.layers.Multiply(name="gated")([x, gate])
    y = keras.layers.Conv2D(8, 3, padding="same", name="mix")(y)
    y = keras.layers.BatchNormalization(name="mix_bn")(y)
    y = keras.layers.Activation("hard_swish", name="mix_swish")(y)
    z = keras.layers.Conv2D(8, 1, name="side")(x)
    z = keras.layers.Activation("hard_sigmoid", name="side_gate")(keras.layers.Add(name="sum")([y, z]))
    model = keras.Model(image, keras.layers.Conv2D(4, 1, name="logits")(keras.layers.Multiply()([y, z])))
    pixels = np.random.default_rng(2).integers(0, 256, (32, 16, 16, 3)).astype(np.float32)
    model.compile("adam", "mse")
    model.fit(pixels, np.random.default_rng(3).normal(size=(32, 16, 16, 4)), epochs=2, verbose=0)  # (norms)
    quantized = qat.quantization_aware(model, pixels)
    content, learned = converter.convert_with_learned(quantized, "int8", (16, 16), pixels)
    assert learned["simulated"] == learned["written"] >= 10 and not learned["calibrated"], learned
    _assert_computes_what_the_file_computes(content, pixels, quantized.predict(pixels, verbose=0))


def test_hard_sigmoid_written_as_keras_ops_is_simulated_as_keras_applications_writes_it():
    """keras.applications' MobileNetV3 writes hard-sigmoid as keras.ops on tensors, `ReLU(6.0)(x + 3.0) * (1/6)`,
    not as a layer: simulated as the file computes it, after a convolution (its +3 and ReLU6 fused into it) and
    after an addition; another constant op is still refused by name."""
    keras.utils.set_random_seed(1)
    image = keras.Input((16, 16, 3))
    x = keras.layers.Conv2D(8, 3, padding="same", activation="relu", name="stem")(image)
    gate = keras.layers.ReLU(6.0)(keras.layers.Conv2D(8, 1, name="gate")(x) + 3.0) * (1.0 / 6.0)
    y = keras.layers.Multiply(name="gated")([x, gate])
    z = keras.layers.Add(name="sum")([y, keras.layers.Conv2D(8, 1, name="side")(x)])
    z = keras.layers.ReLU(6.0)(z + 3.0) * (1.0 / 6.0)
    model = keras.Model(image, keras.layers.Conv2D(4, 1, name="logits")(keras.layers.Multiply()([y, z])))
    pixels = np.random.default_rng(2).integers(0, 256, (32, 16, 16, 3)).astype(np.float32)
    quantized = qat.quantization_aware(model, pixels)
    steps = [layer.step for layer in quantized.layers if isinstance(layer, HardSigmoidStep)]
    assert steps == ["shift", "scale"] * 2, steps
    content, learned = converter.convert_with_learned(quantized, "int8", (16, 16), pixels)
    assert learned["simulated"] == learned["written"] >= 8 and not learned["calibrated"], learned
    _assert_computes_what_the_file_computes(content, pixels, quantized.predict(pixels, verbose=0))

    doubled = keras.Model(image, keras.layers.Conv2D(4, 1, name="logits2")(x * 2.0))
    with pytest.raises(qat.QuantizationError, match=r"multiply"):
        qat.quantization_aware(doubled, pixels)


@pytest.mark.large
@pytest.mark.parametrize("application", ["MobileNetV3Small", "MobileNetV3Large"])
def test_keras_applications_mobilenet_v3_is_simulated_and_its_int8_file_computes_what_it_simulates(application):
    """A model kerasseg did not build: keras.applications' MobileNetV3 (its hard-sigmoid keras.ops on tensors,
    its hard-swish layers, its squeeze-excitation) under a 1x1 class head, refused before (18 and 16 op
    nodes named): every learned range is one tensor of the file, and the file computes what it simulates."""
    def build(classes):
        base = getattr(keras.applications, application)(weights=None, include_top=False, input_shape=(64, 64, 3))
        logits = keras.layers.Conv2D(classes, 1, name="classes")(base.output)
        return keras.Model(base.input, keras.layers.Resizing(64, 64, name="to_input")(logits))

    quantized, images, held_out = _trained(build, size=64)
    content, learned = converter.convert_with_learned(quantized, "int8", (64, 64), images[:64])
    assert learned["simulated"] == learned["written"] > 50, learned
    # what calibration still sets: only keras.applications' pixel rescaling, which the simulation leaves in float
    assert all("/rescaling" in t for t in learned["calibrated"]), learned
    _assert_computes_what_the_file_computes(content, held_out, quantized.predict(held_out, verbose=0))
