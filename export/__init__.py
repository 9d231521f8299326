"""Export trained kerasseg segmenters for devices, and measure what the export changed.

    python -m export.tflite MODEL.keras --quantize {float32,float16,dynamic,int8,int16x8} --output FILE.tflite
    python -m export.onnx   MODEL.keras --output FILE.onnx
    python -m export.android MODEL.keras --output DIR
    python -m export.agreement MODEL.keras EXPORTED_FILE

Each export is run in its real runtime (LiteRT, ONNX Runtime) on held-out
samples and compared with the Keras model; FILE.report.json holds the numbers.

The modules import one way: `runtimes` (run a file) -> `report` (compare,
thresholds, the report) -> `pipeline` (load the model and the run's data,
convert, check, write; the options every exporter shares) -> one module per
format (`tflite`, `onnx`, `edgetpu`, `android`) and the `agreement` and
`summary` commands. `ranges` (a calibrated TFLite model's activation ranges,
edited before quantizing) imports none of them; `tflite` uses it.
"""
