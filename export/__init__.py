"""Export trained kerasseg segmenters for devices, and measure what the export changed.

    python -m export.tflite MODEL.keras --quantize {float32,float16,dynamic,int8} --output FILE.tflite
    python -m export.onnx   MODEL.keras --output FILE.onnx
    python -m export.agreement MODEL.keras EXPORTED_FILE

Each export is run in its real runtime (LiteRT, ONNX Runtime) on held-out
samples and compared with the Keras model; FILE.report.json holds the numbers.
"""
