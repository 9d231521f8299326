"""Registered model builders: `kerasseg.models.<name>()` builds one.

Importing this package imports every family module, which registers its
builders with `kerasseg.models.registry`.
"""

from kerasseg.models.registry import create_model, get_builder, list_models, model_task, register
from kerasseg.models.unet import unet, unet_edge, unet_tiny

__all__ = [
    "create_model",
    "get_builder",
    "list_models",
    "model_task",
    "register",
    "unet",
    "unet_edge",
    "unet_tiny",
]
