"""The accepted values of settings, and the numbers behind them, that command lines show before they import
Keras: one home for each (a leaf module, importing nothing)."""

QAT_CALIBRATIONS = ("minmax", "percentile")  # where kerasseg.qat's activation ranges start
PERCENTILE = 99.99  # "percentile" calibration: each range from its values' 0.01th to 99.99th percentile
CACHES = ("auto", "none", "memory")  # the dataset cache (or a directory): kerasseg.data.pipeline.open_cache
