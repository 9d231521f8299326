"""The accepted values of settings, and the numbers behind them, that command lines show before they import
Keras: one home for each (a leaf module, importing nothing)."""

QAT_CALIBRATIONS = ("minmax", "percentile")  # where kerasseg.qat's activation ranges start
PERCENTILE = 99.99  # "percentile" calibration: each range from its values' 0.01th to 99.99th percentile
CACHES = ("auto", "none", "memory")  # the dataset cache (or a directory): kerasseg.data.pipeline.open_cache
# the training augmentation ("full") scales each image to a random factor in SCALE_RANGE times the scale at
# which it just covers the crop; inference ("cover") runs each image at every quarter step of it and averages
# (kerasseg.geometry)
SCALE_RANGE = (0.75, 1.5)
TEST_SCALES = (0.75, 1.0, 1.25, 1.5)
