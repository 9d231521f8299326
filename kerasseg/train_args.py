"""`python -m kerasseg.train`'s command line: its flags as a kerasseg.config.TrainConfig, and a
TrainConfig's errors worded back in those flags."""

import json

from kerasseg import cli
from kerasseg.config import (AUGMENTS, FINE_TUNING_LEARNING_RATE, LEARNING_RATE, OPTIMIZERS, QAT_CALIBRATIONS,
                             SCHEDULES, STRATEGIES, ConfigError, TrainConfig, segmenter_name)


def _parser(description):
    from kerasseg import data

    def class_weights(text):
        try:
            return [float(w) for w in text.split(",")]
        except ValueError:
            raise ValueError(f"expected comma-separated numbers, one per class, e.g. 1,5,5. Received: {text!r}") from None

    def loss_name(text):
        from kerasseg import losses

        losses.parse_loss(text)
        return text

    parser = cli.ArgumentParser(prog="python -m kerasseg.train", description=description,
                                formatter_class=cli.argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--model", default="unet_edge", type=cli.arg_type(segmenter_name),
                        help="registered segmenter (default: unet_edge)")
    parser.add_argument("--backbone", help="registered classifier as the encoder, for segmenters that take one")
    parser.add_argument("--backbone-weights", help="backbone weights: imagenet or a .weights.h5 path")
    parser.add_argument("--model-args", default={}, type=cli.arg_type(_model_args),
                        help='more builder arguments as JSON, e.g. \'{"base_filters": 8}\'')
    parser.add_argument("--init-from", metavar="MODEL.keras",
                        help="start from this trained model (its architecture and weights; --model, --backbone, "
                             "--backbone-weights and --model-args are then unused)")
    parser.add_argument("--quantization-aware", action="store_true",
                        help="fine-tune --init-from with TFLite's int8 arithmetic simulated (kerasseg.qat: batch "
                             "norm folded, int8 weights per channel, int8 activations), at --lr "
                             f"{FINE_TUNING_LEARNING_RATE:g} unless given; its model.keras exports with export.tflite "
                             "--quantize int8 at the ranges it learned")
    parser.add_argument("--qat-calibration", choices=QAT_CALIBRATIONS, default="minmax",
                        help="where --quantization-aware's activation ranges start: each tensor's min and max on the "
                             "first training images, then following the batches' (default); or its 99.99th "
                             "percentiles there, held (finer int8 steps for all but rare outliers)")
    parser.add_argument("--dataset", default="shapes", type=cli.arg_type(data.check_spec),
                        help=f"dataset spec; accepted: {', '.join(data.ACCEPTED_SPECS)} (default: shapes)")
    parser.add_argument("--data-dir", help="where TFDS data was downloaded (tfds: specs)")
    parser.add_argument("--classes", type=cli.arg_type(cli.positive_int),
                        help="number of classes (checked against labels.txt; needed by some datasets); 1: a binary segmenter, one "
                             "foreground logit, masks 0 (background) and 1 (foreground), labels.txt the foreground's "
                             "name (or both)")
    parser.add_argument("--binary-masks", action="store_true",
                        help="a folder's masks are black-and-white pictures of the foreground (0 and 255, any image "
                             "format, as Carvana, ISIC and Kvasir ship them; 128 or more is foreground): a binary "
                             "segmenter (--classes 1)")
    parser.add_argument("--image-size", default=(64, 64), type=cli.arg_type(cli.image_size),
                        help="training crop size, N or HxW (default: 64)")
    parser.add_argument("--batch-size", default=16, type=cli.arg_type(cli.positive_int))
    parser.add_argument("--epochs", default=10, type=cli.arg_type(cli.positive_int))
    parser.add_argument("--train-samples", type=cli.arg_type(cli.positive_int),
                        help="use the first N training samples (default: the whole split)")
    parser.add_argument("--augment", choices=AUGMENTS, default="full",
                        help="full: random scale, crop/pad, flip and colour jitter; flip: flips only")
    parser.add_argument("--cache", default="auto", metavar="auto|none|memory|DIR",
                        help="where decoded examples are kept between epochs: none (decoded from their files each "
                             "time), memory, or a directory (decoded once, for every later epoch and run); auto "
                             "(default): memory when the decoded split takes at most 1 GiB, else none")
    parser.add_argument("--lr", type=float,
                        help=f"peak learning rate (default: {LEARNING_RATE:g}; {FINE_TUNING_LEARNING_RATE:g} with "
                             "--quantization-aware, which fine-tunes)")
    parser.add_argument("--optimizer", choices=OPTIMIZERS, default="adam")
    parser.add_argument("--schedule", choices=SCHEDULES, default="cosine",
                        help="cosine decay, or DeepLab's polynomial (power 0.9) decay")
    parser.add_argument("--loss", default="ce", type=cli.arg_type(loss_name),
                        help="ce, dice, focal, or a weighted sum such as ce+dice (default: ce)")
    parser.add_argument("--class-weights", type=cli.arg_type(class_weights), help="per-class loss weights, e.g. 1,5,5")
    parser.add_argument("--patience", type=cli.arg_type(cli.positive_int),
                        help="stop after this many epochs without a better validation mIoU")
    parser.add_argument("--mixed-precision", action="store_true",
                        help="mixed_float16 on a GPU, mixed_bfloat16 elsewhere; logits and loss stay float32")
    parser.add_argument("--strategy", choices=STRATEGIES, default="none",
                        help="mirrored: the local devices (TensorFlow); data-parallel: every local JAX device; "
                             "multiworker: several machines (TensorFlow: MultiWorkerMirroredStrategy from TF_CONFIG; "
                             "JAX: keras.distribution, KERAS_DISTRIBUTION_* variables)")
    parser.add_argument("--logical-cpus", type=cli.arg_type(cli.positive_int),
                        help="split the CPU into N logical devices (try --strategy mirrored without GPUs)")
    parser.add_argument("--seed", default=0, type=int, help="seed for initialisation and shuffling")
    parser.add_argument("--output", required=True, help="directory for model.keras, metrics.json, history.csv, ...")
    parser.add_argument("--resume", action="store_true",
                        help="continue the interrupted run in --output with its own arguments (--epochs may grow)")
    parser.add_argument("--overwrite", action="store_true",
                        help="start a new run in an --output that holds another run, deleting that run's files")
    return parser


def parse_args(argv=None, description=None):
    """The command line's settings as a TrainConfig (with --resume: the run's own, TrainConfig.resumed);
    `description`: its --help's text."""
    args = _parser(description).parse_args(argv)
    try:
        if not args.resume:
            return TrainConfig(**vars(args))
        explicit = _parser(description)
        for action in explicit._actions:
            action.default = cli.argparse.SUPPRESS
        given = vars(explicit.parse_args(argv))
        return TrainConfig.resumed(given.pop("output"), **given)
    except ConfigError as error:
        raise cli.UsageError(flag_words(error)) from None


def flag_words(error):
    """A ConfigError worded in this command's flags: `--epochs 2 ...`, `--quantization-aware ...`."""

    def subject(name, value):
        flag = "--" + name.replace("_", "-")
        if value is True:
            return flag
        if isinstance(value, str) and (not value.strip() or value != value.strip()):
            return f"{flag} {value!r}"  # (a value of blanks, shown)
        return f"{flag} {'x'.join(map(str, value)) if name == 'image_size' else value}"

    return error.worded(subject, lambda name: "--" + name.replace("_", "-"))


def _model_args(text):
    try:
        value = json.loads(text)
    except json.JSONDecodeError as error:
        raise ValueError(f"not valid JSON ({error.msg}): {text!r}") from None
    if not isinstance(value, dict):
        raise ValueError(f"expected a JSON object of builder arguments, got {text!r}")
    return value
