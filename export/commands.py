"""The exporters' command-line options, declared once: their parser, the options every exporter shares, and
those options as values (DataOptions).

The wiring that turns them into an export is export.formats.main: the model file resolved once
(kerasseg.resolve.stage: its run's dataset, split lists, class names and training size), the function a Keras
user calls from Python called on it. A model trained on a user's folder is therefore calibrated on that
folder's training split and compared on its held-out test split; --dataset overrides it.
"""

from dataclasses import dataclass, field

from kerasseg import cli

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
    samples: int = None  # (None: kerasseg.data.values.DEFAULT_SAMPLES, 50)
    calibration_dataset: str = None
    calibration_samples: int = 200
    overrides: dict = field(default_factory=dict)

    @classmethod
    def from_args(cls, args):
        overrides = {key: getattr(args, attr) for key, attr in THRESHOLD_FLAGS.items()
                     if getattr(args, attr, None) is not None}
        return cls(args.image_size, args.dataset, args.samples, getattr(args, "calibration_dataset", None),
                   getattr(args, "calibration_samples", 200), overrides)


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
    data.add_argument("--samples", type=cli.arg_type(cli.positive_int),
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
