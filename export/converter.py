"""A Keras model to .tflite bytes: the TFLiteConverter for one export mode (float32, float16, dynamic, int16x8,
int8) on the model's batch-1 function with its serving_default signature (pipeline.signed_function), which
TFLite's quantization debugger (export.per_tensor) calibrates with too, and `convert`: int8's pixel input pinned
to scale 1.0, percentile ranges, a quantization-aware model's learned ranges written into the file. The
exporter around it (options, checks, Edge TPU, the command line) is export.tflite."""

import dataclasses

import numpy as np

from kerasseg import cli
from kerasseg.errors import InputError

# (lazily: export.pipeline imports Keras, and `python -m export.tflite --help` must answer without it)
pipeline, qat, ranges, tensor_names = cli.lazy_import("export.pipeline", "kerasseg.qat", "export.ranges",
                                                      "export.tensor_names")

CALIBRATIONS = ("minmax", "percentile", "moving-average")  # (moving-average: ai-edge-quantizer's own, only)


def representative_dataset(images):
    def generate():
        for image in images:
            yield [image[None].astype(np.float32)]

    return generate


def make_converter(model, quantize, image_size, calibration_images=None, io="uint8"):
    import tensorflow as tf

    function, holder = pipeline.signed_function(model, image_size)
    converter = tf.lite.TFLiteConverter.from_concrete_functions([function], holder)
    if quantize != "float32":
        converter.optimizations = [tf.lite.Optimize.DEFAULT]
    if quantize == "float16":
        converter.target_spec.supported_types = [tf.float16]
    elif quantize == "int16x8":
        if calibration_images is None or len(calibration_images) == 0:
            raise InputError("int16x8 quantization needs calibration images; none were given")
        # one more calibration image, a ramp over every pixel value: the float input's 16-bit range then
        # covers [0, 255] whatever the images span (the wider ranges cost nothing visible at 16 bits)
        ramp = np.broadcast_to(np.linspace(0, 255, image_size[1], dtype=np.float32)[None, :, None],
                               (*image_size, 3))
        converter.representative_dataset = representative_dataset([*calibration_images, ramp])
        converter.target_spec.supported_ops = [
            tf.lite.OpsSet.EXPERIMENTAL_TFLITE_BUILTINS_ACTIVATIONS_INT16_WEIGHTS_INT8]
    elif quantize == "int8":
        if calibration_images is None or len(calibration_images) == 0:
            raise InputError("int8 quantization needs calibration images; none were given")
        converter.representative_dataset = representative_dataset(calibration_images)
        converter.target_spec.supported_ops = [tf.lite.OpsSet.TFLITE_BUILTINS_INT8]
        io_type = {"uint8": tf.uint8, "int8": tf.int8, "float32": tf.float32}[io]
        converter.inference_input_type = io_type
        if model.outputs[0].dtype in ("float32", "float16", "bfloat16"):
            converter.inference_output_type = io_type
    return converter


def convert(model, quantize, image_size, calibration_images=None, io="uint8", calibration="minmax"):
    """The .tflite bytes of `model` at a fixed batch-1 `image_size`.

    int8 only: `io` is the input and output type (a class-index output
    stays as it is). The input's calibrated range is pinned to [0, 255]
    before quantizing: the model takes pixels, and a device feeds them
    unscaled, so an integer input must be scale 1.0 exactly; calibration
    images that span less (a dim camera: [40, 200]) would otherwise give a
    scale of 0.63 and clip every brighter pixel. `calibration`: each
    activation's range is its min/max over the calibration images (TFLite's
    own), or with "percentile" the kerasseg.choices.PERCENTILE-th percentiles,
    which clips rare outliers for a finer step everywhere else.

    A quantization-aware model (kerasseg.qat) converts as its float twin;
    int8 writes the ranges it learned into the file (export.ranges).
    """
    return convert_with_learned(model, quantize, image_size, calibration_images, io, calibration)[0]


def convert_with_learned(model, quantize, image_size, calibration_images=None, io="uint8", calibration="minmax"):
    """(the .tflite bytes, for a quantization-aware model converted to int8 the learned ranges' counts
    (export.ranges.check_learned_ranges), else None)."""
    if calibration not in CALIBRATIONS:
        raise InputError(f"calibration must be one of {CALIBRATIONS}; received {calibration!r}")
    sites = None
    if qat.is_quantization_aware(model):
        if calibration != "minmax":
            raise InputError(f"a quantization-aware model's int8 ranges are the ones it learned: calibration "
                             f"{calibration!r} does not apply to it")
        model, sites = qat.export_twin(model)
    if quantize != "int8" or (io == "float32" and sites is None):
        return make_converter(model, quantize, image_size, calibration_images, io).convert(), None
    import tensorflow as tf

    from export import internals

    with tensor_names.unambiguous_names(model if sites is not None else None) as renamed:
        calibrated = internals.calibrated(make_converter(model, quantize, image_size, calibration_images,
                                                                   io))
        if calibration == "percentile":
            calibrated = ranges.percentile_ranges(calibrated, calibration_images)
        if sites is not None:
            sites = [dataclasses.replace(site, layer=renamed[site.layer]) for site in sites]
            calibrated, placed = ranges.learned_ranges(calibrated, model, sites)
    calibrated = ranges.pin_input_range(calibrated, 0.0, 255.0)
    io_type = {"uint8": tf.uint8, "int8": tf.int8, "float32": tf.float32}[io]
    output_type = io_type if model.outputs[0].dtype in ("float32", "float16", "bfloat16") else tf.float32
    content = internals.quantized(calibrated, io_type, output_type)
    check_pixel_input(content)
    if sites is None:
        return content, None
    learned = ranges.check_learned_ranges(content, placed)
    calibrated = [tensor_names.untagged(name) for name in learned["calibrated"]]
    return tensor_names.untagged(content), {**learned, "calibrated": calibrated}


def check_pixel_input(content):
    """Refuses (InputError) an integer-input .tflite whose input is not raw pixels: uint8 scale 1.0 / zero
    point 0, int8 scale 1.0 / zero point -128."""
    from ai_edge_litert.interpreter import Interpreter

    detail = Interpreter(model_content=bytes(content)).get_input_details()[0]
    expected = {np.dtype(np.uint8): (1.0, 0), np.dtype(np.int8): (1.0, -128)}.get(np.dtype(detail["dtype"]))
    if expected is not None and tuple(detail["quantization"]) != expected:
        raise InputError(f"refusing to write an int8 file whose {np.dtype(detail['dtype'])} input has scale "
                         f"{detail['quantization'][0]:g} and zero point {detail['quantization'][1]} instead of "
                         f"{expected[0]:g} and {expected[1]}: a device feeding camera pixels would see other values")
