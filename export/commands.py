"""The exporters' command lines: their shared options, and a run's record turned into values.

Every exporter's `main()` parses its options here, resolves the model's run
(run.json and splits/ beside it: its dataset, split lists, class names and
training size) into arrays, and calls the same function a Keras user calls
from Python. A model trained on a user's folder is therefore calibrated on
that folder's training split and compared on its held-out test split;
--dataset overrides it. Only this wiring reads a run directory.
"""

from dataclasses import dataclass, field

from kerasseg import cli, files
from kerasseg.cli import UsageError

resolve, rundir = cli.lazy_import("kerasseg.resolve", "kerasseg.rundir")  # (Keras: after --help)

THRESHOLD_FLAGS = {"max_abs_error": "max_abs_error", "pixel_agreement": "min_pixel_agreement",
                   "miou_drop": "max_miou_drop"}


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
    view = resolve.data_view(model_path, dataset)
    try:
        return view.load_split(split, image_size, count)
    except ValueError as error:
        raise UsageError(str(error)) from None


def image_size(model_path, requested=None):
    """--image-size, else the training size in the run's record, else the model's own (its fixed input size,
    or the training size it carries): a UsageError when none gives one. The model file is read only when
    there is no record beside it (a model copied out of its run)."""
    if requested:
        return tuple(requested)
    record = rundir.Run.of_model(model_path)
    if record is not None:
        return record.image_size
    return resolve.image_size(files.load_keras_model(model_path), model_path)


def run_data(model_path, data, calibrate=False, output=None):
    """The keyword arguments of an export function for `model_path` under `data`'s options: the export size,
    the held-out test samples and, when `calibrate`, the training images (kerasseg.data.Split values).
    `output`: the file the export will write, whose folder is made first (before any data is read)."""
    if output is not None:
        files.ensure_output_dir(output)
    size = image_size(model_path, data.image_size)
    found = {"image_size": size, "samples": data.samples,
             "validation": load_samples(model_path, data.dataset, "test", size, data.samples)}
    if calibrate:
        found["calibration"] = calibration_split(model_path, data, size)
        found["calibration_samples"] = data.calibration_samples
    return found


def calibration_split(model_path, data, image_size):
    """The training images to calibrate on: of --calibration-dataset, else --dataset, else the run's split."""
    return load_samples(model_path, data.calibration_dataset or data.dataset, "train", image_size,
                        data.calibration_samples)


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
        data.add_argument("--calibration-samples", type=cli.arg_type(cli.positive_int), default=200,
                          help="training images to calibrate int8 on (default: 200)")
    parser.add_argument("--latency", action="store_true",
                        help="time the file in its runtime and the Keras model (20 runs each, batch 1, this CPU) for "
                             "the report (not measured by default)")
    thresholds = parser.add_argument_group("thresholds")
    thresholds.add_argument("--max-abs-error", type=float, help="override the max_abs_error threshold")
    thresholds.add_argument("--min-pixel-agreement", type=float, help="override the pixel_agreement threshold")
    thresholds.add_argument("--max-miou-drop", type=float, help="override the miou_drop threshold (mIoU points)")
