"""What every classifier family shares: keras.applications' arguments, the top,
the feature pyramid and pretrained weights; and the segmenters' encoder.

The contract of a classifier family (one file in `classifiers/`):
- its builders take keras.applications' arguments (include_top, weights,
  input_tensor, input_shape, pooling, classes, classifier_activation), plus
  `features_only` and `output_stride` when it can be an encoder;
- it builds its stem and stages, collecting the last feature map of each
  stride level in a `Pyramid` ({"P1": ..., "P5": ...}, Pn at stride 2**n, or
  at the output stride when the last stages are dilated), and hands both to
  `finish()`, which makes the classifier or the pyramid model;
- it registers each builder with the `registry.Encoder` it offers (pyramid
  channels, output strides, edge variant, multi-grid, published weights),
  which `encoder_pyramid` checks before it builds anything.
"""

import os
from dataclasses import dataclass

import keras
from keras import layers

from kerasseg.layers import image_input

POOLING = (None, "avg", "max")
OUTPUT_STRIDES = (8, 16, 32)


@dataclass(frozen=True)
class PretrainedWeights:
    """Where keras.applications publishes a model's ImageNet weights (same files, same cache)."""

    base_url: str
    top_file: str
    top_hash: str  # None where keras.applications publishes no hash
    notop_file: str
    notop_hash: str


def classifier_input(input_shape, input_tensor, weights, min_size):
    """The image input, after the argument checks keras.applications users expect."""
    if not (weights is None or weights == "imagenet" or (isinstance(weights, (str, os.PathLike))
                                                         and os.path.exists(weights))):
        raise ValueError(
            "weights must be None (random initialisation), 'imagenet', or the path to an existing "
            f"weights file. Received: weights={weights!r}"
        )
    inputs = image_input(input_shape, input_tensor)
    if weights == "imagenet" and inputs.shape[-1] != 3:
        raise ValueError(
            "ImageNet weights need 3 input channels (RGB). "
            f"Received: input_shape={tuple(inputs.shape[1:])}"
        )
    small = [s for s in inputs.shape[1:3] if s is not None and s < min_size]
    if small:
        raise ValueError(
            f"Input height and width must be at least {min_size} for this model. "
            f"Received: input_shape={tuple(inputs.shape[1:])}"
        )
    return inputs


def check_classifier_args(weights, include_top, classes, pooling, output_stride=32):
    if weights == "imagenet" and include_top and classes != 1000:
        raise ValueError(
            "With weights='imagenet' and include_top=True, classes must be 1000 (the ImageNet "
            f"classifier). Use include_top=False for another number of classes. Received: classes={classes}"
        )
    if pooling not in POOLING:
        raise ValueError(f"pooling must be one of {POOLING}. Received: pooling={pooling!r}")
    if output_stride not in OUTPUT_STRIDES:
        raise ValueError(f"output_stride must be one of {OUTPUT_STRIDES}. Received: output_stride={output_stride!r}")


def stage_strides(output_stride, num_stages=5):
    """(stride, dilation) of each stride-2 stage for an output stride of 8, 16 or 32.

    Past the output stride a stage keeps its resolution and dilates its
    convolutions instead (atrous convolution), so the receptive field still
    grows as if it had been downsampled, and the weights stay valid.
    """
    plan, stride, dilation = [], 1, 1
    for _ in range(num_stages):
        if stride < output_stride:
            stride *= 2
            plan.append((2, 1))
        else:
            dilation *= 2
            plan.append((1, dilation))
    return plan


class Pyramid(dict):
    """The feature pyramid {"P1": ..., "P5": ...} a classifier collects while it builds.

    `close(x)` records `x` as the next level, the last feature map at its
    stride, and returns the (stride, dilation) of the stage that follows it
    (see `stage_strides`): stride 2, or past the output stride 1 and a doubled
    dilation.
    """

    def __init__(self, output_stride):
        super().__init__()
        self.plan = stage_strides(output_stride)

    def close(self, x):
        self[f"P{len(self) + 1}"] = x
        return self.plan[len(self)] if len(self) < len(self.plan) else None


def finish(inputs, x, pyramid, *, include_top, pooling, classes, classifier_activation,
           features_only, name, top=None, top_is_head=False):
    """The classifier, or with `features_only` the pyramid model (outputs keyed "P1".."P5"). `top`: what
    comes before the classifier's Dense layer in place of the global average pool, or with `top_is_head` the
    whole top, predictions included (MobileNetV3's convolutional one)."""
    if features_only:
        return keras.Model(inputs, dict(pyramid), name=f"{name}_features")
    if include_top and top_is_head:
        x = top(x)
    elif include_top:
        if top is not None:
            x = top(x)
        else:
            x = layers.GlobalAveragePooling2D(name="avg_pool")(x)
        x = layers.Dense(classes, activation=classifier_activation, name="predictions")(x)
    elif pooling == "avg":
        x = layers.GlobalAveragePooling2D(name="avg_pool")(x)
    elif pooling == "max":
        x = layers.GlobalMaxPooling2D(name="max_pool")(x)
    return keras.Model(inputs, x, name=name)


def load_weights(model, weights, pretrained=None, include_top=True):
    """Loads `weights` ("imagenet" or a path) into `model`; returns the model."""
    if weights is None:
        return model
    if weights == "imagenet":
        if pretrained is None:
            raise ValueError(
                f"There are no published ImageNet weights for {model.name}; use weights=None or the "
                f"path to a weights file. Received: weights='imagenet'"
            )
        path = fetch_imagenet_weights(pretrained, include_top)
    else:
        path = os.fspath(weights)
    try:
        model.load_weights(path)
    except Exception as error:
        raise ValueError(f"The weights file {path} does not fit {model.name}: {error}") from None
    return model


def fetch_imagenet_weights(pretrained, include_top):
    """The local path of the published file: keras.applications' cache, else a download."""
    file_name, file_hash = (
        (pretrained.top_file, pretrained.top_hash) if include_top else (pretrained.notop_file, pretrained.notop_hash)
    )
    url = pretrained.base_url + file_name
    try:
        return keras.utils.get_file(file_name, url, cache_subdir="models", file_hash=file_hash)
    except Exception as error:
        cache = os.path.join(os.path.expanduser(os.environ.get("KERAS_HOME", "~/.keras")), "models", file_name)
        raise ValueError(
            f"Could not fetch the ImageNet weights {file_name} ({error}). Offline, download {url} "
            f"elsewhere and put it at {cache}, or pass weights=PATH."
        ) from None


def encoder_pyramid(inputs, backbone, weights=None, backbone_kwargs=None, edge=False, output_stride=32,
                    multi_grid=None, levels=None):
    """The feature pyramid {"P1".."P5"} of registered classifier `backbone` applied to `inputs`.

    What every segmenter's encoder is: the classifier built with
    features_only=True and any input size. What the backbone supports is read
    from its declared `registry.Encoder` before anything is built, so a wrong
    combination is one clear ValueError: `output_stride` must be one it
    builds, `multi_grid` needs a backbone that takes it, `weights="imagenet"`
    one with published weights, and `levels` (the pyramid keys the segmenter
    reads) must exist. edge=True selects the backbone's edge variant where it
    declares one (EfficientNet: ReLU6 for swish); the other families are ReLU
    networks already. `backbone_kwargs` (e.g. {"alpha": 0.35}) go to its builder.
    """
    from kerasseg.models import registry

    declared = registry.encoder(backbone)
    if output_stride not in declared.output_strides:
        raise ValueError(f"{backbone} builds output strides {declared.output_strides}. "
                         f"Received: output_stride={output_stride!r}")
    if multi_grid and not declared.multi_grid:
        raise ValueError(
            f"multi_grid applies to backbones that declare it (the ResNet family: "
            f"{', '.join(n for n in registry.list_models(encoder=True) if registry.encoder(n).multi_grid)}); "
            f"pass multi_grid=None with backbone={backbone!r}. Received: multi_grid={multi_grid}"
        )
    if weights == "imagenet" and not declared.pretrained:
        raise ValueError(f"{backbone} has no published ImageNet weights; use backbone_weights=None or a path. "
                         "Received: backbone_weights='imagenet'")
    missing = [level for level in levels or () if level not in declared.channels]
    if missing:
        raise ValueError(f"levels must be among {tuple(declared.channels)}. Received: levels={tuple(levels)}")
    options = dict(backbone_kwargs or {})
    if multi_grid:
        options["multi_grid"] = tuple(multi_grid)
    if edge and declared.edge:
        options["edge"] = True
    encoder = registry.create_model(backbone, include_top=False, features_only=True, weights=weights,
                                    output_stride=output_stride, input_shape=(None, None, inputs.shape[-1]),
                                    **options)
    return encoder(inputs)
