"""Registered model builders: `kerasseg.models.<name>()` builds one.

Importing this package imports every family module, which registers its
builders with `kerasseg.models.registry`.
"""

from kerasseg.models.registry import create_model, get_builder, list_models, model_task, register
from kerasseg.models.deeplab import (
    deeplab_v1,
    deeplab_v1_tiny,
    deeplab_v2,
    deeplab_v2_tiny,
    deeplab_v3,
    deeplab_v3_plus,
    deeplab_v3_plus_tiny,
    deeplab_v3_tiny,
)
from kerasseg.models.densenet import densenet, densenet121, densenet169, densenet201, densenet_tiny
from kerasseg.models.efficientnet import (
    efficientnet,
    efficientnet_b0,
    efficientnet_b1,
    efficientnet_b2,
    efficientnet_b3,
    efficientnet_b4,
    efficientnet_b5,
    efficientnet_b6,
    efficientnet_b7,
    efficientnet_tiny,
)
from kerasseg.models.fcn import convolutionalize, fcn, fcn8s, fcn8s_tiny, fcn16s, fcn32s
from kerasseg.models.googlenet import AUX_LOSS_WEIGHTS, googlenet, googlenet_inference, googlenet_tiny
from kerasseg.models.hypercolumns import hypercolumns, hypercolumns_tiny
from kerasseg.models.mobilenet import mobilenet_v2, mobilenet_v2_tiny
from kerasseg.models.resnet import (
    resnet,
    resnet18,
    resnet34,
    resnet50,
    resnet101,
    resnet152,
    resnet_cifar,
    resnet_tiny,
    se_resnet50,
    se_resnet101,
    se_resnet152,
    se_resnet_tiny,
)
from kerasseg.models.unet import unet, unet_backbone_tiny, unet_edge, unet_tiny
from kerasseg.models.vgg import vgg, vgg16, vgg19, vgg_tiny

__all__ = [
    "AUX_LOSS_WEIGHTS",
    "convolutionalize",
    "create_model",
    "deeplab_v1",
    "deeplab_v1_tiny",
    "deeplab_v2",
    "deeplab_v2_tiny",
    "deeplab_v3",
    "deeplab_v3_plus",
    "deeplab_v3_plus_tiny",
    "deeplab_v3_tiny",
    "densenet",
    "densenet121",
    "densenet169",
    "densenet201",
    "densenet_tiny",
    "efficientnet",
    "efficientnet_b0",
    "efficientnet_b1",
    "efficientnet_b2",
    "efficientnet_b3",
    "efficientnet_b4",
    "efficientnet_b5",
    "efficientnet_b6",
    "efficientnet_b7",
    "efficientnet_tiny",
    "fcn",
    "fcn8s",
    "fcn8s_tiny",
    "fcn16s",
    "fcn32s",
    "get_builder",
    "googlenet",
    "googlenet_inference",
    "googlenet_tiny",
    "hypercolumns",
    "hypercolumns_tiny",
    "list_models",
    "mobilenet_v2",
    "mobilenet_v2_tiny",
    "model_task",
    "register",
    "resnet",
    "resnet18",
    "resnet34",
    "resnet50",
    "resnet101",
    "resnet152",
    "resnet_cifar",
    "resnet_tiny",
    "se_resnet50",
    "se_resnet101",
    "se_resnet152",
    "se_resnet_tiny",
    "unet",
    "unet_backbone_tiny",
    "unet_edge",
    "unet_tiny",
    "vgg",
    "vgg16",
    "vgg19",
    "vgg_tiny",
]
