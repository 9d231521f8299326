"""Export Keras 3 segmenters (kerasseg's or any) for devices, and measure what the export changed.

    python -m export.tflite MODEL.keras --quantize {float32,float16,dynamic,int8,int16x8} --output FILE.tflite
    python -m export.onnx   MODEL.keras --output FILE.onnx
    python -m export.android MODEL.keras --output DIR
    python -m export.agreement MODEL.keras EXPORTED_FILE

Each export is run in its real runtime (LiteRT, ONNX Runtime) on held-out
samples and compared with the Keras model; FILE.report.json holds the numbers.

From Python, on a model in memory and your own images (see the README, "From Python"):

    report = export.tflite.export(model, "seg.tflite", quantize="int8", calibration=images,
                                  validation=(images, masks))

The modules import one way: `runtimes` (run a file) -> `report` (compare,
thresholds, the typed report) -> `values` (the data as the user has it) ->
`pipeline` (convert, check, write) -> one module per format (`tflite`, `onnx`,
`edgetpu`, `android`). `commands` is the command lines' wiring: their shared
options, and a run directory's record resolved into values; only it and the
commands' `main` functions read a run directory. `ranges` (a calibrated TFLite
model's activation ranges, edited before quantizing) imports none of them;
`tflite` uses it.
"""

import kerasseg  # noqa: F401 (before TensorFlow: its CPU settings, see kerasseg's docstring)
