"""Google's ai-edge-quantizer on kerasseg's own float32 .tflite: the post-training quantizer LiteRT maintains.

`quantize(float_content, calibration_images, ...)` applies one of its static recipes to a float file that
export.tflite wrote (it reads the file's serving_default signature): `static_wi8_ai8` (int8 weights per
channel, int8 activations) or `static_wi8_ai16` (int16 activations), the convolutions' weights quantized by
one of its algorithms (`min_max`, `mse`, `octav`; the others it registers for convolutions reject them in
0.10.0 or leave the graph in float), its activation ranges calibrated its own way (a moving average of each
image's min and max: the first image weighs most) or as TFLite's converter does (the global min and max).

So that the file is one we would ship, the input's range is pinned to [0, 255] (a uint8 input of scale 1.0
and zero point 0: camera pixels exactly, as export.tflite's) and, with `io="uint8"`, the output is uint8
too (ai-edge-quantizer's own files take and give int8). Under int16 activations LiteRT 2.3 refuses the
model's input normalization's ADD ("input1_shift <= 0"), so that op stays float there.

benchmarks/quantization.py compares these files with export.tflite's on the same calibration and held-out
images, checked by the same agreement check (benchmarks/RESULTS.md).
"""

import contextlib
import warnings
from io import StringIO

import numpy as np

from kerasseg.errors import InputError

RECIPES = ("static_wi8_ai8", "static_wi8_ai16")
ALGORITHMS = ("min_max", "mse", "octav")  # for CONV_2D and DEPTHWISE_CONV_2D weights
CALIBRATIONS = ("moving-average", "minmax")
SIGNATURE = "serving_default"


def _modules():
    try:
        import ai_edge_quantizer
        from ai_edge_quantizer import algorithm_manager, calibrator, qtyping, recipe, recipe_manager
    except ImportError:
        raise InputError("ai-edge-quantizer is not installed: pip install 'ai-edge-quantizer>=0.10,<0.11'") from None
    return ai_edge_quantizer, algorithm_manager, calibrator, qtyping, recipe, recipe_manager


def _global_min_max(old, new):
    """A tensor's range over every calibration image, as TFLite's converter calibrates."""
    if not old:
        return new
    return {"min": np.minimum(old["min"], new["min"]), "max": np.maximum(old["max"], new["max"])}


def quantize(float_content, calibration_images, recipe="static_wi8_ai8", algorithm="min_max",
             calibration="moving-average", io="uint8", num_threads=2):
    """The quantized .tflite bytes of `float_content` (a float32 file with a serving_default signature whose
    one input takes raw pixels), calibrated on `calibration_images` ((N, H, W, 3) pixels)."""
    aeq, algorithms, _, qtyping, recipes, _ = _modules()
    for name, value, accepted in (("recipe", recipe, RECIPES), ("algorithm", algorithm, ALGORITHMS),
                                  ("calibration", calibration, CALIBRATIONS), ("io", io, ("uint8", "int8"))):
        if value not in accepted:
            raise InputError(f"{name} must be one of {', '.join(accepted)}; received {value!r}")
    from ai_edge_litert.interpreter import Interpreter

    interpreter = Interpreter(model_content=bytes(float_content))
    signature = interpreter.get_signature_list().get(SIGNATURE)
    if signature is None or len(signature["inputs"]) != 1:
        raise InputError("ai-edge-quantizer reads a file's serving_default signature, with one input: this file "
                         "has none (export it with export.tflite --quantize float32)")
    operations = qtyping.TFLOperationName
    quantizer = aeq.Quantizer(bytes(float_content), getattr(recipes, recipe)())
    key = {"min_max": algorithms.AlgorithmName.MIN_MAX_UNIFORM_QUANT, "mse": algorithms.AlgorithmName.MSE,
           "octav": algorithms.AlgorithmName.OCTAV}[algorithm]
    bits = 16 if recipe == "static_wi8_ai16" else 8
    if algorithm != "min_max":  # (the convolutions' weights; everything else as the recipe has it)
        for op in (operations.CONV_2D, operations.DEPTHWISE_CONV_2D):
            quantizer.add_static_config(".*", op, bits, 8, algorithm_key=key)
    if bits == 16:  # LiteRT 2.3 cannot run the input normalization's ADD on int16 (input1_shift <= 0)
        quantizer.update_quantization_recipe(regex=".*normaliz.*", operation_name=operations.ADD,
                                             algorithm_key=algorithms.AlgorithmName.NO_QUANTIZE)
    if io == "uint8" and bits == 8:  # (the INPUT / OUTPUT configuration its policy allows: uint8 there)
        uint8 = qtyping.OpQuantizationConfig(
            activation_tensor_config=qtyping.TensorQuantizationConfig(8, symmetric=False,
                                                                      dtype=qtyping.TensorDataType.UINT),
            compute_precision=qtyping.ComputePrecision.INTEGER)
        for op in (operations.INPUT, operations.OUTPUT):
            quantizer.update_quantization_recipe(regex=".*", operation_name=op, op_config=uint8)
    data = {SIGNATURE: [{signature["inputs"][0]: np.asarray(image, np.float32)[None]}
                        for image in calibration_images]}
    name = interpreter.get_signature_runner(SIGNATURE).get_input_details()[signature["inputs"][0]]["name"]
    print(f"ai-edge-quantizer: {recipe} ({algorithm}), calibrating on {len(data[SIGNATURE])} images "
          f"({calibration}) ...", flush=True)
    # (its own progress bars, one step per op and image, thousands of lines where stderr is not a terminal)
    with warnings.catch_warnings(), contextlib.redirect_stderr(StringIO()):
        warnings.filterwarnings("ignore", message=".*experimental_preserve_all_tensors.*")
        ranges = _calibrated(quantizer, float_content, data, calibration, recipe, num_threads)
        shape = np.shape(ranges[name]["min"])  # the pixels' range: all of [0, 255], whatever the images span
        ranges[name] = {"min": np.zeros(shape, np.float32), "max": np.full(shape, 255, np.float32)}
        return bytes(quantizer.quantize(ranges, enable_progress_bar=False,
                                        enable_progress_report=False).quantized_model)


def _calibrated(quantizer, float_content, data, calibration, recipe, num_threads):
    """{tensor name: its range} over the calibration `data`, by ai-edge-quantizer's moving average or, with
    "minmax", by the global min and max."""
    _, _, calibrator, _, recipes, recipe_manager = _modules()
    if calibration == "minmax":
        manager = recipe_manager.RecipeManager()  # (which tensors to record: the recipe's, whatever their types)
        manager.load_quantization_recipe(getattr(recipes, recipe)())
        calibrating = calibrator.Calibrator(bytes(float_content), num_threads=num_threads,
                                            qsv_update_func=_global_min_max)
        calibrating.calibrate(data, manager)
        return calibrating.get_model_qsvs()
    return quantizer.calibrate(data, num_threads=num_threads)
