"""The Edge TPU static check (export.edgetpu) and the edge=True segmenters it must pass."""

import json

import keras
import numpy as np
import pytest

from conftest import COMPILER_LOGS, program_lines, run_cli
from export import edgetpu, tflite
from kerasseg import models


def _int8(tmp_path, model, size, name="model.tflite"):
    calibration = np.random.default_rng(0).uniform(0, 255, (2, size, size, 3)).astype("float32")
    path = tmp_path / name
    path.write_bytes(tflite.convert(model, "int8", (size, size), calibration))
    return path


@pytest.mark.parametrize("name, kwargs, size", [
    ("unet", dict(base_filters=16, batch_norm=True, upsampling="bilinear", edge=True), 256),
    # (513 px and the full-size DeepLab v3+ on MobileNetV2: 18-42 s each, in make test-large)
    pytest.param("unet", dict(base_filters=16, batch_norm=True, upsampling="bilinear", edge=True), 513,
                 marks=pytest.mark.large),
    *[pytest.param("deeplab_v3_plus", dict(backbone="mobilenet_v2", edge=True), size, marks=pytest.mark.large)
      for size in (256, 513)],
    ("lraspp", dict(backbone="mobilenet_v3_large", edge=True), 256),  # (minimalistic)
    ("lraspp", dict(backbone="mobilenet_v3_small", edge=True), 256),
])
def test_edge_configurations_map_entirely(tmp_path, name, kwargs, size):
    report = edgetpu.analyse(_int8(tmp_path, models.create_model(name, classes=4, **kwargs), size))
    assert report["fully_mapped"], edgetpu.format_report(report)
    assert report["mapped_share"] == 1.0 and report["first_cpu_op"] is None
    assert report["warnings"] == []  # every RESHAPE fits the 8 MiB of on-chip memory, at 513 too
    assert [t["type"] for t in report["io"]] == ["UINT8", "UINT8"]
    assert report["io"][0]["shape"] == [1, size, size, 3]


def test_tf2_bilinear_resize_is_where_the_cpu_takes_over(tmp_path):
    plain = models.unet(classes=4, base_filters=8, batch_norm=True, upsampling="bilinear")
    report = edgetpu.analyse(_int8(tmp_path, plain, 64))
    first = report["first_cpu_op"]
    assert not report["fully_mapped"] and first is not None
    assert report["ops"][first]["op"] == "RESIZE_BILINEAR"
    assert "half_pixel_centers" in report["ops"][first]["reason"]
    assert all(op["mapped"] for op in report["ops"][:first])
    assert report["mapped_share"] == pytest.approx(first / report["operators"])


def test_float_model_and_per_pixel_softmax_do_not_map(tmp_path):
    model = models.unet_edge(classes=4, activation="softmax")
    float_path = tmp_path / "float.tflite"
    float_path.write_bytes(tflite.convert(model, "float32", (64, 64)))
    report = edgetpu.analyse(float_path)
    assert report["first_cpu_op"] == 0 and "FLOAT32" in report["ops"][0]["reason"]
    report = edgetpu.analyse(_int8(tmp_path, model, 64))
    softmax = [op for op in report["ops"] if op["op"] == "SOFTMAX"]
    assert softmax and "1-D" in softmax[0]["reason"]


def test_cli_exit_status_report_and_bad_files(tmp_path):
    path = _int8(tmp_path, models.unet_edge(classes=4), 64)
    result = run_cli("export.edgetpu", str(path), "--json", str(tmp_path / "r.json"))
    assert result.returncode == 0, result.stderr
    assert "map to the Edge TPU (100.0%)" in result.stdout
    assert json.loads((tmp_path / "r.json").read_text())["fully_mapped"] is True

    junk = tmp_path / "junk.tflite"
    junk.write_bytes(b"not a model at all")
    result = run_cli("export.edgetpu", str(junk))
    assert result.returncode == 2
    (line,) = program_lines(result.stderr)
    assert line.endswith(f"error: {junk} is not a TFLite model (ValueError: no TFL3 identifier)")


def test_only_the_three_innermost_dimensions_may_exceed_one(tmp_path):
    """Coral's rule is about position, not count: [1, 2, 1, 1, 24] has two non-unit dimensions, one of them
    outside the innermost three."""
    inputs = keras.Input((4, 4, 3))
    a = keras.layers.Reshape((2, 1, 1, 24))(keras.layers.Conv2D(3, 1)(inputs))
    b = keras.layers.Reshape((2, 1, 1, 24))(keras.layers.Conv2D(3, 1)(inputs))
    x = keras.layers.Reshape((4, 4, 6))(keras.layers.Concatenate(axis=1)([a, b]))  # [1, 4, 1, 1, 24]
    outputs = keras.layers.Conv2D(4, 1)(x)
    report = edgetpu.analyse(_int8(tmp_path, keras.Model(inputs, outputs), 4))
    flagged = [op for op in report["ops"] if "3 innermost dimensions" in op["reason"]]
    assert flagged and flagged[0]["op"] == "RESHAPE", edgetpu.format_report(report)
    assert "[1, 2, 1, 1, 24]" in flagged[0]["reason"]
    assert not report["fully_mapped"]
    # every tensor of the segmenters keeps to it (test_edge_configurations_map_entirely)


class _Constant(keras.layers.Layer):
    """Concatenates compile-time constants (`value`) to its inputs along the channels."""

    def __init__(self, value, channels=2, **kwargs):
        super().__init__(**kwargs)
        self.value, self.channels = value, channels

    def call(self, *inputs):
        constant = keras.ops.full((1, *inputs[0].shape[1:3], self.channels), self.value)
        return keras.ops.concatenate([*inputs, constant], axis=-1)


def _tiny(build, size=8, channels=4):
    """A model conv -> build(x) -> conv, in which build(x) is the op under test."""
    inputs = keras.Input((size, size, 3))
    x = keras.layers.Conv2D(channels, 1, activation="relu")(inputs)
    return keras.Model(inputs, keras.layers.Conv2D(4, 1)(build(x)))


def _flagged(tmp_path, model, size=8):
    """{op: reason} of every operator the static check does not map."""
    report = edgetpu.analyse(_int8(tmp_path, model, size))
    return {op["op"]: op["reason"] for op in report["ops"] if op["reason"]}


def test_each_of_corals_per_op_rules_is_checked(tmp_path):
    layers = keras.layers
    cases = {  # one broken rule each; what Coral's table says about that op
        "CONV_2D": (lambda x: layers.Conv2D(4, 3, dilation_rate=(1, 2), padding="same")(x),
                    "same in x and y"),
        "MEAN": (lambda x: keras.ops.mean(layers.Conv2D(6, 1)(x), axis=-1, keepdims=True),
                 "multiple of 4 channels"),
        "FULLY_CONNECTED": (lambda x: layers.Reshape((4, 4, 5))(layers.Dense(5)(layers.Reshape((16, 4))(
            layers.MaxPooling2D(2)(x)))), "one-dimensional"),
    }
    for op, (build, reason) in cases.items():
        flagged = _flagged(tmp_path, _tiny(build))
        assert list(flagged) == [op] and reason in flagged[op], (op, flagged)
    # a constant input to a concatenation: only as the second of two, and only zeros (a zero padding)
    assert list(_flagged(tmp_path, _tiny(lambda x: _Constant(0.0)(x)))) == []
    # (a constant well inside the concatenation's range: 1.0 quantizes to the zero point, an all-zero constant,
    # wherever the unseeded first convolution's outputs reach past 2 * 255, as they sometimes did)
    flagged = _flagged(tmp_path, _tiny(lambda x: _Constant(100.0)(x)))
    assert list(flagged) == ["CONCATENATION"] and "all zeros" in flagged["CONCATENATION"]
    flagged = _flagged(tmp_path, _tiny(lambda x: _Constant(0.0)(x, layers.Conv2D(2, 1)(x))))
    assert list(flagged) == ["CONCATENATION"] and "exactly 2 inputs" in flagged["CONCATENATION"]
    # (the equal-dilation model and the 4-channel mean map)
    for build in (lambda x: layers.Conv2D(4, 3, dilation_rate=2, padding="same")(x),
                  lambda x: keras.ops.mean(x, axis=-1, keepdims=True)):
        assert _flagged(tmp_path, _tiny(build)) == {}


def _int8_of_tf(tmp_path, fn, shape):
    """A TensorFlow function of one float input `shape`, as a full-integer .tflite file (uint8 I/O)."""
    import tensorflow as tf

    concrete = tf.function(fn, input_signature=[tf.TensorSpec(shape, tf.float32)]).get_concrete_function()
    converter = tf.lite.TFLiteConverter.from_concrete_functions([concrete])
    converter.optimizations = [tf.lite.Optimize.DEFAULT]
    converter.representative_dataset = lambda: ([np.full(shape, v, np.float32)] for v in (-1.0, 1.0))
    converter.target_spec.supported_ops = [tf.lite.OpsSet.TFLITE_BUILTINS_INT8]
    converter.inference_input_type = converter.inference_output_type = tf.uint8
    path = tmp_path / "op.tflite"
    path.write_bytes(converter.convert())
    return {op["op"]: op["reason"] for op in edgetpu.analyse(path)["ops"] if op["reason"]}


def test_prelu_maps_with_one_alpha_per_channel_and_resize_with_one_image(tmp_path):
    import tensorflow as tf

    def prelu(alpha):  # the pattern the converter fuses into one PRELU op
        return lambda x: tf.nn.relu(x) + tf.constant(-alpha) * tf.nn.relu(-x)

    flagged = _int8_of_tf(tmp_path, prelu(np.full((8, 8, 4), 0.2, np.float32)), [1, 8, 8, 4])
    assert list(flagged) == ["PRELU"] and "shared_axes=[1, 2]" in flagged["PRELU"], flagged
    assert _int8_of_tf(tmp_path, prelu(np.full((1, 1, 4), 0.2, np.float32)), [1, 8, 8, 4]) == {}

    def resize(x):
        return tf.compat.v1.image.resize_bilinear(x, (16, 16), half_pixel_centers=False)

    assert _int8_of_tf(tmp_path, resize, [1, 8, 8, 4]) == {}
    flagged = _int8_of_tf(tmp_path, resize, [2, 8, 8, 4])  # (its QUANTIZE breaks the innermost-dimensions rule)
    assert "one 3-D image (batch 1)" in flagged["RESIZE_BILINEAR"], flagged


def test_a_reshape_larger_than_on_chip_memory_is_a_warning(tmp_path, monkeypatch):
    from kerasseg.layers import Upsample

    # the edge upsampling interleaves its phases with RESHAPEs: [1, 8, 16, 4] (512 bytes), [1, 16, 16, 4] (1,024)
    path = _int8(tmp_path, _tiny(lambda x: Upsample(2, edge=True)(x)), 8)
    report = edgetpu.analyse(path)
    assert report["warnings"] == [] and report["largest_reshape_bytes"] == 1024 and report["fully_mapped"]
    monkeypatch.setattr(edgetpu, "ON_CHIP_BYTES", 1000)
    report = edgetpu.analyse(path)
    assert len(report["warnings"]) == 1 and "[1, 16, 16, 4] (0.0 MiB)" in report["warnings"][0]
    assert "large reshapes may not map" in report["warnings"][0] and report["fully_mapped"]
    assert "warning: RESHAPE op" in edgetpu.format_report(report)


def test_edgetpu_compiler_logs_are_read():
    partial = edgetpu.parse_compiler_log((COMPILER_LOGS / "partial.log").read_text())
    assert (partial["compiled"], partial["fully_mapped"], partial["cpu_operators"]) == (True, False, 6)
    assert [op["op"] for op in partial["operators"] if not op["mapped"]] == ["RESHAPE", "RESIZE_BILINEAR"]
    mapped = edgetpu.parse_compiler_log((COMPILER_LOGS / "mapped.log").read_text())
    assert (mapped["fully_mapped"], mapped["edge_tpu_operators"], mapped["cpu_operators"]) == (True, 87, 0)
    failed = edgetpu.parse_compiler_log((COMPILER_LOGS / "failed.log").read_text())
    assert not failed["compiled"] and not failed["fully_mapped"]
    assert failed["error"] == "Compilation failed: Compilation failed due to large activation tensors in model."


def test_constants_stored_after_the_flatbuffer_are_read_and_flagged(tmp_path):
    """ai-edge-quantizer writes a file's weights after the flatbuffer once they pass 256 kB (Buffer.offset,
    TFLite's format for files over 2 GB): the old check read them as empty, took the weights for activations and
    refused every convolution ('only the 3 innermost dimensions may be larger than 1'); the Edge TPU compiler 16 reads a
    schema without offsets, so such a file is flagged as not compilable as it is."""
    import keras
    import numpy as np

    from export import edgetpu, tflite

    pixels = keras.Input((16, 16, 3))
    x = keras.layers.Conv2D(64, 3, padding="same", activation="relu")(pixels)
    x = keras.layers.Conv2D(512, 3, padding="same", activation="relu")(x)  # (over 256 kB of weights: stored after)
    model = keras.Model(pixels, keras.layers.Conv2D(2, 1)(x))
    images = np.random.default_rng(0).integers(0, 256, (8, 16, 16, 3)).astype(np.float32)
    path = tmp_path / "aeq.tflite"
    tflite.export(model, path, quantizer="ai-edge", calibration=images, validation=images,
                  thresholds={"pixel_agreement": 0.0, "miou_drop": 100.0, "max_abs_error": 1e9})
    check = edgetpu.analyse(path)
    assert check["buffers_outside"] > 0 and not check["fully_mapped"]
    assert all(op["mapped"] for op in check["ops"]), edgetpu.format_report(check)
    assert "stored after the flatbuffer" in edgetpu.format_report(check)
