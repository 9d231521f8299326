"""What the exporters share: loading the Keras model, sizes, data, the report."""

import os
import sys
import tempfile

from kerasseg import cli
from kerasseg.cli import UsageError, load_keras_model, resolve_image_size  # noqa: F401 (re-exported)


def load_samples(spec, split, image_size, count, model):
    """`count` samples of a dataset split at `image_size`, checked against the model's classes."""
    from kerasseg import data

    try:
        samples = data.load_split(spec, split, image_size, count=count)
    except ValueError as error:
        raise UsageError(str(error)) from None
    if len(samples) == 0:
        raise UsageError(f"dataset {spec!r} has no {split} samples")
    if samples.resized:
        print(f"note: {samples.resized} of {len(samples)} {spec} {split} images were resized to "
              f"{image_size[0]}x{image_size[1]}, the export size (masks: nearest)", file=sys.stderr)
    classes = model.outputs[0].shape[-1]
    if classes != samples.num_classes:
        raise UsageError(
            f"the model predicts {classes} classes but dataset {spec!r} has {samples.num_classes} "
            f"({', '.join(samples.class_names)})"
        )
    return samples


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


def report_path(output):
    return os.path.splitext(os.fspath(output))[0] + ".report.json"


def figure_path(report):
    """FILE.disagreement.png beside FILE.report.json."""
    return os.fspath(report).removesuffix(".report.json").removesuffix(".json") + ".disagreement.png"


def add_threshold_args(parser):
    parser.add_argument("--max-abs-error", type=float, help="override the max_abs_error threshold")
    parser.add_argument("--min-pixel-agreement", type=float, help="override the pixel_agreement threshold")
    parser.add_argument("--max-miou-drop", type=float, help="override the miou_drop threshold (mIoU points)")


def add_data_args(parser):
    parser.add_argument("--dataset", default="shapes",
                        help="dataset spec of the held-out samples compared on (test split; default: shapes)")
    parser.add_argument("--samples", type=cli.arg_type(cli.positive_int), default=50,
                        help="held-out samples to compare on (default: 50)")
    parser.add_argument("--image-size", type=cli.arg_type(cli.image_size),
                        help="fixed export size N or HxW (default: the model's, or the training size)")


def threshold_overrides(args):
    return {
        key: value
        for key, value in (
            ("max_abs_error", args.max_abs_error),
            ("pixel_agreement", args.min_pixel_agreement),
            ("miou_drop", args.max_miou_drop),
        )
        if value is not None
    }


def export_checked(model_path, output, build, quantization, image_size=None, dataset="shapes", samples=50,
                   overrides=None):
    """The shared path of every exporter: convert, check in the runtime, then write.

    `build(model, size)` returns (the Keras model the file is compared with,
    which may add an output head to `model`; file bytes; extra report
    fields). The bytes are checked from a temporary file; `output` and its report are written
    (atomically) only once the check has run, so a failure leaves whatever
    was at `output` before untouched and nothing partial.
    """
    from export import agreement

    cli.ensure_output_dir(output)
    model = load_keras_model(model_path)
    size = resolve_image_size(model, model_path, image_size)
    held_out = load_samples(dataset, "test", size, samples, model)
    print(f"converting {model_path} to {os.path.basename(output)} ({quantization}) at {size[0]}x{size[1]} ...",
          flush=True)
    model, content, extra = build(model, size)
    with tempfile.NamedTemporaryFile(suffix=os.path.splitext(output)[1]) as tmp:
        tmp.write(content)
        tmp.flush()
        extra = {"model": model_path, "dataset": dataset, "image_size": list(size), **extra}
        report = agreement.agreement_report(model, tmp.name, held_out, quantization, overrides, extra,
                                            figure=figure_path(report_path(output)))
    cli.write_bytes_atomic(output, content)
    agreement.write_report(report, report_path(output))
    return report
