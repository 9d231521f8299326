"""Export a segmenter to ONNX and check it in ONNX Runtime: `python -m export.onnx`.

    python -m export.onnx MODEL.keras --output FILE.onnx [--opset 17] [--dynamic-batch]
    python -m export.onnx MODEL.keras --output FILE.onnx --quantize int8

Converted by tf2onnx (input "image", float32 pixels in [0, 255], NHWC; batch
1 unless --dynamic-batch), run in ONNX Runtime on held-out test samples and
compared with the Keras model; FILE.report.json holds the result.

--quantize int8 of a quantization-aware model (kerasseg.train --quantization-aware): its own graph, each
rounding it learned (or the fixed scale of a sigmoid / softmax) a QuantizeLinear / DequantizeLinear pair
at that range, the weights' per-channel int8 rounding folded into int8-exact float constants; checked
against the quantization-aware Keras model, no calibration.

--quantize int8 of any other model: ONNX Runtime's static quantization in QDQ format
(QuantizeLinear / DequantizeLinear pairs around int8 weights, per channel,
and activations), calibrated on --calibration-samples training images of
the run's dataset (or --calibration-dataset), with the same preprocessing as training (none: the
model takes pixels). Activation ranges come from --calibration-method:
`percentile` (the default: each tensor's range clipped at the 99.999th
percentile of its calibration values; on DeepLabV3+ MobileNetV2 it kept
the mIoU within 1 point where min/max ranges lost 1.3), `minmax` or
`entropy`.
"""

import os
import sys
import tempfile

import numpy as np

from kerasseg import cli
from kerasseg.errors import InputError

from export import formats, runtimes

internals, qat, pipeline = cli.lazy_import("kerasseg.internals", "kerasseg.qat", "export.pipeline")

OPSETS = range(13, 19)  # tf2onnx 1.17 converts up to opset 18
CALIBRATION_METHODS = ("percentile", "minmax", "entropy")


def convert(model, image_size, opset=17, dynamic_batch=False):
    """The serialised ONNX model of `model` at `image_size` (batch 1, or any with dynamic_batch)."""
    import tf2onnx

    fn = pipeline.fixed_size_function(model, image_size, batch=None if dynamic_batch else 1)
    proto, _ = tf2onnx.convert.from_function(fn, input_signature=fn.input_signature, opset=opset)
    return proto.SerializeToString()


def quantize_int8(content, calibration_images, method="percentile"):
    """ONNX Runtime static int8 quantization (QDQ, per-channel weights) of the ONNX bytes `content`,
    with activation ranges from calibration `method` (one of CALIBRATION_METHODS)."""
    from onnxruntime.quantization import (CalibrationDataReader, CalibrationMethod, QuantFormat, QuantType,
                                          quantize_static)

    class Reader(CalibrationDataReader):
        def __init__(self):
            self.images = iter(calibration_images)

        def get_next(self):
            image = next(self.images, None)
            return None if image is None else {"image": image[None].astype(np.float32)}

    with tempfile.TemporaryDirectory() as tmp:
        source, target = os.path.join(tmp, "float.onnx"), os.path.join(tmp, "int8.onnx")
        with open(source, "wb") as f:
            f.write(content)
        quantize_static(source, target, Reader(), quant_format=QuantFormat.QDQ, per_channel=True,
                        activation_type=QuantType.QInt8, weight_type=QuantType.QInt8,
                        # pixels: [0, 255] whatever the calibration images span, so none is clipped
                        extra_options={"TensorQuantOverrides": {
                            "image": [{"rmin": np.float32(0), "rmax": np.float32(255)}]}},
                        calibrate_method={"percentile": CalibrationMethod.Percentile,
                                          "minmax": CalibrationMethod.MinMax,
                                          "entropy": CalibrationMethod.Entropy}[method])
        with open(target, "rb") as f:
            return f.read()


def learned_ranges(content, quantized):
    """{"simulated", "written"}: the roundings of the quantization-aware model `quantized` (each call of a
    FakeQuant or a FixedScaleActivation), and the QuantizeLinear nodes of its ONNX file `content`, into which
    tf2onnx turns them at the learned (or fixed) ranges, the weights' roundings folded into int8-exact
    constants."""
    import onnx

    from kerasseg.layers.quantization import FakeQuant, FixedScaleActivation

    graph = onnx.load_from_string(content).graph
    simulated = sum(len(internals.calls(layer)) for layer in internals.all_layers(quantized)
                    if isinstance(layer, (FakeQuant, FixedScaleActivation)))
    return {"simulated": simulated, "written": sum(node.op_type == "QuantizeLinear" for node in graph.node)}


def _check(options):
    if options["quantize"] not in ("float32", "int8"):
        raise InputError(f"quantize must be 'float32' or 'int8' for ONNX; received {options['quantize']!r}")


def _convert_file(model, size, found, options):
    """(the .onnx bytes, extra report fields) of the float32 `model` (formats.Format.convert)."""
    extra = {"opset": options["opset"], "dynamic_batch": options["dynamic_batch"]}
    content = convert(model, size, options["opset"], options["dynamic_batch"])
    method = options["calibration_method"]
    if qat.is_quantization_aware(model):  # int8 of its own graph: each learned rounding a QuantizeLinear pair
        if method != "percentile":
            raise InputError(f"{found.name} is quantization-aware: its int8 ranges are learned, so calibration "
                             f"{method!r}, which recalibrates, does not apply")
        return content, {**extra, "learned_ranges": learned_ranges(content, model)}
    if options["quantize"] == "int8":
        content = quantize_int8(content, found.calibration, method)
        extra.update(calibration_dataset=found.calibration_spec, calibration_samples=len(found.calibration),
                     calibration_method=method)
    return content, extra


def _add_options(parser):
    parser.add_argument("--opset", type=int, choices=OPSETS, default=17)
    parser.add_argument("--quantize", choices=("float32", "int8"), default="float32",
                        help="float32 (default), or int8 (QuantizeLinear / DequantizeLinear pairs, calibrated)")
    parser.add_argument("--dynamic-batch", action="store_true", help="any batch size instead of 1")
    parser.add_argument("--output-kind", choices=("logits", "probabilities", "category"), default="logits",
                        help="what the file outputs: logits (default), probabilities (softmax; one channel: "
                             "sigmoid) or category (class indices)")
    parser.add_argument("--calibration-method", choices=CALIBRATION_METHODS, default="percentile",
                        help="how int8 activation ranges are set from the calibration images (default percentile)")


FORMAT = formats.register(formats.Format(
    name="onnx", suffix=".onnx", module="export.onnx", convert=_convert_file, runner=runtimes.OnnxRunner, check=_check,
    # (a quantization-aware model's int8 ranges are all learned: nothing to calibrate)
    calibrates=lambda options, model: options["quantize"] == "int8" and not qat.is_quantization_aware(model),
    add_options=_add_options,
    options_from=lambda args: {"quantize": args.quantize, "opset": args.opset, "dynamic_batch": args.dynamic_batch,
                               "output_kind": args.output_kind, "calibration_method": args.calibration_method},
    defaults={"quantize": "float32", "opset": 17, "dynamic_batch": False, "calibration_method": "percentile",
              "output_kind": "logits"}))


def export(model, output, *, quantize="float32", calibration=None, validation=None, class_names=None,
           input_normalization=None, image_size=None, samples=None, calibration_samples=None, thresholds=None,
           opset=17, dynamic_batch=False, calibration_method="percentile", output_kind="logits", latency=False):
    """Converts `model` (a keras.Model, or the path of its .keras file) to the ONNX file `output`, checks the
    file in ONNX Runtime against the model and writes it with FILE.report.json; returns the ExportReport.
    The data, thresholds and output kinds are export.tflite.export's; so is the export from another backend."""
    return formats.export(FORMAT, **locals())


def main(argv=None):
    return formats.main(FORMAT, argv, __doc__)


if __name__ == "__main__":
    sys.exit(cli.run(main))
