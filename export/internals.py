"""Every private TensorFlow, LiteRT and MediaPipe API the exporters use, and nothing else: the one place to look
when a release breaks one.

- The .tflite flatbuffer as an object to read and edit (`read_tflite`, `edit_tflite`): TensorFlow's
  `tensorflow.lite.tools.flatbuffer_utils` and `tensorflow.lite.python.schema_py_generated`; LiteRT's
  Python package has no flatbuffer writer. Every read-edit-write of a file goes through `edit_tflite`.
- TFLite's calibrate-then-quantize path (`calibrated`, `quantized`): `TFLiteConverter.
  _experimental_calibrate_only` and `tensorflow.lite.python.convert.mlir_quantize`, the path TFLite's own
  QuantizationDebugger takes. Between the two, export.ranges edits the recorded ranges (learned QAT
  ranges, percentiles, the pixel input pinned to [0, 255]); the public converter gives no such step.
- Whether TensorFlow runs oneDNN's CPU kernels (`onednn_kernels`): `_pywrap_util_port.IsMklEnabled`, no
  public call says it (kerasseg turns them on where TensorFlow would not: kerasseg's docstring).
- MediaPipe's metadata writers (`mediapipe_metadata_writers`): MediaPipe 1.x wheels lack the compiled
  module they import for one function, planted here.

Checked on TensorFlow 2.21.0, ai-edge-litert 2.3.0 and mediapipe 1.2.3. tests/test_layout.py fails if a
private name appears in any other module (kerasseg.internals holds Keras').
"""

import sys


def tflite_schema():
    """The generated Python module of the TFLite flatbuffer schema (BuiltinOperator, TensorType, Padding...)."""
    from tensorflow.lite.python import schema_py_generated

    return schema_py_generated


def read_tflite(content):
    """The .tflite bytes `content` as a mutable flatbuffer object (ModelT: subgraphs, tensors, operators,
    buffers, operatorCodes)."""
    from tensorflow.lite.tools import flatbuffer_utils

    return flatbuffer_utils.convert_bytearray_to_object(bytearray(content))


def write_tflite(model):
    """The .tflite bytes of a flatbuffer object `read_tflite` gave (after editing it)."""
    from tensorflow.lite.tools import flatbuffer_utils

    return bytes(flatbuffer_utils.convert_object_to_bytearray(model))


def edit_tflite(content, edit):
    """(the .tflite bytes `content` after `edit(model)` changed its flatbuffer object, what `edit` returned):
    every read-edit-write of a file.

    A file whose constants lie after the flatbuffer (Buffer.offset: ai-edge-quantizer writes them so once
    they pass 256 kB) keeps them: the flatbuffer is written again, the data after it moved to the next
    16-byte boundary past its new end, and every offset moved by as much (flatbuffer_utils writes the
    offsets as they were read, which would point into the new flatbuffer)."""
    model = read_tflite(content)
    result = edit(model)
    stored = [buffer for buffer in model.buffers if getattr(buffer, "offset", 0)]
    if not stored:
        return write_tflite(model), result
    start = min(buffer.offset for buffer in stored)  # (where the data after the flatbuffer begins)
    moved = -(-len(write_tflite(model)) // 16) * 16
    for buffer in stored:
        buffer.offset += moved - start
    flatbuffer = write_tflite(model)
    return flatbuffer + bytes(moved - len(flatbuffer)) + bytes(content[start:]), result


def calibrated(converter):
    """The float .tflite of a TFLiteConverter set up for int8 (a representative dataset), calibrated but not
    yet quantized: each activation tensor records its range (min, max), to be edited before `quantized`."""
    converter._experimental_calibrate_only = True
    return converter.convert()


def quantized(calibrated_content, input_type, output_type):
    """The int8 .tflite of a calibrated file (`calibrated`), its input and output of `input_type` and
    `output_type` (tf.uint8, tf.int8 or tf.float32), at the ranges the file records."""
    from tensorflow.lite.python import convert

    return convert.mlir_quantize(calibrated_content, input_data_type=input_type, output_data_type=output_type)


def onednn_kernels():
    """Whether TensorFlow, imported in this process, runs oneDNN's CPU kernels (decided as it was imported)."""
    from tensorflow.python.util import _pywrap_util_port

    return bool(_pywrap_util_port.IsMklEnabled())


def mediapipe_metadata_writers():
    """(image_segmenter, metadata_writer): MediaPipe's metadata writer modules.

    MediaPipe 1.x wheels ship the Python metadata populator without the compiled `_pywrap_metadata_version`
    module it imports for one thing: the minimum metadata-parser version to record. Until the wheel has it
    again a module is planted in `sys.modules` that records version 1.5.0 (the schema version that added
    the custom metadata the segmenter writer uses; every current parser reads it).
    """
    import types

    name = "mediapipe.tasks.cc.metadata.python._pywrap_metadata_version"
    if name not in sys.modules:
        try:
            __import__(name)
        except ImportError:
            stub = types.ModuleType(name)
            stub.GetMinimumMetadataParserVersion = lambda metadata_buffer: "1.5.0"
            parent = ""
            for part in name.split(".")[:-1]:
                parent = f"{parent}.{part}" if parent else part
                sys.modules.setdefault(parent, types.ModuleType(parent))
            sys.modules[name] = stub
            setattr(sys.modules[name.rsplit(".", 1)[0]], name.rsplit(".", 1)[1], stub)
    from mediapipe.tasks.python.metadata.metadata_writers import image_segmenter, metadata_writer

    return image_segmenter, metadata_writer
