"""Models that describe themselves: class names, training image size and input convention in model.keras.

A segmenter's file is copied away from its run directory, mailed, put in a
model zoo. What an exporter or an app needs to use it must travel with it:
which class each output channel is, the size it was trained at (the size to
export a model that accepts any size at), and the values it takes. `describe`
returns the model as a `DescribedModel`, a functional model over the same
layers whose config carries the three, so `model.save` writes them into the
.keras file and `keras.saving.load_model` (after `import kerasseg`) gives
them back:

    model = kerasseg.describe(model, class_names=["background", "person"], image_size=(256, 256))
    model.save("seg.keras")
    keras.saving.load_model("seg.keras").class_names   # ('background', 'person')

kerasseg.train describes every model it saves; the exporters, evaluate and
predict read the description of any model (`description(model)`), so a
model.keras exported far from its run keeps its labels and size.
"""

from dataclasses import dataclass

import keras

from kerasseg.errors import InputError
from kerasseg.labels import mask_classes

PIXELS = (0.0, 255.0)  # every kerasseg model: raw RGB in [0, 255], its normalization inside it


@dataclass(frozen=True)
class Description:
    """What a model says about itself; a field it does not say is None."""

    class_names: tuple = None
    image_size: tuple = None  # (height, width) it was trained at
    input_range: tuple = PIXELS  # (low, high) of the RGB values it takes
    resize: str = None  # how training brought images to image_size: "cover" (aspect kept) or "stretch"


@keras.saving.register_keras_serializable("kerasseg")
class DescribedModel(keras.Model):
    """A functional model carrying a Description (see the module docstring); build one with `describe`."""

    _FIELDS = ("class_names", "image_size", "input_range", "resize")

    # (*args, **kwargs): Keras serializes a Functional subclass as a graph only when its constructor takes them
    def __init__(self, *args, class_names=None, image_size=None, input_range=PIXELS, resize=None, **kwargs):
        super().__init__(*args, **kwargs)
        self._carry(class_names, image_size, input_range, resize)

    def _carry(self, class_names=None, image_size=None, input_range=PIXELS, resize=None):
        self.class_names = None if class_names is None else tuple(str(n) for n in class_names)
        self.image_size = None if image_size is None else tuple(int(n) for n in image_size)
        self.input_range = tuple(float(v) for v in input_range)
        self.resize = resize

    def get_config(self):
        description = {"class_names": self.class_names, "image_size": self.image_size,
                       "input_range": self.input_range}
        return {**super().get_config(), **{k: None if v is None else list(v) for k, v in description.items()},
                "resize": self.resize}

    @classmethod
    def from_config(cls, config, custom_objects=None):
        config = dict(config)
        fields = {k: config.pop(k) for k in cls._FIELDS if config.get(k) is not None}
        model = super().from_config(config, custom_objects)
        model._carry(**fields)
        return model


def checked_class_names(names, classes=None, owner="the model"):
    """`names` as a tuple of strings, or an InputError: one non-empty name per class (`classes`: the output's
    channel count, when known), distinct, none holding a line break (labels.txt and the file's metadata are
    one name per line)."""
    if isinstance(names, (str, bytes)) or not hasattr(names, "__iter__"):
        raise InputError(f"class names must be a list of strings, one per class; received {names!r}")
    names = tuple(str(n) for n in names)
    bad = next((n for n in names if not n.strip() or "\n" in n or "\r" in n), None)
    if bad is not None:
        raise InputError(f"class name {bad!r} is empty or holds a line break; each name is one line of labels.txt")
    if len(set(names)) != len(names):
        raise InputError(f"class names must differ from each other; received {list(names)}")
    if classes is not None and len(names) != mask_classes(classes):
        expected = "two names, background's and the foreground's, for its one channel (a binary segmenter)" \
            if classes == 1 else "one per class"
        raise InputError(f"{len(names)} class names ({', '.join(names)}) for {owner}, whose output has {classes} "
                         f"channel{'s' if classes > 1 else ''}: {expected}")
    return names


def output_kind(model):
    """"probabilities" when `model` ends in a softmax or a sigmoid, else "logits" (per-pixel scores); an
    InputError for a softmax over one channel, which is 1 everywhere and decides nothing."""
    from kerasseg.internals import producer

    last = producer(model.outputs[0])
    while getattr(last, "outputs", None):  # a nested functional model: its last layer
        last = producer(last.outputs[0])
    activation = getattr(getattr(last, "activation", None), "__name__", "")
    softmax = type(last).__name__ == "Softmax" or activation == "softmax"
    if softmax and model.outputs[0].shape[-1] == 1:
        raise InputError(f"{model.name} ends in a softmax over one channel, which is 1 at every pixel: no class "
                         "can be read from it; end a binary segmenter in its logit (or a sigmoid)")
    return "probabilities" if softmax or activation == "sigmoid" else "logits"


def description(model):
    """The Description `model` carries (all None, pixels in, for a model that carries none)."""
    if not isinstance(model, DescribedModel):
        return Description()
    return Description(model.class_names, model.image_size, model.input_range, model.resize)


def working_size(model, requested=None, otherwise=None):
    """The (height, width) to run, export or score `model` at, by the one rule every stage uses: `requested`
    (N or (height, width); an InputError if it is not one, or differs from a fixed input size); else the
    model's fixed input size; else the training size it carries; else `otherwise` (a run's record, the size
    the images given share); else None."""
    import numpy as np

    height, width = model.inputs[0].shape[1:3]
    if requested:
        try:
            requested = (requested,) * 2 if np.ndim(requested) == 0 else tuple(requested)
            if len(requested) != 2 or any(int(n) != n or n < 1 for n in requested):
                raise ValueError
        except (TypeError, ValueError):
            raise InputError(f"image_size must be N or (height, width) of positive integers; received "
                             f"{requested!r}") from None
        requested = tuple(int(n) for n in requested)
        if height and width and requested != (height, width):
            raise InputError(f"{model.name} takes {height}x{width} images only; received image_size={requested} "
                             "(leave image_size out to work at its own size)")
        return requested
    if height and width:
        return (height, width)
    return description(model).image_size or (tuple(otherwise) if otherwise else None)


def describe(model, class_names=None, image_size=None, input_range=None, resize=None):
    """`model` (functional, one input and one output) as a DescribedModel over the same layers and weights,
    carrying `class_names` (one per output channel; two for a binary segmenter's one), `image_size` ((height,
    width), or N), `input_range` ((low, high) of the RGB values it takes; default: raw pixels, 0-255) and
    `resize` (how training brought its images to image_size: "cover", aspect kept, or "stretch";
    kerasseg.inference). A field not given keeps what `model` already carries."""
    if not getattr(model, "inputs", None) or len(model.inputs) != 1 or len(model.outputs) != 1:
        raise InputError(f"{model.name}: only a functional model with one input and one output can carry a "
                         "description")
    old = description(model)
    if class_names is not None:
        class_names = checked_class_names(class_names, model.outputs[0].shape[-1], model.name)
    if image_size is not None:
        image_size = (int(image_size),) * 2 if isinstance(image_size, int) else tuple(int(n) for n in image_size)
        if len(image_size) != 2 or min(image_size) < 1:
            raise InputError(f"image_size must be (height, width) of positive integers; received {image_size}")
    input_range = old.input_range if input_range is None else tuple(float(v) for v in input_range)
    if resize not in (None, "cover", "stretch"):
        raise InputError(f"resize must be 'cover' (aspect kept) or 'stretch'; received {resize!r}")
    if len(input_range) != 2 or not input_range[0] < input_range[1]:
        raise InputError(f"input_range must be (low, high) with low < high; received {input_range}")
    return DescribedModel(model.inputs[0], model.outputs[0], name=model.name,
                          class_names=class_names or old.class_names,
                          image_size=old.image_size if image_size is None else image_size, input_range=input_range,
                          resize=resize or old.resize)
