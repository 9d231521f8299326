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

from __future__ import annotations

import dataclasses
import os
import sys
import tempfile
from typing import TYPE_CHECKING

import numpy as np

from kerasseg import cli
from kerasseg.errors import InputError

from export import formats, runtimes

if TYPE_CHECKING:
    from collections.abc import Iterable, Sequence

    import keras

    from kerasseg.files import ModelFile
    from export.report import ExportReport

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


@dataclasses.dataclass(frozen=True)
class OnnxOptions(formats.Options):
    """export.onnx.export's own options (see its Args), typed."""

    quantize: str = "float32"
    opset: int = 17
    dynamic_batch: bool = False
    calibration_method: str = "percentile"
    output_kind: str = "logits"


def _check(options):
    o = OnnxOptions.of(options)
    if o.quantize not in ("float32", "int8"):
        raise InputError(f"quantize must be 'float32' or 'int8' for ONNX; received {o.quantize!r}")
    if o.calibration_method not in CALIBRATION_METHODS:
        raise InputError(f"calibration_method={o.calibration_method!r} is not one of "
                         f"{', '.join(CALIBRATION_METHODS)}")


def _convert_file(model, size, found, options):
    """(the .onnx bytes, extra report fields) of the float32 `model` (formats.Format.convert)."""
    o = OnnxOptions.of(options)
    extra = {"opset": o.opset, "dynamic_batch": o.dynamic_batch}
    content = convert(model, size, o.opset, o.dynamic_batch)
    method = o.calibration_method
    if qat.is_quantization_aware(model):  # int8 of its own graph: each learned rounding a QuantizeLinear pair
        if method != "percentile":
            raise InputError(f"{found.name} is quantization-aware: its int8 ranges are learned, so calibration "
                             f"{method!r}, which recalibrates, does not apply")
        return content, {**extra, "learned_ranges": learned_ranges(content, model)}
    if o.quantize == "int8":
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
    defaults=OnnxOptions.defaults()))


def export(model: keras.Model | str | os.PathLike | ModelFile, output: str | os.PathLike, *,
           quantize: str = "float32", calibration: np.ndarray | tuple | Iterable | str | None = None,
           validation: np.ndarray | tuple | Iterable | str | None = None, class_names: Sequence[str] | None = None,
           input_normalization: float | Sequence[float] | None = None,
           image_size: int | tuple[int, int] | None = None, samples: int | str | None = None,
           calibration_samples: int | str | None = None, thresholds: dict[str, float] | None = None,
           opset: int = 17, dynamic_batch: bool = False, calibration_method: str = "percentile",
           output_kind: str = "logits", latency: bool = False) -> ExportReport:
    """Converts a segmenter to an ONNX file, checks the file in ONNX Runtime against the model, and writes both.

    The model is converted by tf2onnx (input "image": float32 pixels in [0, 255], NHWC; batch 1 unless
    `dynamic_batch`), the file run in ONNX Runtime on held-out samples and compared with the Keras model; then
    `output` and its report, FILE.report.json, are written. A file that fails its thresholds is still written: its
    report says what failed. The data, thresholds and output kinds are export.tflite.export's; so is the export
    from another Keras backend than TensorFlow (a TensorFlow child process, export.backend, returning the same
    report).

    Args:
        model: the segmenter: a keras.Model, the path of its .keras file, or a kerasseg.files.ModelFile (a model
            already loaded from its file), as export.tflite.export takes it.
        output: the .onnx file to write; its report goes beside it, FILE.report.json (with FILE.disagreement.png).
        quantize: "float32" (the default) or "int8". int8 of a quantization-aware model (kerasseg.train
            --quantization-aware): its own graph, each rounding it learned (or the fixed scale of a sigmoid /
            softmax) a QuantizeLinear / DequantizeLinear pair at that range, the weights' per-channel int8
            rounding folded into int8-exact float constants; checked against the quantization-aware Keras model,
            no calibration. int8 of any other model: ONNX Runtime's static quantization in QDQ format
            (QuantizeLinear / DequantizeLinear pairs around int8 weights, per channel, and activations),
            calibrated on `calibration` by `calibration_method`, the input's range pinned to [0, 255] whatever
            the calibration images span.
        calibration: the training images int8 is calibrated on (required for int8 of a model that is not
            quantization-aware), the first `calibration_samples` of them, in the forms
            export.tflite.export takes: raw RGB pixels in [0, 255] as (N, H, W, 3) images, (images, masks), a
            tf.data.Dataset, an iterable, a kerasseg.data.Split or a dataset spec (its training split). They get
            the same preprocessing as training (none: the model takes pixels).
        validation: the held-out samples the file is compared on, the first `samples` of them, as
            export.tflite.export takes them: (images, masks) for the mIoU too, images alone for the agreement
            without the mIoU, a tf.data.Dataset, an iterable, a kerasseg.data.Split or a dataset spec (its test
            split). Without it, the file is checked on the calibration images.
        class_names: the per-class IoU's names, one per class. Default: the model's own (kerasseg.describe);
            else the validation dataset's; else class_0, class_1, ...
        input_normalization: what a model that does not take raw pixels expects of them, prepended so that the
            file takes pixels: a scale, or (mean, std), each a number or one per RGB channel
            (pipeline.taking_pixels). Default: the input range the model carries, if any other than pixels.
        image_size: (height, width), or N, to export at. Default: the model's fixed input size, else the
            training size it carries, else the size of the images given.
        samples: how many held-out samples are compared: a positive integer or "all"; default 50.
        calibration_samples: how many calibration images int8 uses: a positive integer or "all"; default 200.
        thresholds: {name: value} replacing the mode's defaults (report.DEFAULT_THRESHOLDS: float32 a
            max_abs_error of 1e-4; int8 pixel agreement 0.99 and an mIoU drop of at most 1 point), names among
            "pixel_agreement", "max_abs_error", "mean_abs_error" and "miou_drop".
        opset: the ONNX opset, 13 to 18 (tf2onnx 1.17 converts up to 18); default 17.
        dynamic_batch: any batch size instead of 1 (default False).
        calibration_method: how int8 activation ranges are set from the calibration images: "percentile" (the
            default: each tensor's range clipped at the 99.999th percentile of its calibration values; on
            DeepLabV3+ MobileNetV2 it kept the mIoU within 1 point where min/max ranges lost 1.3), "minmax" or
            "entropy". A quantization-aware model's ranges are learned: it takes the default only.
        output_kind: what the file outputs: "logits" (the default: the model's own output), "probabilities"
            (softmax; a binary segmenter's sigmoid) or "category" (class indices).
        latency: time the file and the model (batch 1, 20 runs each) for the report's latency_ms and
            keras_latency_ms (default False: not measured, None).

    Returns:
        The ExportReport (export.report) of the check, also written to FILE.report.json beside `output`
        (`os.path.splitext(output)[0] + ".report.json"`; `report.to_dict()` is its content): `passed`, `failed`
        (the thresholds that failed, as "pixel_agreement 0.97 < 0.99"), `pixel_agreement`, `miou_reference` and
        `miou_exported` (None without masks), `miou_drop`, `max_abs_error`, `latency_ms`, `size_bytes`;
        `report["key"]` reads the rest (e.g. "opset", "dynamic_batch", "calibration_method",
        "learned_ranges": a quantization-aware model's roundings and the QuantizeLinear nodes written for them).

    Raises:
        InputError: (a ValueError, kerasseg.errors) `quantize` other than "float32" or "int8" (before any work);
            a quantization-aware model with another `calibration_method` than "percentile"; a model that cannot
            be loaded or is not a segmenter of RGB images with one per-pixel output; unusable `thresholds`,
            `class_names`, `input_normalization`, `image_size`, `samples` or data (not raw pixels, masks that do
            not match, no calibration images for int8, nothing to check the file on); an `output` that cannot be
            written. Under another backend, the child's InputError is raised as it is.
        DatasetError: (an InputError, kerasseg.data.reading) a dataset spec that cannot be read.
        WriteError: (an OSError, kerasseg.errors) the file or its report could not be written (disk full, ...).
        RuntimeError: under another backend, the TensorFlow child process ended without a report.

    Example:
        ```python
        import export.onnx

        report = export.onnx.export("runs/demo/model.keras", "model.onnx", validation="shapes", opset=17)
        int8 = export.onnx.export("runs/demo/model.keras", "model_int8.onnx", quantize="int8",
                                  calibration="shapes", validation="shapes")
        print(report.passed, int8.pixel_agreement, int8.miou_reference, int8.miou_exported)
        ```
    """
    return formats.export(FORMAT, **locals())


def main(argv=None):
    return formats.main(FORMAT, argv, __doc__)


if __name__ == "__main__":
    sys.exit(cli.run(main))
