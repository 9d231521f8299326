"""How the tensors of a converted .tflite file name the Keras layers whose ops wrote them.

TFLite names a tensor after the TensorFlow ops it fused (`MODEL/LAYER/op`, ";"-joined), so a tensor names
its layers, as long as no two layers' scopes can be confused: `unambiguous_names` tags every layer for the
conversion, `untagged` takes the tags out of the file again. export.ranges places learned ranges by these
names, export.per_tensor keeps layers in float by them.
"""

import contextlib
import re

from kerasseg import cli, internals

tf_internals = cli.lazy_import("export.internals")  # (the .tflite flatbuffer as an object)


@contextlib.contextmanager
def unambiguous_names(model):
    """`model`'s layers renamed, for as long as the context lasts, so that a tensor's name in the converted
    file names its layer unambiguously; yields {old name: new name} (empty for `model` None).

    TensorFlow makes a name scope entered again unique by adding _N: the second trace of a layer `c`
    writes ops under `c_1`, which may be another layer's own name (the model's `c_1`, itself then `c_1_2`).
    Ending every name in a tag of its own (`c__l0`) leaves no name that another one plus _N can spell."""
    layers = _layers(model)
    old = [layer.name for layer in layers]
    try:
        for index, layer in enumerate(layers):
            layer.name = _tag(layer.name, index)
        yield {name: layer.name for name, layer in zip(old, layers)}
    finally:
        for name, layer in zip(old, layers):
            layer.name = name


def tagged_names(model):
    """{layer name: the name `unambiguous_names` gives it}: the same on every call, so files converted one
    after another name a layer alike."""
    return {layer.name: _tag(layer.name, index) for index, layer in enumerate(_layers(model))}


def _layers(model):
    return [] if model is None else internals.all_layers(model, include_self=False)


def _tag(name, index):
    return f"{name}__l{index}"


def untagged(content):
    """A tensor name (str), or every tensor name of the .tflite bytes `content`, without the tags
    `unambiguous_names` added: the file names its tensors after the model's own layers."""
    if isinstance(content, str):
        return re.sub(r"__l\d+", "", content)

    def untag(model):
        for graph in model.subgraphs:
            for tensor in graph.tensors:
                tensor.name = re.sub(rb"__l\d+", b"", tensor.name)

    return tf_internals.edit_tflite(content, untag)[0]


def layer_names(name, model_name, layers):
    """The Keras layers whose ops TFLite fused into the op writing a tensor of this `name`: its ";"-joined
    parts are the TensorFlow op names, `MODEL/LAYER/op` (TensorFlow adds _N to a repeated scope name)."""
    found = set()
    for part in name.split(";"):
        scopes = part.split("/")
        if len(scopes) > 2 and re.fullmatch(rf"{re.escape(model_name)}(_\d+)?", scopes[0]):
            found.update(layer for layer in layers if re.fullmatch(rf"{re.escape(layer)}(_\d+)?", scopes[1]))
    return found


def output_layer(tensor, op, owners):
    """The twin layer whose output is the file's output tensor that `op` writes (the twin's output `tensor`):
    the twin's last layer, unless that and the layers before it keep their input's scale (a crop to the
    same size, a reshape: the converter may drop them) and `op` reads no tensor of the layer before it nor
    of the layer itself (one of several ops: the Edge TPU resize's convolutions, concatenations, reshapes)."""
    from kerasseg.qat import keeps_scale

    chain = []
    while True:
        layer = internals.producer(tensor)
        chain.append(layer.name)
        inputs = internals.call_inputs(tensor)
        if not keeps_scale(layer) or not inputs:
            break
        tensor = inputs[0]
    for layer, before in zip(chain, chain[1:]):
        if any(owners.get(i, set()) & {layer, before} for i in op.inputs):
            return layer
    return chain[-1]
