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

from kerasseg.calibrations import QAT_CALIBRATIONS  # noqa: F401 (a training setting's values)
from kerasseg.errors import InputError

OPTIMIZERS = ("adam", "adamw", "sgd")
SCHEDULES = ("cosine", "poly")
AUGMENTS = ("full", "flip", "none")
STRATEGIES = ("none", "mirrored", "multiworker", "data-parallel")
CACHES = ("auto", "none", "memory")  # or a directory (kerasseg.data.pipeline.open_cache)
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


@dataclass
class TrainConfig:
    """The settings of a training run (see `python -m kerasseg.train --help` for each one's meaning)."""

    output: str
    model: str = "unet_edge"
    backbone: str = None
    backbone_weights: str = None
    model_args: dict = field(default_factory=dict)
    init_from: str = None
    quantization_aware: bool = False
    qat_calibration: str = "minmax"
    dataset: str = "shapes"
    data_dir: str = None
    classes: int = None
    binary_masks: bool = False
    image_size: tuple = (64, 64)
    batch_size: int = 16
    epochs: int = 10
    train_samples: int = None
    augment: str = "full"
    cache: str = "auto"
    lr: float = None  # None: LEARNING_RATE, or FINE_TUNING_LEARNING_RATE when quantization-aware
    optimizer: str = "adam"
    schedule: str = "cosine"
    loss: str = "ce"
    class_weights: list = None
    patience: int = None
    mixed_precision: bool = False
    strategy: str = "none"
    logical_cpus: int = None
    seed: int = 0
    resume: bool = False
    overwrite: bool = False

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
        from kerasseg import data, rundir

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
