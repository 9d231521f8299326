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
from kerasseg.described import (PIXELS, checked_class_names, description, output_kind,  # noqa: F401 (its home)
                                working_size)
from kerasseg.data.reading import BINARY_NAMES
from kerasseg.errors import InputError
from kerasseg.labels import mask_classes
from export import fingerprint as fingerprints
from export import report as reports
from export import runtimes
from kerasseg.data import values


def load_model(model):
    """(`model` in float32, the dtype policy it was built under, its name for the report): a keras.Model
    or the path of a .keras file.

    A model trained with mixed precision computes in bfloat16 or float16,
    which the converters cannot lower (`'tf.Mul' op is neither a custom op
    nor a flex op`); it is rebuilt layer for layer in float32 with the same
    weights (kerasseg.files.float32_model), and that rebuild is what the
    export is compared with.
    """
    if isinstance(model, (str, os.PathLike)):
        return (*files.float32_model(files.load_keras_model(model)), os.fspath(model))
    if isinstance(model, files.ModelFile):  # (loaded once by the command line: kerasseg.resolve)
        return (*files.float32_model(model.model), model.path)
    import keras

    if not isinstance(model, keras.Model):
        raise InputError(f"expected a keras.Model or the path of a .keras file; received {type(model).__name__}")
    if not getattr(model, "inputs", None):
        # a subclassed model: the converters and the int8 simulation need a graph of layers
        pixels = keras.Input((None, None, 3), name="image")
        model = keras.Model(pixels, model(pixels), name=model.name)
    files.check_image_input(model, model.name)
    return (*files.float32_model(model), model.name)


def taking_pixels(model, input_normalization=None):
    """(`model` taking raw RGB pixels in [0, 255], how its input is normalized or None): `model` itself, or
    a model that normalizes the pixels, then calls it. `input_normalization`: a scale (`x * scale`), or
    `(mean, std)`, each a number or one per channel (`(x - mean) / std`); by default, the input range the
    model carries (kerasseg.describe) when it is not pixels. The exported file then takes camera pixels."""
    import keras

    low, high = description(model).input_range
    if input_normalization is None and (low, high) == PIXELS:
        return model, None
    if input_normalization is None:
        scale, offset, text = (high - low) / 255.0, low, f"pixels mapped to [{low:g}, {high:g}]"
    elif np.ndim(input_normalization) == 0:
        scale, offset, text = float(input_normalization), 0.0, f"pixels * {float(input_normalization):g}"
    else:
        try:
            mean, std = (np.asarray(v, np.float32) for v in input_normalization)
            if mean.shape not in ((), (3,)) or std.shape not in ((), (3,)) or not (std > 0).all():
                raise ValueError
        except (TypeError, ValueError):
            raise InputError(f"input_normalization must be a scale or (mean, std), each a number or one per RGB "
                             f"channel, std > 0; received {input_normalization!r}") from None
        scale, offset = (1 / std).tolist(), (-mean / std).tolist()
        text = f"(pixels - {mean.tolist()}) / {std.tolist()}"
    pixels = keras.Input(model.inputs[0].shape[1:], name="pixels")
    normalized = keras.layers.Rescaling(scale, offset, name="input_normalization")(pixels)
    return keras.Model(pixels, model(normalized), name=model.name), text


def _checked_output(model, size):
    """The class count of `model`'s output at `size`, or an InputError unless it is one tensor of per-pixel
    scores (1, height, width, classes) at the input's height and width, as the check compares them."""
    if len(model.outputs) != 1:
        raise InputError(f"{model.name} has {len(model.outputs)} outputs; expected one, per-pixel logits "
                         "(build a model of the segmentation output alone: keras.Model(model.input, output))")
    try:  # (what a call on one image gives: a layer's compute_output_shape may promise what its call cannot do)
        shape = tuple(model(np.zeros((1, *size, 3), np.float32), training=False).shape)
    except Exception as error:
        first = str(error).strip().splitlines()[0] if str(error).strip() else type(error).__name__
        raise InputError(f"{model.name} cannot run on a {size[0]}x{size[1]} image ({type(error).__name__}: "
                         f"{first[:300]}); export it at a size it takes (image_size=(height, width), e.g. a "
                         "multiple of its stride)") from None
    if len(shape) != 4 or tuple(shape[1:3]) != tuple(size):
        raise InputError(f"{model.name} gives {shape} for a {size[0]}x{size[1]} image; expected per-pixel logits "
                         f"(1, {size[0]}, {size[1]}, classes) at the input's size (a model whose output is smaller "
                         "ends in a resize to its input's size: keras.layers.Resizing or UpSampling2D)")
    return int(shape[-1])


def _class_indices(logits):
    import tensorflow as tf

    if logits.shape[-1] == 1:  # a binary segmenter's foreground logit
        return tf.cast(logits[..., 0] > 0, tf.int32)
    # keras.ops.argmax adds a -0.0 fix (a BitwiseAnd) that TFLite has no kernel for
    return tf.argmax(logits, axis=-1, output_type=tf.int32)


def with_output_kind(model, kind):
    """`model` ending in logits, probabilities (softmax; a binary segmenter's one logit: sigmoid) or class
    indices (int32)."""
    import keras

    if kind == "logits":
        return model
    last = model.layers[-1]
    binary = model.outputs[0].shape[-1] == 1
    if kind == "probabilities":
        if getattr(last, "activation", None) in (keras.activations.softmax, keras.activations.sigmoid):
            return model
        outputs = keras.layers.Activation("sigmoid", dtype="float32", name="probabilities")(model.outputs[0]) \
            if binary else keras.layers.Softmax(dtype="float32", name="probabilities")(model.outputs[0])
    else:
        outputs = keras.layers.Lambda(_class_indices, name="category")(model.outputs[0])
    return keras.Model(model.inputs, outputs, name=f"{model.name}_{kind}")


def export_size(model, requested=None, held=None, data=()):
    """The fixed (height, width) to export at: `requested`; else the model's fixed input size; else its
    training size (kerasseg.describe), scaled to the aspect most of the `held` out images ((image, mask)
    pairs) share when the model was trained with its aspect kept (an app stretches each frame into the file:
    a file of their aspect keeps the training's geometry, one of another squashes them); else the size
    the images of the first of `data` share (kerasseg.data.values.natural_size)."""
    from kerasseg.geometry import Geometry

    size = working_size(model, requested)
    described = description(model)
    if size and not requested and described.image_size and model.inputs[0].shape[1] is None and held and \
            described.resize in (None, "cover"):
        geometry = Geometry("cover", described.image_size, scale=1.0)  # (the training size's own scale)
        sizes = [geometry.working_size(image.shape) for image, _ in held]
        common = max(set(sizes), key=sizes.count)
        if common != size and sizes.count(common) * 2 > len(sizes):
            print(f"note: exporting at {common[0]}x{common[1]}, not the training size {size[0]}x{size[1]}: "
                  f"{sizes.count(common)} of the {len(sizes)} held-out images have that aspect, and an app "
                  "stretches each frame to the file's size (MediaPipe's ImageSegmenter does): a file of their "
                  "aspect sees them as training did (image_size= to choose another)", file=sys.stderr)
            size = common
    size = size or next((values.natural_size(value) for value in data if value is not None), None)
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
    class_names: tuple  # given, else the model's own (kerasseg.describe), else the held-out data's, else class_i
    input_normalization: str = None  # the normalization prepended to the model (taking_pixels), if any
    calibration: np.ndarray = None
    calibration_spec: str = None
    fingerprint: dict = None  # export.fingerprint.record of `model`: what the file will carry


def inputs(model, image_size=None, validation=None, calibration=None, class_names=None, samples=None,
           calibration_samples=None, calibrate=False, input_normalization=None, thresholds=None):
    """The Inputs of an export (kerasseg.data.values reads `validation` and `calibration` as the user has them).
    Without `validation`, the file is checked on the calibration images (the report says so). `calibrate`:
    whether the export calibrates, or a function of the loaded model saying so; `thresholds`: checked here,
    before any work (report.checked_thresholds)."""
    reports.checked_thresholds(thresholds)
    model, policy, name = load_model(model)
    calibrate = calibrate(model) if callable(calibrate) else calibrate
    described = description(model)
    if calibrate and calibration is None:
        raise InputError("int8 and int16x8 need calibration images: give calibration= (training images)")
    if validation is None and calibration is None:
        raise InputError("nothing to check the file on: give validation= (held-out images, with masks for the "
                         "mIoU) or calibration= images")
    # an iterator is read once, here: kept for calibrating after checking on it, and for its images' size
    validation, calibration = (list(v) if hasattr(v, "__next__") else v for v in (validation, calibration))
    pairs, spec, dataset_names = values.held_out(calibration if validation is None else validation, samples,
                                                 working_size(model, image_size))
    size = export_size(model, image_size, pairs, (validation, calibration))
    model, normalization = taking_pixels(model, input_normalization)
    classes = _checked_output(model, size)
    given = described.class_names if class_names is None else \
        checked_class_names(class_names, classes, model.name)
    names = given or (BINARY_NAMES if classes == 1 else tuple(f"class_{i}" for i in range(classes)))
    held_out = values.prepared(pairs, size, dataset_names or names, spec)
    if validation is None and not isinstance(calibration, str):  # (a spec's own test split is held out)
        held_out.spec = f"{held_out.spec}, the calibration images (no validation samples given)"
    other = sum(image.shape[0] * size[1] != image.shape[1] * size[0] for image, _ in pairs)
    if other:
        print(f"note: {other} of the {len(pairs)} held-out images ({held_out.spec}) have another aspect than the "
              f"file's {size[0]}x{size[1]}: they are stretched to it, as an app feeding the file whole frames "
              "(MediaPipe's ImageSegmenter) stretches them, and scored at their own size", file=sys.stderr)
    if not given and len(held_out.class_names) == mask_classes(classes):
        names = held_out.class_names
    found = Inputs(model, policy, name, size, held_out, names, normalization,
                   fingerprint=fingerprints.record(model))
    if calibrate:
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


def signed_function(model, image_size):
    """(the fixed-size batch-1 concrete function of `model` returning {its output kind: the output}, a
    tf.Module holding the model's variables): what TFLiteConverter.from_concrete_functions converts into a
    file with a `serving_default` signature, input "image", output "logits" (or "probabilities",
    "category"), as LiteRT's signature runners, Android's runSignature and ai-edge-quantizer read it.

    Given the variables as tf.Variables, the converter saves a SavedModel and freezes it (the Keras model
    itself as the holder leaves VAR_HANDLE / READ_VARIABLE ops that nothing initialises in LiteRT: NaN);
    when it cannot, it falls back to a file without the signature, which `signature_of` tells."""
    import tensorflow as tf

    spec = tf.TensorSpec([1, *image_size, 3], tf.float32, name="image")
    name = "category" if model.layers[-1].name == "category" else output_kind(model)  # (with_output_kind's)
    function = tf.function(lambda image: {name: model(image, training=False)}, input_signature=[spec])
    holder = tf.Module()
    holder.weights = [variable.value for variable in model.variables]
    return function.get_concrete_function(), holder


def signature_of(content):
    """{"inputs": [...], "outputs": [...]} of the .tflite bytes' serving_default signature, or None."""
    from ai_edge_litert.interpreter import Interpreter

    return Interpreter(model_content=bytes(content)).get_signature_list().get(runtimes.SIGNATURE)


def export_checked(found, output, build, quantization, overrides=None, extra=None, latency=False):
    """The shared path of every exporter: convert, check in the runtime, then write.

    `build(model, size)` returns (the Keras model the file is compared with,
    which may add an output head to `model`; file bytes; extra report
    fields). The bytes are checked from a temporary file; `output` and its report are written
    (atomically) only once the check has run, so a failure leaves whatever
    was at `output` before untouched and nothing partial. `latency`: time the file and
    the Keras model (20 runs each, batch 1) for the report. Returns the report (a dict).
    """
    report_file = reports.report_path(output)
    files.check_writable(output, report_file, reports.figure_path(report_file))  # before the work, not after it
    size = found.size
    print(f"converting {found.name} to {os.path.basename(output)} ({quantization}) at {size[0]}x{size[1]} ...",
          flush=True)
    model, content, built = build(found.model, size)
    with tempfile.NamedTemporaryFile(suffix=os.path.splitext(output)[1]) as tmp:
        tmp.write(content)
        tmp.flush()
        extra = {"model": found.name, "dataset": found.held_out.spec, "image_size": list(size),
                 "training_policy": found.policy, "input_normalization": found.input_normalization,
                 **(extra or {}), **built}
        report = reports.agreement_report(model, tmp.name, found.held_out, quantization, overrides, extra,
                                          figure=reports.figure_path(reports.report_path(output)),
                                          latency_repeats=20 if latency else 0,
                                          fingerprint=found.fingerprint and found.fingerprint["fingerprint"])
    files.write_bytes_atomic(output, content)
    reports.write_report(report, reports.report_path(output))
    return report
