"""One registry for every public builder.

Builders are plain functions registered once under their own name; tests,
benchmarks and the CLIs iterate the registry instead of keeping their own lists.
"""

import difflib

_REGISTRY = {}
TASKS = ("classification", "segmentation")


def register(task, tiny=False):
    """Decorator: registers `fn` under `fn.__name__` for `task`.

    `tiny=True` marks the small configuration of a family that the test suite
    builds; it is a real model, just narrow and shallow.
    """
    if task not in TASKS:
        raise ValueError(f"Unknown task. Expected one of {TASKS}. Received: task={task!r}")

    def wrap(fn):
        name = fn.__name__
        if name in _REGISTRY:
            raise ValueError(f"A model named {name!r} is already registered.")
        _REGISTRY[name] = {"fn": fn, "task": task, "tiny": tiny}
        return fn

    return wrap


def list_models(task=None, tiny=None):
    """Sorted names of the registered models, optionally filtered."""
    return sorted(
        name
        for name, entry in _REGISTRY.items()
        if (task is None or entry["task"] == task) and (tiny is None or entry["tiny"] == tiny)
    )


def model_task(name):
    return _entry(name)["task"]


def get_builder(name):
    return _entry(name)["fn"]


def create_model(name, **kwargs):
    """Builds the registered model `name` with `kwargs`."""
    return get_builder(name)(**kwargs)


def _entry(name):
    if name not in _REGISTRY:
        close = difflib.get_close_matches(str(name), _REGISTRY, n=3, cutoff=0.5)
        hint = f" Did you mean: {', '.join(close)}?" if close else ""
        raise ValueError(
            f"Unknown model.{hint} Registered models: {', '.join(list_models())}. "
            f"Received: name={name!r}"
        )
    return _REGISTRY[name]
