"""The convert-check-write pipeline every exporter runs, and what they share.

Layers, one way: `runtimes` (run a file) -> `report` (compare, thresholds) ->
`pipeline` (load the model and data, convert, check, write) -> one module per
format (`tflite`, `onnx`, `edgetpu`, `android`) and the `agreement` CLI.

The data of every exporter defaults to the run's record (run.json and
splits/ beside the model: its dataset, split lists and class names), so a
model trained on a user's folder is calibrated on that folder's training
split and compared on its held-out test split; --dataset overrides it.
"""

import os
import sys
import tempfile
from dataclasses import dataclass, field

from kerasseg import cli, files, rundir
from kerasseg.cli import UsageError
from export import report as reports


@dataclass(frozen=True)
class DataOptions:
    """What an exporter compares on and calibrates with, and the thresholds it is held to.

    dataset: the held-out samples' dataset spec (test split), None for the
    run's record; calibration_dataset: the training images int8 is calibrated
    on (default: `dataset`, else the run's); overrides: threshold values
    replacing the defaults of the quantization mode.
    """

    image_size: tuple = None
    dataset: str = None
    samples: int = 50
    calibration_dataset: str = None
    calibration_samples: int = 200
    overrides: dict = field(default_factory=dict)

    @classmethod
    def from_args(cls, args):
        overrides = {key: getattr(args, attr) for key, attr in THRESHOLD_FLAGS.items()
                     if getattr(args, attr, None) is not None}
        return cls(args.image_size, args.dataset, args.samples, getattr(args, "calibration_dataset", None),
                   getattr(args, "calibration_samples", 200), overrides)


def load_samples(model_path, dataset, split, image_size, count):
    """`count` samples of a split at `image_size`: of `dataset`, else of the run's record (its split lists)."""
    view = rundir.data_view(model_path, dataset)
    try:
        samples = view.load_split(split, image_size, count)
    except ValueError as error:
        raise UsageError(str(error)) from None
    if samples.resized:
        print(f"note: {samples.resized} of {len(samples)} {view.spec} {split} images were resized to "
              f"{image_size[0]}x{image_size[1]}, the export size (masks: nearest)", file=sys.stderr)
    return samples


def load_model(path):
    """The Keras model at `path` in float32, and the dtype policy it was saved under.

    A model trained with --mixed-precision computes in bfloat16 or float16,
    which the converters cannot lower (`'tf.Mul' op is neither a custom op
    nor a flex op`); it is rebuilt layer for layer in float32 with the same
    weights (kerasseg.qat.float32_model), and that rebuild is what the
    export is compared with.
    """
    from kerasseg import qat

    return qat.float32_model(files.load_keras_model(path))


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


THRESHOLD_FLAGS = {"max_abs_error": "max_abs_error", "pixel_agreement": "min_pixel_agreement",
                   "miou_drop": "max_miou_drop"}


def exporter_parser(prog, description, output_help):
    """The command line of an exporter: the trained model, --output, then its own options."""
    parser = cli.ArgumentParser(prog=prog, description=description,
                                formatter_class=cli.argparse.RawDescriptionHelpFormatter)
    parser.add_argument("model", help="the trained Keras model (.keras)")
    parser.add_argument("--output", required=True, help=output_help)
    return parser


def add_arguments(parser, calibration=True):
    """The options every exporter shares, declared once: data, calibration, thresholds."""
    data = parser.add_argument_group("data")
    data.add_argument("--dataset",
                      help="dataset spec of the held-out samples compared on (test split; default: the run's "
                           "dataset and split lists, from run.json beside the model)")
    data.add_argument("--samples", type=cli.arg_type(cli.positive_int), default=50,
                      help="held-out samples to compare on (default: 50)")
    data.add_argument("--image-size", type=cli.arg_type(cli.image_size),
                      help="fixed export size N or HxW (default: the model's, or the training size)")
    if calibration:
        data.add_argument("--calibration-dataset",
                          help="dataset spec for int8 calibration (train split; default: --dataset, else the run's)")
        data.add_argument("--calibration-samples", type=cli.arg_type(cli.positive_int), default=200)
    thresholds = parser.add_argument_group("thresholds")
    thresholds.add_argument("--max-abs-error", type=float, help="override the max_abs_error threshold")
    thresholds.add_argument("--min-pixel-agreement", type=float, help="override the pixel_agreement threshold")
    thresholds.add_argument("--max-miou-drop", type=float, help="override the miou_drop threshold (mIoU points)")


def calibration_images(model_path, data, image_size):
    """(images, spec) of the training images to calibrate on: `data`'s calibration dataset, else its
    dataset, else the run's training split."""
    samples = load_samples(model_path, data.calibration_dataset or data.dataset, "train", image_size,
                           data.calibration_samples)
    return samples.images, samples.spec


def export_checked(model_path, output, build, quantization, data):
    """The shared path of every exporter: convert, check in the runtime, then write.

    `build(model, size)` returns (the Keras model the file is compared with,
    which may add an output head to `model`; file bytes; extra report
    fields). The bytes are checked from a temporary file; `output` and its report are written
    (atomically) only once the check has run, so a failure leaves whatever
    was at `output` before untouched and nothing partial.
    """
    files.ensure_output_dir(output)
    model, policy = load_model(model_path)
    size = rundir.resolve_image_size(model, model_path, data.image_size)
    held_out = load_samples(model_path, data.dataset, "test", size, data.samples)
    print(f"converting {model_path} to {os.path.basename(output)} ({quantization}) at {size[0]}x{size[1]} ...",
          flush=True)
    model, content, extra = build(model, size)
    with tempfile.NamedTemporaryFile(suffix=os.path.splitext(output)[1]) as tmp:
        tmp.write(content)
        tmp.flush()
        extra = {"model": os.fspath(model_path), "dataset": held_out.spec, "image_size": list(size),
                 "training_policy": policy, **extra}
        report = reports.agreement_report(model, tmp.name, held_out, quantization, data.overrides, extra,
                                          figure=reports.figure_path(reports.report_path(output)))
    files.write_bytes_atomic(output, content)
    reports.write_report(report, reports.report_path(output))
    return report
