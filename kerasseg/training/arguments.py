"""`python -m kerasseg.train`'s command line: its flags made from kerasseg.training.config.TrainConfig's fields (each
default and help written once, there), and a TrainConfig's errors worded back in those flags."""

import dataclasses

from kerasseg import cli
from kerasseg.training.config import ConfigError, TrainConfig


def _parser(description, defaults=True):
    """The command line: one flag per TrainConfig field (`defaults` False: a flag not given is left out of the
    parsed arguments, as --resume needs to tell the given ones)."""
    parser = cli.ArgumentParser(prog="python -m kerasseg.train", description=description,
                                formatter_class=cli.argparse.RawDescriptionHelpFormatter)
    for field in dataclasses.fields(TrainConfig):
        meta = field.metadata
        options = dict(meta["flag"])
        help = meta["help"]() if callable(meta["help"]) else meta["help"]
        if field.type is bool or field.type == "bool":
            options["action"] = "store_true"
        elif meta["parse"] is not None:  # (int and float: argparse's own "invalid int value")
            options["type"] = meta["parse"] if meta["parse"] in (int, float) else cli.arg_type(meta["parse"])
        if not defaults:
            options["default"] = cli.argparse.SUPPRESS
        elif field.default is not dataclasses.MISSING:
            options["default"] = field.default
        elif field.default_factory is not dataclasses.MISSING:
            options["default"] = field.default_factory()
        parser.add_argument("--" + field.name.replace("_", "-"), help=help, **options)
    return parser


def parse_args(argv=None, description=None):
    """The command line's settings as a TrainConfig (with --resume: the run's own, TrainConfig.resumed);
    `description`: its --help's text."""
    args = _parser(description).parse_args(argv)
    try:
        if not args.resume:
            return TrainConfig(**vars(args))
        given = vars(_parser(description, defaults=False).parse_args(argv))
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
