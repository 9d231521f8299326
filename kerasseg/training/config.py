"""A training run's settings as values: `TrainConfig`, what `kerasseg.train.train(config)` runs.

    from kerasseg.train import TrainConfig, train
    run = train(TrainConfig(output="runs/mine", model="deeplab_v3_plus", backbone="mobilenet_v2",
                            dataset="folder:my_data", image_size=256, epochs=50, loss="ce+dice"))
    run = train(TrainConfig.resumed("runs/mine", epochs=60))   # after an interruption, or to go on

Every field is a `python -m kerasseg.train` option, with the same default
and the same checks; a value that cannot be used is a ConfigError (a
ValueError) worded in values (`epochs=0 ...`), which the command line words
in flags (`--epochs 0 ...`).
"""

import dataclasses
import json
import os
import re
from dataclasses import dataclass, field

from kerasseg.choices import CACHES, QAT_CALIBRATIONS  # noqa: F401 (a training setting's values)
from kerasseg.cli import image_size as image_size_text, positive_int
from kerasseg.errors import InputError

OPTIMIZERS = ("adam", "adamw", "sgd")
SCHEDULES = ("cosine", "poly")
AUGMENTS = ("full", "flip", "none")
STRATEGIES = ("none", "mirrored", "multiworker", "data-parallel")
LEARNING_RATE = 2e-3  # training from scratch (or from ImageNet weights)
FINE_TUNING_LEARNING_RATE = 1e-4  # quantization-aware: 2e-3 undoes the float training (demo U-Net: 0.930 -> 0.678)
NOT_RECORDED = ("output", "resume", "overwrite")  # where a run is and how it was started, not what it is
MAY_CHANGE_ON_RESUME = ("cache",)  # how a run reads its data, not what it learns


class ConfigError(InputError):
    """A setting that cannot be used: `setting` and `value`, and the problem, in which `{name}` stands for
    another setting (a value `name` in Python, `--name` on the command line)."""

    def __init__(self, setting, value, problem):
        self.setting, self.value, self.problem = setting, value, problem
        super().__init__(self.worded(lambda name, value: f"{name}={value!r}", _python_name))

    def worded(self, subject, name):
        """The message with the setting as `subject(setting, value)` and each other one as `name(setting)`."""
        known = {f.name for f in dataclasses.fields(TrainConfig)}
        problem = re.sub(r"\{(\w+)\}", lambda m: name(m.group(1)) if m.group(1) in known else m.group(0),
                         self.problem)
        return f"{subject(self.setting, self.value)} {problem}"


def segmenter_name(name):
    """`name` if it is a registered segmenter, else a ValueError listing them."""
    from kerasseg import models

    import difflib

    segmenters = models.list_models("segmentation")
    if name not in segmenters:
        kind = "a classifier" if name in models.list_models() else "not a registered model"
        close = difflib.get_close_matches(str(name), segmenters, 1)
        raise ValueError(f"{name!r} is {kind}{f' (Did you mean: {close[0]}?)' if close else ''}; accepted "
                         f"segmenters: {', '.join(segmenters)}")
    return name


def _python_name(name):
    """How a message names another setting in Python: `resume=True` for a switch, else its name."""
    return f"{name}=True" if isinstance(getattr(TrainConfig, name, None), bool) else name


def setting(default=None, help=None, parse=None, **flag):
    """A TrainConfig field, declared once for Python and the command line: its `default`, its flag's `help`
    (a string, or a function giving it, called when the flag is shown), `parse` (text -> value, raising a
    ValueError worded in values) and any other argparse option of its flag (choices, metavar, required)."""
    metadata = {"help": help, "parse": parse, "flag": flag}
    if default is dataclasses.MISSING:  # (a setting that must be given)
        return field(metadata=metadata)
    if isinstance(default, (dict, list)):
        return field(default_factory=lambda: type(default)(default), metadata=metadata)
    return field(default=default, metadata=metadata)


def _parse_model_args(text):
    try:
        value = json.loads(text)
    except json.JSONDecodeError as error:
        raise ValueError(f"not valid JSON ({error.msg}): {text!r}") from None
    if not isinstance(value, dict):
        raise ValueError(f"expected a JSON object of builder arguments, got {text!r}")
    return value


def _parse_class_weights(text):
    try:
        return [float(w) for w in text.split(",")]
    except ValueError:
        raise ValueError(f"expected comma-separated numbers, one per class, e.g. 1,5,5. Received: {text!r}") from None


def _parse_loss(text):
    from kerasseg import losses

    losses.parse_loss(text)
    return text


def _parse_dataset(text):
    from kerasseg import data

    return data.check_spec(text)


def _dataset_help():
    from kerasseg import data

    return f"dataset spec; accepted: {', '.join(data.ACCEPTED_SPECS)} (default: shapes)"


@dataclass
class TrainConfig:
    """The settings of a training run: each field is a `python -m kerasseg.train` flag of the same name
    (`--batch-size` for batch_size), with the same default; its help is the field's (`setting`)."""

    output: str = setting(dataclasses.MISSING, "directory for model.keras, metrics.json, history.csv, ...",
                          required=True)
    model: str = setting("unet_edge", "registered segmenter (default: unet_edge)", lambda text: segmenter_name(text))
    backbone: str = setting(help="registered classifier as the encoder, for segmenters that take one")
    backbone_weights: str = setting(help="backbone weights: imagenet or a .weights.h5 path")
    model_args: dict = setting({}, 'more builder arguments as JSON, e.g. \'{"base_filters": 8}\'', _parse_model_args)
    init_from: str = setting(help="start from this trained model (its architecture and weights; --model, --backbone, "
                             "--backbone-weights and --model-args are then unused)", metavar="MODEL.keras")
    quantization_aware: bool = setting(False, "fine-tune --init-from with TFLite's int8 arithmetic simulated "
                                       "(kerasseg.qat: batch norm folded, int8 weights per channel, int8 "
                                       f"activations), at --lr {FINE_TUNING_LEARNING_RATE:g} unless given; its "
                                       "model.keras exports with export.tflite --quantize int8 at the ranges it "
                                       "learned")
    qat_calibration: str = setting("minmax", "where --quantization-aware's activation ranges start: each tensor's "
                                   "min and max on the first training images, then following the batches' (default); "
                                   "or its 99.99th percentiles there, held (finer int8 steps for all but rare "
                                   "outliers)", choices=QAT_CALIBRATIONS)
    dataset: str = setting("shapes", _dataset_help, _parse_dataset)
    data_dir: str = setting(help="where TFDS data was downloaded (tfds: specs)")
    classes: int = setting(help="number of classes (checked against labels.txt; needed by some datasets); 1: a binary "
                           "segmenter, one foreground logit, masks 0 (background) and 1 (foreground), labels.txt the "
                           "foreground's name (or both)", parse=positive_int)
    binary_masks: bool = setting(False, "a folder's masks are black-and-white pictures of the foreground (0 and 255, "
                                 "any image format, as Carvana, ISIC and Kvasir ship them; 128 or more is "
                                 "foreground): a binary segmenter (--classes 1)")
    image_size: tuple = setting((64, 64), "training crop size, N or HxW (default: 64)", image_size_text)
    batch_size: int = setting(16, "images per training step (default: 16)", positive_int)
    epochs: int = setting(10, "passes over the training split (default: 10)", positive_int)
    train_samples: int = setting(help="use the first N training samples (default: the whole split)",
                                 parse=positive_int)
    augment: str = setting("full", "full (default): random scale, crop/pad, flip and colour jitter; flip: flips only",
                           choices=AUGMENTS)
    cache: str = setting("auto", "where decoded examples are kept between epochs: none (decoded from their files "
                         "each time), memory, or a directory (decoded once, for every later epoch and run); auto "
                         "(default): memory when the decoded split takes at most 1 GiB, else none",
                         metavar="auto|none|memory|DIR")
    lr: float = setting(help=f"peak learning rate (default: {LEARNING_RATE:g}; {FINE_TUNING_LEARNING_RATE:g} with "
                        "--quantization-aware, which fine-tunes)", parse=float)
    optimizer: str = setting("adam", "the optimizer (default: adam)", choices=OPTIMIZERS)
    schedule: str = setting("cosine", "cosine decay (default), or DeepLab's polynomial (power 0.9) decay",
                            choices=SCHEDULES)
    loss: str = setting("ce", "ce, dice, focal, lovasz, or a weighted sum such as ce+dice or 0.5*ce+dice (default: ce; "
                        "a binary segmenter's ce is binary cross-entropy)", _parse_loss)
    class_weights: list = setting(help="per-class loss weights, e.g. 1,5,5", parse=_parse_class_weights)
    patience: int = setting(help="stop after this many epochs without a better validation mIoU (default: run every "
                            "epoch)", parse=positive_int)
    mixed_precision: bool = setting(False, "mixed_float16 on a GPU, mixed_bfloat16 elsewhere; logits and loss stay "
                                    "float32")
    strategy: str = setting("none", "mirrored: the local devices (TensorFlow); data-parallel: every local JAX "
                            "device; multiworker: several machines (TensorFlow: MultiWorkerMirroredStrategy from "
                            "TF_CONFIG; JAX: keras.distribution, KERAS_DISTRIBUTION_* variables)", choices=STRATEGIES)
    logical_cpus: int = setting(help="split the CPU into N logical devices (try --strategy mirrored without GPUs)",
                                parse=positive_int)
    seed: int = setting(0, "seed for initialisation and shuffling (default: 0)", int)
    resume: bool = setting(False, "continue the interrupted run in --output with its own arguments (--epochs may "
                           "grow)")
    overwrite: bool = setting(False, "start a new run in an --output that holds another run, deleting that run's "
                              "files")

    def __post_init__(self):
        from kerasseg import data, losses

        self.output = os.fspath(self.output)
        self.init_from = None if self.init_from is None else os.fspath(self.init_from)
        if self.init_from is not None:  # the model is the file's: what would build one is unused, and not recorded
            self.model, self.backbone, self.backbone_weights, self.model_args = None, None, None, {}
        else:
            try:
                segmenter_name(self.model)
            except ValueError as error:
                raise ConfigError("model", self.model, f"cannot be used: {error}") from None
        if not isinstance(self.model_args, dict):
            raise ConfigError("model_args", self.model_args, "must be a dict of builder arguments")
        size = (self.image_size,) * 2 if isinstance(self.image_size, int) else tuple(self.image_size)
        if len(size) != 2 or not all(isinstance(n, int) and n > 0 for n in size):
            raise ConfigError("image_size", self.image_size, "must be N or (height, width) of positive integers")
        self.image_size = size
        for name in ("batch_size", "epochs", "train_samples", "classes", "patience", "logical_cpus"):
            value = getattr(self, name)
            if value is not None and (isinstance(value, bool) or not isinstance(value, int) or value < 1):
                raise ConfigError(name, value, "must be a positive integer")
        for name, accepted in (("augment", AUGMENTS), ("optimizer", OPTIMIZERS), ("schedule", SCHEDULES),
                               ("strategy", STRATEGIES), ("qat_calibration", QAT_CALIBRATIONS)):
            if getattr(self, name) not in accepted:
                raise ConfigError(name, getattr(self, name), f"is not one of {', '.join(accepted)}")
        for name, check in (("loss", losses.parse_loss), ("dataset", data.check_spec)):
            try:
                check(getattr(self, name))
            except ValueError as error:
                raise ConfigError(name, getattr(self, name), f"cannot be used: {error}") from None
        self.dataset = data.resolve_spec(self.dataset)  # a run records where its data is, not how it was typed
        if not isinstance(self.cache, (str, os.PathLike)) or not os.fspath(self.cache).strip():
            raise ConfigError("cache", self.cache, f"is not one of {', '.join(CACHES)} nor a directory")
        self.cache = os.fspath(self.cache)
        if self.cache not in CACHES:  # a directory, recorded where it is
            if os.sep not in self.cache and not self.cache.startswith("~") and not os.path.isdir(self.cache):
                import difflib

                close = difflib.get_close_matches(self.cache, CACHES, 1)
                raise ConfigError("cache", self.cache, f"is not one of {', '.join(CACHES)}"
                                  + (f" (did you mean {close[0]}?)" if close else "") + "; a folder to keep "
                                  f"decoded examples in is given as a path (e.g. .{os.sep}{self.cache})")
            self.cache = os.path.abspath(os.path.expanduser(self.cache))
        if self.class_weights is not None:
            try:
                self.class_weights = [float(w) for w in self.class_weights]
            except (TypeError, ValueError):
                raise ConfigError("class_weights", self.class_weights, "must be numbers, one per class") from None
        if self.binary_masks and self.classes not in (None, 1):
            raise ConfigError("binary_masks", True, "reads black-and-white masks as background and foreground, for "
                              "a binary segmenter: leave out {classes} or give 1")
        if self.binary_masks:
            self.classes = 1
        if self.quantization_aware and not self.init_from:
            raise ConfigError("quantization_aware", True, "fine-tunes a trained float model: give it as "
                              "{init_from} (a model.keras)")
        if self.qat_calibration != "minmax" and not self.quantization_aware:
            raise ConfigError("qat_calibration", self.qat_calibration, "sets where quantization-aware training's "
                              "ranges start: add {quantization_aware}")
        if self.quantization_aware and self.mixed_precision:
            raise ConfigError("quantization_aware", True, "simulates int8 in float32: leave out {mixed_precision}")
        if self.resume and self.overwrite:
            raise ConfigError("resume", True, "continues the run in {output} and {overwrite} deletes it: choose one")
        if self.lr is None:
            self.lr = FINE_TUNING_LEARNING_RATE if self.quantization_aware else LEARNING_RATE
        if not self.lr > 0:
            raise ConfigError("lr", self.lr, "must be a positive learning rate")

    def recorded(self):
        """The settings a run records in run.json (all but where it is and how it was started)."""
        return {k: v for k, v in json.loads(json.dumps(dataclasses.asdict(self))).items() if k not in NOT_RECORDED}

    @classmethod
    def resumed(cls, output, **given):
        """The config of the run recorded in `output`, to continue it: `given` settings must be the run's own,
        except `epochs`, which may grow (the run then goes on to the new count)."""
        from kerasseg import data
        from kerasseg.training import rundir

        if given.pop("overwrite", False):
            raise ConfigError("resume", True, "continues the run in {output} and {overwrite} deletes it: choose one")
        run = rundir.Run.read(output)
        if run is None:
            raise ConfigError("output", os.fspath(output), "holds nothing to resume: no run.json (start the run "
                              "without {resume})")
        saved = dict(run.arguments)
        known = {f.name for f in dataclasses.fields(cls)}
        for key, value in given.items():
            if key not in known:
                import difflib

                close = difflib.get_close_matches(key, sorted(known), 1)
                raise ConfigError(key, value, "is not a setting of a training run" +
                                  (f" (did you mean {close[0]}?)" if close else ""))
            if key == "image_size" and isinstance(value, int):
                value = (value, value)
            if key in NOT_RECORDED or json.loads(json.dumps(value)) == saved.get(key) or \
                    (key == "dataset" and data.same_dataset(value, saved[key])):
                continue
            if key in MAY_CHANGE_ON_RESUME:
                saved[key] = value
                continue
            if key == "epochs" and value > saved["epochs"]:
                saved["epochs"] = value
                continue
            allowed = " (epochs may only grow)" if key == "epochs" else ""
            raise ConfigError(key, value, f"contradicts {output}/run.json, where the run has {saved.get(key)!r}"
                              f"{allowed}: a resumed run continues as it was; leave {{{key}}} out, or start a new "
                              "run in another {output}")
        # a setting newer than the run's record takes its default (the run was made without it)
        return cls(**{k: v for k, v in saved.items() if k in known}, output=os.fspath(output), resume=True)
