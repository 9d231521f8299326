"""The TFLiteConverter for one export mode (float32, float16, dynamic, int16x8, int8), on a model's
batch-1 function with its serving_default signature (pipeline.signed_function): what export.tflite converts with
and TFLite's quantization debugger (export.per_tensor) calibrates with."""

import numpy as np

from kerasseg.errors import InputError
from export import pipeline


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
