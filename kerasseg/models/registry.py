"""One registry for every public builder, and the encoder contract classifiers declare.

Builders are plain functions registered once under their own name; tests,
benchmarks and the CLIs iterate the registry instead of keeping their own
lists, and `kerasseg.models` exports every registered name. A classifier
that can serve as a segmenter's encoder declares what it offers
(`Encoder`): the segmenters read that record, so a combination the backbone
does not support is a clear error before any layer is built.
"""

import difflib
from dataclasses import dataclass, field

_REGISTRY = {}
TASKS = ("classification", "segmentation")
LEVELS = ("P1", "P2", "P3", "P4", "P5")


@dataclass(frozen=True)
class Encoder:
    """What a classifier offers a segmenter, declared where it is registered.

    Its builder takes `features_only=True` (the pyramid model, outputs keyed
    "P1".."P5", Pn at stride 2**n) and `output_stride`.

    channels: {"P1": c1, ..., "P5": c5} at the builder's defaults (width
        options such as MobileNetV2's alpha change them).
    output_strides: the output strides it builds (past it, stages dilate).
    edge: its builder takes `edge=True` (an Edge TPU-friendly variant, e.g.
        ReLU6 for swish); the other families are ReLU networks already.
    multi_grid: its builder takes DeepLab v3's `multi_grid`.
    pretrained: where its published ImageNet weights are (a
        `backbone.PretrainedWeights`, or a dict of them by width), or None.
    """

    channels: dict
    output_strides: tuple = (8, 16, 32)
    edge: bool = False
    multi_grid: bool = False
    pretrained: object = field(default=None, compare=False)

    def __post_init__(self):
        if tuple(self.channels) != LEVELS:
            raise ValueError(f"Encoder channels must be keyed {LEVELS}. Received: {tuple(self.channels)}")


def register(task, tiny=False, encoder=None):
    """Decorator: registers `fn` under `fn.__name__` for `task`; returns `fn` unchanged.

    `tiny=True` marks the small configuration of a family that the test suite
    builds; it is a real model, just narrow and shallow. `encoder` (an
    `Encoder`, classifiers only) declares that it can be a segmenter's backbone.
    """
    if task not in TASKS:
        raise ValueError(f"Unknown task. Expected one of {TASKS}. Received: task={task!r}")
    if encoder is not None and task != "classification":
        raise ValueError(f"Only classifiers declare an encoder. Received: task={task!r}")

    def wrap(fn):
        name = fn.__name__
        if name in _REGISTRY:
            raise ValueError(f"A model named {name!r} is already registered.")
        _REGISTRY[name] = {"fn": fn, "task": task, "tiny": tiny, "encoder": encoder}
        return fn

    return wrap


def list_models(task=None, tiny=None, encoder=None):
    """Sorted names of the registered models, optionally filtered (encoder=True: the possible backbones)."""
    return sorted(
        name
        for name, entry in _REGISTRY.items()
        if (task is None or entry["task"] == task) and (tiny is None or entry["tiny"] == tiny)
        and (encoder is None or (entry["encoder"] is not None) == encoder)
    )


def model_task(name):
    return _entry(name)["task"]


def get_builder(name):
    return _entry(name)["fn"]


def builders():
    """{name: builder} of every registered model."""
    return {name: entry["fn"] for name, entry in _REGISTRY.items()}


def create_model(name, **kwargs):
    """Builds the registered model `name` with `kwargs`."""
    return get_builder(name)(**kwargs)


def encoder(name):
    """The `Encoder` record of registered classifier `name`; a ValueError if it cannot be a backbone."""
    declared = _entry(name)["encoder"]
    if declared is None:
        raise ValueError(
            f"{name!r} cannot be a segmenter's backbone (it declares no feature pyramid). "
            f"Backbones: {', '.join(list_models(encoder=True))}. Received: backbone={name!r}"
        )
    return declared


def _entry(name):
    if name not in _REGISTRY:
        close = difflib.get_close_matches(str(name), _REGISTRY, n=3, cutoff=0.5)
        hint = f" Did you mean: {', '.join(close)}?" if close else ""
        raise ValueError(
            f"Unknown model.{hint} Registered models: {', '.join(list_models())}. "
            f"Received: name={name!r}"
        )
    return _REGISTRY[name]
