"""kerasseg: landmark CNN classifiers and semantic segmenters as Keras 3 functional builders."""

__version__ = "0.1.0"
