"""Quantization-aware training, above the rounding layers (kerasseg.layers.quantization: FakeQuant,
QuantizedConv, ..., keras and keras.ops only, loaded with every model file): `kinds` (how TFLite's int8 file
computes each layer class: the registry) and `simulation` (a trained model rewritten to compute what its int8
file computes, and the float twin an export converts). The public face is kerasseg.qat.
"""
