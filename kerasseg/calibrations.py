"""How int8 activation ranges are calibrated: the names and numbers that command lines show before they import
Keras (a leaf module)."""

QAT_CALIBRATIONS = ("minmax", "percentile")  # where kerasseg.qat's activation ranges start
PERCENTILE = 99.99  # "percentile" calibration: each range from its values' 0.01th to 99.99th percentile
