"""The Edge TPU static check (export.edgetpu) and the edge=True segmenters it must pass."""

import json

import numpy as np
import pytest

from conftest import program_lines, run_cli
from export import edgetpu, tflite
from kerasseg import models


def _int8(tmp_path, model, size, name="model.tflite"):
    calibration = np.random.default_rng(0).uniform(0, 255, (2, size, size, 3)).astype("float32")
    path = tmp_path / name
    path.write_bytes(tflite.convert(model, "int8", (size, size), calibration))
    return path


@pytest.mark.parametrize("size", [256, 513])
@pytest.mark.parametrize("name, kwargs", [
    ("unet", dict(base_filters=16, batch_norm=True, upsampling="bilinear", edge=True)),
    ("deeplab_v3_plus", dict(backbone="mobilenet_v2", edge=True)),
])
def test_edge_configurations_map_entirely(tmp_path, name, kwargs, size):
    report = edgetpu.analyse(_int8(tmp_path, models.create_model(name, classes=4, **kwargs), size))
    assert report["fully_mapped"], edgetpu.format_report(report)
    assert report["mapped_share"] == 1.0 and report["first_cpu_op"] is None
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
    import keras

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
