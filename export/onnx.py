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

qat, backend, pipeline, reports = cli.lazy_import("kerasseg.qat", "export.backend", "export.pipeline",
                                                  "export.report")

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
                        calibrate_method={"percentile": CalibrationMethod.Percentile, "minmax": CalibrationMethod.MinMax,
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
    simulated = sum(len(layer._inbound_nodes) for layer in quantized._flatten_layers()
                    if isinstance(layer, (FakeQuant, FixedScaleActivation)))
    return {"simulated": simulated, "written": sum(node.op_type == "QuantizeLinear" for node in graph.node)}


def export(model, output, *, quantize="float32", calibration=None, validation=None, class_names=None,
           input_normalization=None, image_size=None, samples=None, calibration_samples=None, thresholds=None,
           opset=17, dynamic_batch=False, calibration_method="percentile", output_kind="logits", latency=False):
    """Converts `model` (a keras.Model, or the path of its .keras file) to the ONNX file `output`, checks the
    file in ONNX Runtime against the model and writes it with FILE.report.json; returns the ExportReport.
    The data, thresholds and output kinds are export.tflite.export's; so is the export from another backend."""
    if backend.foreign():
        return backend.export_elsewhere(__name__, model, output, {k: v for k, v in locals().items()
                                                                  if k not in ("model", "output")})
    if quantize not in ("float32", "int8"):
        raise InputError(f"quantize must be 'float32' or 'int8' for ONNX; received {quantize!r}")
    found = pipeline.inputs(model, image_size, validation, calibration, class_names, samples, calibration_samples,
                            input_normalization=input_normalization, thresholds=thresholds,
                            # (a quantization-aware model's int8 ranges are all learned: nothing to calibrate)
                            calibrate=lambda model: quantize == "int8" and not qat.is_quantization_aware(model))

    def build(model, size):
        extra = {"opset": opset, "dynamic_batch": dynamic_batch,
                 "output_kind": pipeline.output_kind(model) if output_kind == "logits" else output_kind}
        model = pipeline.with_output_kind(model, output_kind)
        if qat.is_quantization_aware(model):
            extra["quantization_aware"] = True
            if quantize == "int8":  # its own graph: each learned rounding a QuantizeLinear / DequantizeLinear pair
                if calibration_method != "percentile":
                    raise InputError(f"{found.name} is quantization-aware: its int8 ranges are learned, so "
                                     f"calibration {calibration_method!r}, which recalibrates, does not apply")
                content = convert(model, size, opset, dynamic_batch)
                extra["learned_ranges"] = learned_ranges(content, model)
                return model, content, extra
            model, _ = qat.export_twin(model)  # no int8 arithmetic to simulate: the float model it computes
            extra["compared_with"] = "the quantization-aware model's float twin (folded int8-exact weights)"
        content = convert(model, size, opset, dynamic_batch)
        if quantize == "int8":
            content = quantize_int8(content, found.calibration, calibration_method)
            extra.update(calibration_dataset=found.calibration_spec, calibration_samples=len(found.calibration),
                         calibration_method=calibration_method)
        return model, content, extra

    return reports.ExportReport.from_dict(pipeline.export_checked(found, output, build, quantize, thresholds,
                                                                  latency=latency))


def main(argv=None):
    from export import commands

    parser = commands.exporter_parser("python -m export.onnx", __doc__, "the .onnx file to write")
    parser.add_argument("--opset", type=int, choices=OPSETS, default=17)
    parser.add_argument("--quantize", choices=("float32", "int8"), default="float32",
                        help="float32 (default), or int8 (QuantizeLinear / DequantizeLinear pairs, calibrated)")
    parser.add_argument("--dynamic-batch", action="store_true", help="any batch size instead of 1")
    parser.add_argument("--output-kind", choices=("logits", "probabilities", "category"), default="logits",
                        help="what the file outputs: logits (default), probabilities (softmax; one channel: sigmoid) or "
                             "category (class indices)")
    parser.add_argument("--calibration-method", choices=CALIBRATION_METHODS, default="percentile",
                        help="how int8 activation ranges are set from the calibration images (default percentile)")
    commands.add_arguments(parser)
    args = parser.parse_args(argv)
    if backend.foreign():  # (the conversion needs TensorFlow's tracing)
        return backend.rerun("export.onnx", argv)
    data = commands.DataOptions.from_args(args)
    report = export(args.model, args.output, quantize=args.quantize, thresholds=data.overrides, opset=args.opset,
                    dynamic_batch=args.dynamic_batch, calibration_method=args.calibration_method,
                    output_kind=args.output_kind, latency=args.latency,
                    **commands.run_data(args.model, data, args.quantize == "int8", args.output))
    reports.print_summary(report, args.output)
    return 0 if report["passed"] else 1


if __name__ == "__main__":
    sys.exit(cli.run(main))
