"""Registered model builders: `kerasseg.models.<name>()` builds one.

Importing this package imports every module of `classifiers/` and
`segmenters/`, whose builders register themselves with
`kerasseg.models.registry`; every registered name, and whatever else a
module lists in its `__all__` (family builders, helpers), is exported here.
A new family is one new file in one of the two folders, with no edit
anywhere else.
"""

import importlib
import pkgutil

from kerasseg.models import classifiers, segmenters
from kerasseg.models.registry import Encoder, create_model, get_builder, list_models, model_task, register


def _import_families():
    """{name: object} that the family modules export: their registered builders and their `__all__`."""
    from kerasseg.models.registry import builders

    exported = {}
    for package in (classifiers, segmenters):
        for info in pkgutil.iter_modules(package.__path__):
            if not info.name.startswith("_"):
                module = importlib.import_module(f"{package.__name__}.{info.name}")
                exported.update({name: getattr(module, name) for name in getattr(module, "__all__", ())})
    return {**exported, **builders()}


_FAMILIES = _import_families()
globals().update(_FAMILIES)
__all__ = ["Encoder", "create_model", "get_builder", "list_models", "model_task", "register"]
__all__ += sorted(_FAMILIES)
