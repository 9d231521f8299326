"""The runtimes a device uses, as callables: a .tflite file in LiteRT, an .onnx file in ONNX Runtime.

Each runner takes one image of raw float pixels (H, W, 3) and returns its
float outputs, feeding a quantized input the pixels as they are, as MediaPipe
and pycoral do; `open_runner` picks the runner by the file's suffix, from
RUNNERS (a format registers its own: export.formats). The bottom layer of the
export package: it imports nothing else from it.
"""

import os
import time
from typing import Protocol

import numpy as np

from kerasseg.errors import InputError

SIGNATURE = "serving_default"  # the signature a .tflite file is run through when it has one


class Runner(Protocol):
    """What a runtime gives the check for one file, opened by `runner(path, num_threads)`: the runtime's name,
    the file's fixed input size (None: any), its quantization ("int8", "float16", "float32"...), and a call on
    one image of float pixels (H, W, 3) returning its float outputs (H, W, C)."""

    runtime: str
    input_size: tuple | None
    quantization: str

    def __call__(self, image: np.ndarray) -> np.ndarray: ...


class LiteRTRunner:
    """A .tflite file in the LiteRT interpreter; takes float pixels, returns float logits. A file with a
    serving_default signature (every file kerasseg writes) is run through it, as an app's signature runner
    runs it; a file without one by its first input and output."""

    runtime = "litert"

    def __init__(self, path, num_threads=None):
        from ai_edge_litert.interpreter import Interpreter

        try:
            self.interpreter = Interpreter(model_path=os.fspath(path), num_threads=num_threads)
            self.interpreter.allocate_tensors()
            self.signature = self.interpreter.get_signature_runner(SIGNATURE) \
                if SIGNATURE in self.interpreter.get_signature_list() else None
        except Exception as error:
            raise InputError(f"{path} is not a TFLite model LiteRT can load: {error}") from None
        if self.signature is not None:
            (self.input_name, self.input), = list(self.signature.get_input_details().items())[:1]
            (self.output_name, self.output), = list(self.signature.get_output_details().items())[:1]
        else:
            self.input = self.interpreter.get_input_details()[0]
            self.output = self.interpreter.get_output_details()[0]
        # a file converted with a dynamic height and width (TFLiteConverter.from_keras_model of a model that takes
        # any size) holds a 1x1 placeholder shape: it takes any size (None), each image's set before it runs
        dynamic = any(int(n) < 0 for n in self.input.get("shape_signature", self.input["shape"])[1:3])
        self.input_size = None if dynamic else tuple(int(s) for s in self.input["shape"][1:3])
        self.quantization = _tflite_quantization(self.interpreter, self.input)

    def __call__(self, image):
        x = self.raw_input(image)
        if self.signature is not None:
            y = self.signature(**{self.input_name: x})[self.output_name][0]
        else:  # (a signature runner sets its input's shape itself)
            if self.input_size is None and tuple(self.interpreter.get_input_details()[0]["shape"]) != x.shape:
                self.interpreter.resize_tensor_input(self.input["index"], x.shape)
                self.interpreter.allocate_tensors()
            self.interpreter.set_tensor(self.input["index"], x)
            self.interpreter.invoke()
            y = self.interpreter.get_tensor(self.output["index"])[0]
        return self.from_output(y)

    def raw_input(self, image):
        """The file's input tensor (1, H, W, 3) for float pixels `image`, of its own type."""
        x = image[None].astype(np.float32)
        if self.input["dtype"] == np.int16:  # no camera gives 16-bit values: an app quantizes with the file's scale
            scale, zero_point = self.input["quantization"]
            x = np.clip(np.round(x / scale) + zero_point, -32768, 32767)
        elif self.input["dtype"] != np.float32:
            # as a device does (MediaPipe, pycoral): the pixels as they are, shifted by -128 for an int8
            # input; no re-quantization with the file's scale, which would hide a wrong one
            x = x + np.iinfo(self.input["dtype"]).min
        return x.astype(self.input["dtype"])

    def from_output(self, y):
        """One image's output tensor as float values."""
        scale, zero_point = self.output["quantization"]
        if self.output["dtype"] != np.float32 and scale:  # (class indices carry no quantization)
            y = (y.astype(np.float32) - zero_point) * scale
        return y


def _tflite_quantization(interpreter, input_details):
    """float32 / float16 / dynamic / int8 / int16x8, read off the tensors of the file itself."""
    tensors = interpreter.get_tensor_details()
    dtypes = {t["dtype"] for t in tensors}
    if input_details["dtype"] in (np.uint8, np.int8):
        return "int8"
    if np.int16 in dtypes:
        return "int16x8"
    if np.float16 in dtypes:
        return "float16"
    if np.int8 in dtypes:
        return "dynamic"
    return "float32"


class OnnxRunner:
    """An .onnx file in ONNX Runtime (CPU)."""

    runtime = "onnxruntime"

    def __init__(self, path, num_threads=None):
        import onnxruntime as ort

        options = ort.SessionOptions()
        if num_threads:
            options.intra_op_num_threads = num_threads
        try:
            self.session = ort.InferenceSession(os.fspath(path), options, providers=["CPUExecutionProvider"])
        except Exception as error:
            raise InputError(f"{path} is not an ONNX model ONNX Runtime can load: {error}") from None
        self.input = self.session.get_inputs()[0]
        self.input_size = (tuple(self.input.shape[1:3]) if all(isinstance(s, int) for s in self.input.shape[1:3])
                           else None)
        self.quantization = "int8" if any(n.op_type == "QuantizeLinear" for n in _onnx_nodes(path)) else "float32"

    def __call__(self, image):
        return self.session.run(None, {self.input.name: image[None].astype(np.float32)})[0][0]


def _onnx_nodes(path):
    import onnx

    return onnx.load(os.fspath(path), load_external_data=False).graph.node


RUNNERS = {".tflite": LiteRTRunner, ".onnx": OnnxRunner}  # a file's suffix: the runtime a device runs it in


def register(suffix, runner):
    """Makes `runner(path, num_threads)` the runtime of files ending in `suffix` (a format's: export.formats)."""
    RUNNERS[suffix.lower()] = runner


def open_runner(path, num_threads=None):
    if not os.path.isfile(path):
        raise InputError(f"exported file not found: {path}")
    suffix = os.path.splitext(path)[1].lower()
    if suffix not in RUNNERS:
        raise InputError(f"{path}: unknown export format {suffix!r}; accepted: {', '.join(sorted(RUNNERS))}")
    return RUNNERS[suffix](path, num_threads)


def median_ms(fn, x, repeats, warmup=1):
    """Median wall time of `fn(x)` in milliseconds, after `warmup` calls (which allocate and trace)."""
    for _ in range(warmup):
        fn(x)
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        fn(x)
        times.append(time.perf_counter() - start)
    return 1000 * float(np.median(times))
