"""kerasseg: landmark CNN classifiers and semantic segmenters as Keras 3 functional builders.

`import kerasseg` registers kerasseg's custom layers with Keras, so a saved
`model.keras` loads with plain `keras.saving.load_model`.
"""

from kerasseg import layers  # noqa: F401  (registers the serializable layers)

__version__ = "0.1.0"
