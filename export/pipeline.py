"""The convert-check-write pipeline every exporter runs, on values: a Keras model (or its file), images.

Layers, one way: `runtimes` (run a file) -> `report` (compare, thresholds) ->
`pipeline` (the model and the data as values, convert, check, write) -> one
module per format (`tflite`, `onnx`, `edgetpu`, `android`). Nothing here
reads a run directory: the command lines (`export.commands`) resolve a run's
record and split lists into values, then call the same functions a Keras
user calls on an in-memory model and their own arrays or tf.data.
"""

import os
import sys
import tempfile
from dataclasses import dataclass

import numpy as np

from kerasseg import files
from kerasseg.errors import InputError
from export import report as reports, values


def load_model(model):
    """(`model` in float32, the dtype policy it was built under, its name for the report): a keras.Model
    or the path of a .keras file.

    A model trained with mixed precision computes in bfloat16 or float16,
    which the converters cannot lower (`'tf.Mul' op is neither a custom op
    nor a flex op`); it is rebuilt layer for layer in float32 with the same
    weights (kerasseg.qat.float32_model), and that rebuild is what the
    export is compared with.
    """
    from kerasseg import qat

    if isinstance(model, (str, os.PathLike)):
        return (*qat.float32_model(files.load_keras_model(model)), os.fspath(model))
    import keras

    if not isinstance(model, keras.Model):
        raise InputError(f"expected a keras.Model or the path of a .keras file; received {type(model).__name__}")
    if not getattr(model, "inputs", None):
        # a subclassed model: the converters and the int8 simulation need a graph of layers
        pixels = keras.Input((None, None, 3), name="image")
        model = keras.Model(pixels, model(pixels), name=model.name)
    files.check_image_input(model, model.name)
    return (*qat.float32_model(model), model.name)


def export_size(model, requested=None, data=()):
    """The fixed (height, width) to export at: `requested`, else the model's own fixed input size, else the
    size all the images of the first of `data` share (export.values.natural_size)."""
    if requested:
        return tuple(int(n) for n in requested)
    height, width = model.inputs[0].shape[1:3]
    if height and width:
        return (height, width)
    size = next((values.natural_size(value) for value in data if value is not None), None)
    if size:
        return size
    raise InputError(f"{model.name} accepts any image size and the images given do not say one size: give the size "
                     "to export at, image_size=(height, width)")


@dataclass
class Inputs:
    """What an export works on: the float32 model, its size, the held-out samples, the calibration images."""

    model: object
    policy: str
    name: str
    size: tuple
    held_out: object  # a kerasseg.data.Split (masks None: agreement without mIoU)
    calibration: np.ndarray = None
    calibration_spec: str = None


def inputs(model, image_size=None, validation=None, calibration=None, class_names=None, samples=None,
           calibration_samples=None, calibrate=False):
    """The Inputs of an export (export.values reads `validation` and `calibration` as the user has them).
    Without `validation`, the file is checked on the calibration images (the report says so)."""
    model, policy, name = load_model(model)
    if hasattr(calibration, "__next__"):  # an iterator, read once: kept for calibrating after checking on it
        calibration = list(calibration)
    size = export_size(model, image_size, (validation, calibration))
    classes = model.outputs[0].shape[-1]
    names = tuple(class_names) if class_names else tuple(f"class_{i}" for i in range(classes or 0))
    if class_names is not None and classes and len(names) != classes:
        raise InputError(f"{len(names)} class names ({', '.join(names)}) for a model of {classes} classes")
    if validation is None and calibration is None:
        raise InputError("nothing to check the file on: give validation= (held-out images, with masks for the "
                         "mIoU) or calibration= images")
    held_out = values.validation_samples(calibration if validation is None else validation, size, names, samples)
    if validation is None and not isinstance(calibration, str):  # (a spec's own test split is held out)
        held_out.spec = f"{held_out.spec}, the calibration images (no validation samples given)"
    if held_out.resized:
        print(f"note: {held_out.resized} of the {len(held_out)} held-out images ({held_out.spec}) were resized to "
              f"{size[0]}x{size[1]}, the export size (masks: nearest)", file=sys.stderr)
    found = Inputs(model, policy, name, size, held_out)
    if calibrate:
        if calibration is None:
            raise InputError("int8 and int16x8 need calibration images: give calibration= (training images)")
        found.calibration, found.calibration_spec = values.calibration_images(calibration, size,
                                                                              calibration_samples)
    return found


def fixed_size_function(model, image_size, batch=1):
    """The model as a tf.function with a fixed-size float32 signature (batch 1 unless `batch` is None).

    A dynamic batch would turn dilated convolutions into SPACE_TO_BATCH_ND /
    BATCH_TO_SPACE_ND and add SHAPE / STRIDED_SLICE / PACK around transposed
    convolutions: slower on phones, unmappable on the Edge TPU.
    """
    import tensorflow as tf

    spec = tf.TensorSpec([batch, *image_size, 3], tf.float32, name="image")
    return tf.function(lambda image: model(image, training=False), input_signature=[spec])


def frozen_function(model, image_size):
    """The fixed-size function with the weights folded in as constants.

    Converting the unfrozen function keeps Keras 3's weights as resource
    variables (VAR_HANDLE / READ_VARIABLE) that nothing initialises in LiteRT:
    every output would be NaN.
    """
    from tensorflow.python.framework.convert_to_constants import convert_variables_to_constants_v2

    return convert_variables_to_constants_v2(fixed_size_function(model, image_size).get_concrete_function())


def export_checked(found, output, build, quantization, overrides=None, extra=None):
    """The shared path of every exporter: convert, check in the runtime, then write.

    `build(model, size)` returns (the Keras model the file is compared with,
    which may add an output head to `model`; file bytes; extra report
    fields). The bytes are checked from a temporary file; `output` and its report are written
    (atomically) only once the check has run, so a failure leaves whatever
    was at `output` before untouched and nothing partial. Returns the report (a dict).
    """
    files.ensure_output_dir(output)
    size = found.size
    print(f"converting {found.name} to {os.path.basename(output)} ({quantization}) at {size[0]}x{size[1]} ...",
          flush=True)
    model, content, built = build(found.model, size)
    with tempfile.NamedTemporaryFile(suffix=os.path.splitext(output)[1]) as tmp:
        tmp.write(content)
        tmp.flush()
        extra = {"model": found.name, "dataset": found.held_out.spec, "image_size": list(size),
                 "training_policy": found.policy, **(extra or {}), **built}
        report = reports.agreement_report(model, tmp.name, found.held_out, quantization, overrides, extra,
                                          figure=reports.figure_path(reports.report_path(output)))
    files.write_bytes_atomic(output, content)
    reports.write_report(report, reports.report_path(output))
    return report
