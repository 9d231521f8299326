"""Quantization-aware training (QAT) for Keras 3 models: `kerasseg.qat` is its public face.

    qat = quantization_aware(model, calibration_images)   # then compile and fit, as any model
    twin, sites = export_twin(qat)                         # what export.tflite converts, and the learned ranges

How each layer is simulated is kerasseg.quantization.simulation's docstring; the registry of layer kinds
(`register` a layer of your own) is kerasseg.quantization.kinds; the rounding layers are
kerasseg.layers.quantization.
"""

from kerasseg.quantization.kinds import (ACTIVATIONS, KINDS, USER_KINDS, activation_name, keeps_scale, layer_kind,
                                         register)
from kerasseg.quantization.simulation import (QuantizationError, Site, export_twin, is_quantization_aware,
                                              quantization_aware)

__all__ = ["ACTIVATIONS", "KINDS", "USER_KINDS", "QuantizationError", "Site", "activation_name", "export_twin",
           "is_quantization_aware", "keeps_scale", "layer_kind", "quantization_aware", "register"]
