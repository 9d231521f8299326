"""kerasseg: landmark CNN classifiers and semantic segmenters as Keras 3 functional builders.

`import kerasseg` registers kerasseg's custom layers and losses with Keras,
so a saved `model.keras` (a training run's, compiled with its loss) loads
with plain `keras.saving.load_model`.
"""

from kerasseg import layers, losses  # noqa: F401  (registers the serializable layers and losses)
from kerasseg.described import Description, DescribedModel, describe, description  # noqa: F401

__version__ = "0.1.0"
