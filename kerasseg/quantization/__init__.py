"""TFLite's int8 arithmetic in Keras, from the ground up: `layers` (the rounding layers: FakeQuant,
QuantizedConv, ...; keras and keras.ops only), `kinds` (how the file computes each layer class: the registry)
and `simulation` (a trained model rewritten to compute what its int8 file computes, and the float twin an
export converts). The public face is kerasseg.qat; this package imports nothing itself, so that
kerasseg.layers can load the rounding layers without the simulation above them.
"""
