import numpy as np
import pytest

import keras

from helpers import NOT_ON_JAX, fewer_on_jax, predict, weights_without_gradient
from kerasseg import models

TF_ONLY = pytest.mark.skipif(keras.backend.backend() != "tensorflow", reason="TensorFlow graph mode")

SEGMENTERS = models.list_models(task="segmentation", tiny=True)


def test_registry_rejects_duplicates_and_suggests_names():
    with pytest.raises(ValueError, match="already registered"):
        models.register("segmentation")(models.unet)
    with pytest.raises(ValueError, match="Did you mean: unet"):
        models.create_model("unett")


@pytest.mark.skipif(keras.backend.backend() != "tensorflow", reason="the tiny variants build on JAX; the full "
                    "sizes differ only in numbers")
@pytest.mark.parametrize("name", [pytest.param(name, marks=[pytest.mark.large] * (name in ("fcn32s", "fcn16s")))
                                  for name in models.list_models(task="segmentation")])  # (FCN-8s: VGG-16's build)
def test_builds_with_no_arguments(name):
    model = models.create_model(name)
    assert model.count_params() > 0


@pytest.mark.parametrize("name", fewer_on_jax(SEGMENTERS, keep=["unet_tiny", "deeplab_v3_plus_tiny"]))
@pytest.mark.parametrize("size", fewer_on_jax([(32, 32), (37, 53), (97, 131)], keep=[(37, 53)]))
def test_logits_at_input_size_float32(name, size):
    model = models.create_model(name, classes=3)
    x = np.random.default_rng(0).uniform(0, 255, (2, *size, 3)).astype("float32")
    y = predict(model, x)
    assert y.shape == (2, *size, 3)
    assert y.dtype == np.float32 and np.isfinite(y).all()


# (every segmenter ends in the one head that casts to float32: on JAX, two of them show it)
@pytest.mark.parametrize("name", fewer_on_jax(SEGMENTERS, keep=["unet_tiny", "deeplab_v3_plus_tiny"]))
def test_mixed_precision_logits_stay_float32(name):
    keras.mixed_precision.set_global_policy("mixed_bfloat16")
    try:
        model = models.create_model(name, classes=3)
    finally:
        keras.mixed_precision.set_global_policy("float32")
    assert model(np.zeros((1, 37, 45, 3), "float32")).dtype == "float32"


# (on JAX: the decoders of three kinds, skips, ASPP and hypercolumns; every backbone's gradient is checked on
# JAX by test_classifiers)
@pytest.mark.parametrize("name", fewer_on_jax(SEGMENTERS, keep=["unet_tiny", "deeplab_v3_plus_tiny",
                                                                "hypercolumns_tiny"]))
def test_gradient_reaches_every_weight(name):
    keras.utils.set_random_seed(0)  # stochastic depth (EfficientNet backbones) may drop a block for one batch
    model = models.create_model(name, classes=3)
    x = np.random.default_rng(1).uniform(0, 255, (2, 40, 40, 3)).astype("float32")
    y = np.random.default_rng(2).integers(0, 3, (2, 40, 40))
    assert not weights_without_gradient(model, x, y)


# (on JAX, saving is Keras' own for every model: three families show it)
@pytest.mark.parametrize("name", fewer_on_jax(SEGMENTERS, keep=["unet_tiny", "deeplab_v3_plus_tiny", "lraspp_tiny"]))
def test_save_load_identical(name, tmp_path):
    model = models.create_model(name, classes=3)
    x = np.random.default_rng(3).uniform(0, 255, (1, 45, 51, 3)).astype("float32")
    path = tmp_path / "m.keras"
    model.save(path)
    again = keras.saving.load_model(path)
    np.testing.assert_array_equal(predict(model, x), predict(again, x))


@TF_ONLY  # (a count does not depend on the backend)
def test_unet_paper_configuration_parameters():
    # Ronneberger et al. 2015, Fig. 1: 1 input channel, 2 classes, 64..1024 channels,
    # two 3x3 convs per step (with bias), 2x2 up-convolutions, a final 1x1 conv:
    #   contracting: (1*9+1)*64 + (64*9+1)*64 + (64*9+1)*128 + (128*9+1)*128 + ... + (512*9+1)*1024 + (1024*9+1)*1024
    #   expanding:   up-conv 2x2 (c_in*4+1)*c_out, then two 3x3 on the concatenation (2*c_out in), and so on
    # which totals 31,030,658.
    def conv(cin, cout, k=3):
        return (cin * k * k + 1) * cout

    expected = conv(1, 64) + conv(64, 64)
    for c in (128, 256, 512, 1024):
        expected += conv(c // 2, c) + conv(c, c)
    for c in (512, 256, 128, 64):
        expected += conv(2 * c, c, 2) + conv(2 * c, c) + conv(c, c)
    expected += conv(64, 2, 1)
    assert expected == 31_030_658
    model = models.unet(input_shape=(None, None, 1))
    assert model.count_params() == expected


@NOT_ON_JAX  # (the tile arithmetic is the configuration's: 13 s to build the paper's U-Net on JAX, 1 s on TF)
def test_unet_valid_padding_is_the_papers_tile():
    model = models.unet(input_shape=(572, 572, 1), padding="valid")
    assert model.output_shape == (None, 388, 388, 2)
    with pytest.raises(ValueError, match=r"nearest accepted sizes are \[556, 572\]"):
        models.unet(input_shape=(570, 570, 3), padding="valid")


@pytest.mark.parametrize("kwargs, match", [
    ({"upsampling": "nearest"}, "upsampling must be one of"),
    ({"padding": "reflect"}, "padding must be one of"),
    ({"activation": "relu"}, "activation must be one of"),
    ({"input_shape": (64, 64)}, "input_shape must be"),
])
def test_unet_bad_arguments(kwargs, match):
    with pytest.raises(ValueError, match=match):
        models.unet(**kwargs)


@pytest.mark.parametrize("name", fewer_on_jax(SEGMENTERS, keep=["unet_tiny", "deeplab_v3_plus_tiny", "lraspp_tiny"]))
def test_edge_variant_computes_the_same_logits_in_edge_tpu_operators(name):
    """edge=True only lowers the resizes (phase convolutions, concatenation, reshape, crop): where
    the sizes divide evenly it is the same network; at odd sizes it crops instead of rescaling."""
    # (MobileNetV3's edge variant is its minimalistic network: the plain one built so, to compare weights)
    plain = models.create_model(name, classes=3, **({"backbone_kwargs": {"minimalistic": True}}
                                                     if name == "lraspp_tiny" else {}))
    edge = models.create_model(name, classes=3, edge=True)
    edge.set_weights(plain.get_weights())
    x = np.random.default_rng(7).uniform(0, 255, (1, 64, 96, 3)).astype("float32")
    if name != "unet_backbone_tiny":  # its EfficientNet's edge variant swaps swish for ReLU6
        np.testing.assert_allclose(predict(edge, x), predict(plain, x), rtol=1e-4, atol=1e-4)
    odd = predict(edge, x[:, :37, :53])
    assert odd.shape == (1, 37, 53, 3) and np.isfinite(odd).all()


def test_edge_resize_is_half_pixel_bilinear_for_integer_factors():
    from kerasseg.layers.resize import edge_resize

    rng = np.random.default_rng(8)
    for source, target in [((5, 7), (10, 14)), ((4, 6), (16, 24)), ((3, 5), (9, 15)), ((1, 1), (9, 11))]:
        x = rng.normal(size=(2, *source, 3)).astype("float32")
        expected = keras.ops.image.resize(x, target, interpolation="bilinear")
        np.testing.assert_allclose(keras.ops.convert_to_numpy(edge_resize(x, target)),
                                   keras.ops.convert_to_numpy(expected), atol=1e-5)
    # not a multiple: the next integer factor, cropped; larger than the target: cropped
    assert tuple(edge_resize(rng.normal(size=(1, 33, 33, 2)), (129, 129)).shape) == (1, 129, 129, 2)
    assert tuple(edge_resize(rng.normal(size=(1, 66, 66, 2)), (65, 65)).shape) == (1, 65, 65, 2)


@TF_ONLY
def test_bilinear_resize_matches_tensorflow_with_unknown_sizes():
    """The graph-mode path for unknown sizes is tf.image.resize's bilinear rule."""
    import tensorflow as tf

    from kerasseg.layers import bilinear_resize

    x = np.random.default_rng(4).normal(size=(2, 7, 9, 3)).astype("float32")
    fn = tf.function(lambda a, h, w: bilinear_resize(a, (h, w)),
                     input_signature=[tf.TensorSpec([None, None, None, 3]), tf.TensorSpec([], tf.int32),
                                      tf.TensorSpec([], tf.int32)])
    for h, w in [(13, 20), (4, 5), (7, 9)]:
        np.testing.assert_allclose(fn(x, h, w).numpy(), tf.image.resize(x, (h, w)).numpy(), atol=1e-5)


@TF_ONLY
@pytest.mark.parametrize("name", SEGMENTERS)
def test_unknown_size_graph_matches_eager(name):
    import tensorflow as tf

    model = models.create_model(name, classes=3)
    fn = tf.function(lambda a: model(a), input_signature=[tf.TensorSpec([None, None, None, 3])])
    x = np.random.default_rng(5).uniform(0, 255, (1, 45, 51, 3)).astype("float32")
    # float32 rounding of two resize implementations; logits of untrained nets reach the hundreds
    np.testing.assert_allclose(fn(x).numpy(), keras.ops.convert_to_numpy(model(x)), rtol=1e-4, atol=1e-4)


def test_fcn8s_paper_parameters():
    # Long et al. 2015 on VGG16 for 21 classes (Pascal VOC):
    #   VGG16 convolutions 14,714,688; fc6 as a 7x7 conv 7*7*512*4096 + 4096; fc7 1x1 4096*4096 + 4096;
    #   score_fr 4096*21 + 21; score_pool4 512*21 + 21; score_pool3 256*21 + 21;
    #   three bilinear-initialised transposed convs without bias: 4*4*21*21 (x2) and 16*16*21*21 (upscore8)
    expected = (14_714_688 + 7 * 7 * 512 * 4096 + 4096 + 4096 * 4096 + 4096 + 4096 * 21 + 21 + 512 * 21 + 21
                + 256 * 21 + 21 + 2 * 4 * 4 * 21 * 21 + 16 * 16 * 21 * 21)
    assert expected == 134_489_759
    assert models.fcn8s().count_params() == expected


@NOT_ON_JAX
def test_convolutionalized_vgg16_gives_the_classifier_logits_then_a_score_map():
    classifier = models.vgg16(classifier_activation=None)
    convolutional = models.convolutionalize(classifier)
    x = np.random.default_rng(6).uniform(0, 255, (1, 224, 224, 3)).astype("float32")
    np.testing.assert_allclose(predict(convolutional, x)[0, 0, 0], predict(classifier, x)[0], rtol=1e-4, atol=1e-4)
    # 320 pixels: pool5 is 10x10, the 7x7 fc6 slides over it: a 4x4 map of 1000 class scores
    assert predict(convolutional, np.zeros((1, 320, 320, 3), "float32")).shape == (1, 4, 4, 1000)


def test_bilinear_initialised_upsampling_interpolates():
    from kerasseg.models import BilinearUpsampling

    layer = keras.layers.Conv2DTranspose(1, 4, strides=2, padding="same", use_bias=False,
                                         kernel_initializer=BilinearUpsampling())
    ramp = np.arange(8, dtype="float32").reshape(1, 1, 8, 1) * np.ones((1, 8, 1, 1), "float32")
    out = keras.ops.convert_to_numpy(layer(ramp))[0, 4, :, 0]
    # away from the borders, doubling a ramp by linear interpolation gives steps of 0.5
    np.testing.assert_allclose(np.diff(out[2:-2]), 0.5, atol=1e-6)


def test_deeplab_v1_largefov_parameters():
    # Chen et al. 2014 (DeepLab-LargeFOV): VGG16 convolutions 14,714,688; fc6 a 3x3 conv of 1024 dilated 12
    # (3*3*512*1024 + 1024); fc7 1x1 1024 (1024*1024 + 1024); fc8 21 classes (1024*21 + 21): the paper's 20.5M
    expected = 14_714_688 + 3 * 3 * 512 * 1024 + 1024 + 1024 * 1024 + 1024 + 1024 * 21 + 21
    assert round(expected / 1e6, 1) == 20.5
    assert models.deeplab_v1().count_params() == expected


def test_deeplab_v3_multi_grid_needs_a_resnet_backbone():
    with pytest.raises(ValueError, match="multi_grid applies to backbones that declare it .*resnet50"):
        models.deeplab_v3(backbone="mobilenet_v2_tiny")
    assert models.deeplab_v3(backbone="mobilenet_v2_tiny", multi_grid=None, classes=3).output_shape[-1] == 3


@pytest.mark.parametrize("build, message", [
    (lambda: models.deeplab_v3_plus(backbone="resnet_cifar"), "'resnet_cifar' cannot be a segmenter's backbone"),
    (lambda: models.unet(backbone="googlenet", backbone_weights="imagenet"), "googlenet has no published ImageNet"),
    (lambda: models.fcn8s(backbone="se_resnet50", backbone_weights="imagenet"), "se_resnet50 has no published"),
    (lambda: models.hypercolumns(backbone="vgg_tiny", levels=("P2", "P6")), r"levels must be among \('P1'"),
    (lambda: models.deeplab_v3(backbone="resnet_tiny", output_stride=4), "output_stride must be 8, 16 or 32"),
])
def test_a_combination_the_backbone_does_not_declare_is_one_clear_error(build, message):
    with pytest.raises(ValueError, match=message):
        build()


@pytest.mark.parametrize("name", models.list_models(task="classification", tiny=True))
def test_declared_encoder_channels_are_the_pyramid_the_builder_makes(name):
    declared = models.registry.encoder(name)
    pyramid = models.create_model(name, include_top=False, features_only=True, input_shape=(None, None, 3))
    assert {key: int(output.shape[-1]) for key, output in pyramid.output.items()} == declared.channels
    assert declared.edge == (name in ("efficientnet_tiny", "mobilenet_v3_tiny"))
    assert declared.multi_grid == name.startswith(("resnet", "se_resnet"))


# (on JAX, one: model.fit's JAX trainer is the same for every model; each model's gradients are checked above)
@pytest.mark.parametrize("name", fewer_on_jax(SEGMENTERS, keep=["deeplab_v3_plus_tiny"]))
def test_short_fit_on_shapes_lowers_the_loss(name):
    from kerasseg import data, losses
    from kerasseg.data.pipeline import make_dataset

    keras.utils.set_random_seed(0)
    split = data.load_split("shapes", "train", (48, 48), count=32)
    model = models.create_model(name, classes=split.num_classes)
    model.compile(optimizer=keras.optimizers.Adam(3e-3), loss=losses.cross_entropy())
    model.optimizer.build(model.trainable_variables)  # (the first step traced once: see kerasseg/training/_fitting.py)
    history = model.fit(make_dataset(split, (48, 48), 8, shuffle=True), epochs=5, verbose=0).history["loss"]
    assert np.isfinite(history).all() and history[-1] < 0.9 * history[0], history


def test_convolutionalize_a_global_pooling_classifier_with_se_blocks():
    classifier = models.se_resnet_tiny(classes=4, classifier_activation=None, input_shape=(64, 64, 3))
    convolutional = models.convolutionalize(classifier)
    x = np.random.default_rng(7).uniform(0, 255, (1, 64, 64, 3)).astype("float32")
    scores = predict(convolutional, x)  # per-position class scores; their mean is the pooled classifier's
    assert scores.shape == (1, 2, 2, 4)
    np.testing.assert_allclose(scores.mean(axis=(1, 2))[0], predict(classifier, x)[0], rtol=1e-4, atol=1e-4)


def test_deeplab_aspp_rates_follow_the_output_stride_or_the_caller():
    def rates(model):
        return sorted(int(layer.name.split("rate")[1].removesuffix("_conv")) for layer in model.layers
                      if "_3x3_rate" in layer.name and layer.name.endswith("_conv"))

    assert rates(models.deeplab_v3_tiny(classes=3)) == [6, 12, 18]
    assert rates(models.deeplab_v3_tiny(classes=3, output_stride=8)) == [12, 24, 36]
    assert rates(models.deeplab_v3_plus_tiny(classes=3, aspp_rates=(1, 2, 3))) == [1, 2, 3]
    assert rates(models.deeplab_v3_plus_tiny(classes=3, output_stride=32)) == [3, 6, 9]


def test_deeplab_v3_plus_at_output_stride_32_keeps_its_backbone_undilated():
    """keras-hub's DeepLabV3 configuration: no dilation outside ASPP, stage 5 at 1/32 of the input."""
    for stride in (16, 32):
        model = models.deeplab_v3_plus_tiny(classes=3, output_stride=stride)
        dilated = {layer.name for layer in model.layers if max(getattr(layer, "dilation_rate", (1,))) > 1}
        nested = [layer for layer in model.layers if isinstance(layer, keras.Model)]
        dilated |= {layer.name for inner in nested for layer in inner.layers
                    if max(getattr(layer, "dilation_rate", (1,))) > 1}
        assert all(name.startswith("aspp") for name in dilated) == (stride == 32), (stride, sorted(dilated))
        x = np.random.default_rng(0).uniform(0, 255, (1, 64, 96, 3)).astype("float32")
        assert predict(model, x).shape == (1, 64, 96, 3)
        pyramid = keras.Model(model.inputs, next(layer for layer in model.layers
                                                 if layer.name.startswith("aspp")).input)
        assert predict(pyramid, x).shape[1:3] == (64 // stride, 96 // stride)


@pytest.mark.parametrize("backbone", ["mobilenet_v3_tiny", "resnet_tiny", "efficientnet_tiny"])
def test_lraspp_scores_stride_8_and_gated_stride_16_features_on_any_backbone(backbone):
    """The paper's head: P5 at output stride 16 through a 1x1 branch gated (sigmoid) by its global average,
    upsampled to P3 and scored, plus P3's own class scores; the gate is the image's: another picture around
    the same pixels changes them."""
    model = models.lraspp(backbone=backbone, filters=16, classes=3, backbone_kwargs=None)
    encoder = next(layer for layer in model.layers if isinstance(layer, keras.Model))
    c3, c5 = (models.registry.encoder(backbone).channels[key] for key in ("P3", "P5"))
    if backbone == "mobilenet_v3_tiny":
        assert (c3, c5) == (8, 144)
    head = model.count_params() - encoder.count_params()
    assert head == c5 * 16 + 4 * 16 + (c5 * 16 + 16) + (16 * 3 + 3) + (c3 * 3 + 3)
    assert model.get_layer("lraspp_gate").activation.__name__ == "sigmoid"
    x = np.random.default_rng(0).uniform(0, 255, (2, 64, 96, 3)).astype("float32")
    stride = keras.Model(model.inputs, [model.get_layer("lraspp_gated").input[0],
                                        model.get_layer("lraspp_low_logits").output])
    high, low = predict(stride, x)
    assert high.shape[1:3] == (4, 6) and low.shape[1:3] == (8, 12)  # strides 16 and 8
    assert predict(model, x).shape == (2, 64, 96, 3)
    layer = model.get_layer("lraspp_gate")
    p5, gate = predict(keras.Model(model.inputs, [model.get_layer("lraspp_pool").input, layer.output]), x)
    kernel, bias = (np.asarray(w) for w in layer.get_weights())
    expected = 1 / (1 + np.exp(-(p5.mean(axis=(1, 2)) @ kernel[0, 0] + bias)))  # the whole picture's average
    np.testing.assert_allclose(gate[:, 0, 0], expected, rtol=1e-4, atol=1e-5)


def test_deeplab_v3_plus_takes_mobilenet_v3_and_its_edge_variant_is_minimalistic():
    plain = models.deeplab_v3_plus(backbone="mobilenet_v3_tiny", classes=3, aspp_filters=8, decoder_filters=8,
                                   low_level_filters=8)
    edge = models.deeplab_v3_plus(backbone="mobilenet_v3_tiny", classes=3, aspp_filters=8, decoder_filters=8,
                                  low_level_filters=8, edge=True)

    def kinds(model):
        return {type(layer).__name__ for inner in model.layers if isinstance(inner, keras.Model)
                for layer in inner.layers}

    assert "Multiply" in kinds(plain) and "Multiply" not in kinds(edge)  # squeeze-excite gone

    def activations(model):
        return {getattr(layer, "activation", None).__name__ for inner in model.layers
                if isinstance(inner, keras.Model) for layer in inner.layers
                if type(layer).__name__ == "Activation"}

    assert "hard_silu" in activations(plain) and not activations(edge) & {"hard_silu", "hard_sigmoid"}
    x = np.random.default_rng(0).uniform(0, 255, (1, 37, 53, 3)).astype("float32")
    assert predict(edge, x).shape == (1, 37, 53, 3)


@TF_ONLY  # (JAX traces every input size anew: nothing is relaxed)
@pytest.mark.parametrize("name", SEGMENTERS)
def test_edge_models_give_the_same_logits_whatever_was_called_before(name):
    """An odd size at which edge=True crops rather than rescales: the same image must give the same logits
    from a fresh model and after calls at other sizes (after which TensorFlow retraces with unknown sizes)."""
    fresh, used = (models.create_model(name, classes=3, edge=True) for _ in range(2))
    used.set_weights(fresh.get_weights())
    x = np.random.default_rng(9).uniform(0, 255, (1, 65, 65, 3)).astype("float32")
    for size in ((32, 48), (40, 40), (57, 71)):
        predict(used, np.zeros((1, *size, 3), "float32"))
    expected, after = predict(fresh, x), predict(used, x)
    np.testing.assert_allclose(after, expected, rtol=1e-4, atol=1e-4)
    assert (after.argmax(-1) == expected.argmax(-1)).all()


def _every_kind_of_layer_qat_rewrites():
    """A dozen layers holding each kind the simulation rewrites: a convolution with its batch norm folded and
    swish split off, a squeeze-excitation (mean, swish, sigmoid gate at its fixed scale, multiply), a
    pre-activation batch norm (scale and shift), a sum, a concatenation, a depthwise convolution."""
    layers = keras.layers
    image = keras.Input((16, 16, 3))
    x = layers.Conv2D(8, 3, padding="same", use_bias=False)(layers.Rescaling(1 / 255)(image))
    x = layers.Activation("swish")(layers.BatchNormalization()(x))
    gate = layers.Conv2D(2, 1, activation="swish")(layers.GlobalAveragePooling2D(keepdims=True)(x))
    x = layers.Multiply()([x, layers.Conv2D(8, 1, activation="sigmoid")(gate)])
    y = layers.Conv2D(8, 3, padding="same")(layers.Activation("relu")(layers.BatchNormalization()(x)))
    x = layers.Concatenate()([layers.Add()([x, y]), y])
    x = layers.ReLU()(layers.DepthwiseConv2D(3, padding="same")(x))
    return keras.Model(image, layers.Conv2D(3, 1)(x))


def test_quantization_aware_layers_train_on_every_backend():
    """The simulation's layers (kerasseg.layers.quantization) are Keras layers on keras.ops: one fit step
    moves every weight, through every rounding (straight through it), on TensorFlow and JAX."""
    from kerasseg import losses, qat

    keras.utils.set_random_seed(0)
    model = _every_kind_of_layer_qat_rewrites()
    rng = np.random.default_rng(0)
    images = rng.integers(0, 256, (8, 16, 16, 3)).astype("float32")
    quantized = qat.quantization_aware(model, images)
    quantized.compile(optimizer=keras.optimizers.Adam(1e-3), loss=losses.SegmentationLoss("ce"))
    quantized.optimizer.build(quantized.trainable_variables)  # (the first step traced once)
    before = [keras.ops.convert_to_numpy(w).copy() for w in quantized.trainable_weights]
    quantized.fit(images, rng.integers(0, 3, (8, 16, 16)), batch_size=8, epochs=1, verbose=0)
    after = [keras.ops.convert_to_numpy(w) for w in quantized.trainable_weights]
    assert [w.path for w, a, b in zip(quantized.trainable_weights, before, after) if np.array_equal(a, b)] == []
    twin, _ = qat.export_twin(quantized)  # the folded float model: the simulation's values, up to its roundings
    assert np.abs(predict(twin, images) - predict(quantized, images)).max() < 0.1


# DenseNet: the pre-activation batch norms' halves; EfficientNet: swish and the squeeze-excitation's sigmoid at
# its fixed scale (MobileNetV2's depthwise convolutions: the TensorFlow export tests in test_qat.py). TensorFlow
# only: JAX takes minutes to compile these models' training step (the layers train on JAX: the test above)
@pytest.mark.skipif(keras.backend.backend() != "tensorflow", reason="the layers on JAX: the test above")
@pytest.mark.parametrize("backbone", ["densenet_tiny", "efficientnet_tiny"])
def test_quantization_aware_model_folds_batch_norm_rounds_weights_and_trains(backbone):
    """Backend-agnostic QAT: batch norm folded exactly, weights on TFLite's per-channel int8 grid, one fit step."""
    from kerasseg import internals, losses, qat
    from kerasseg.layers.quantization import QuantizedConv

    keras.utils.set_random_seed(0)
    model = models.create_model("deeplab_v3_plus_tiny", classes=3, backbone=backbone)
    rng = np.random.default_rng(0)
    for layer in internals.all_layers(model):
        if isinstance(layer, keras.layers.BatchNormalization):  # statistics a trained model would have
            gamma, beta, mean, variance = layer.get_weights()
            layer.set_weights([rng.uniform(0.5, 2, gamma.shape), rng.normal(0, 1, beta.shape),
                               rng.normal(0, 1, mean.shape), rng.uniform(0.5, 2, variance.shape)])
    images = rng.integers(0, 256, (4, 32, 32, 3)).astype("float32")
    quantized = qat.quantization_aware(model, images)
    convs = [layer for layer in quantized.layers if isinstance(layer, QuantizedConv)]
    assert sum(c.batch_norm is not None for c in convs) >= 10
    for conv in convs:
        kernel = keras.ops.convert_to_numpy(conv.folded()[0])
        channels = kernel.reshape(-1, kernel.shape[-1] * (kernel.shape[-2] if "Depthwise" in
                                                          type(conv.conv).__name__ else 1))
        steps = channels / (np.abs(channels).max(0) / 127)
        assert np.abs(steps - np.round(steps)).max() < 1e-3 and np.abs(steps).max() == pytest.approx(127, abs=1e-3)
    twin, _ = qat.export_twin(quantized)  # folded float weights: the float model's outputs, up to rounding
    float_logits, twin_logits = predict(model, images), predict(twin, images)
    assert np.abs(float_logits - twin_logits).max() < 0.05 * np.abs(float_logits).max()
    # one step, eagerly (tracing the graph would take longer than the step)
    quantized.compile(optimizer=keras.optimizers.Adam(1e-3), loss=losses.SegmentationLoss("ce"), run_eagerly=True)
    before = [keras.ops.convert_to_numpy(w).copy() for w in quantized.trainable_weights]
    quantized.fit(images, rng.integers(0, 3, (4, 32, 32)), batch_size=4, epochs=1, verbose=0)
    after = [keras.ops.convert_to_numpy(w) for w in quantized.trainable_weights]
    # the gradient reaches the weights through every rounding (straight through it), except where a value lies
    # outside its range, as the file would clip it: with the random statistics above, EfficientNet's block6a
    # squeezes every image to one constant vector, so its calibrated ranges are single points, and in training
    # (batch statistics) its squeeze-excitation values fall just outside them (measured: 127 of 129 weights moved)
    assert sum(not np.array_equal(a, b) for a, b in zip(before, after)) >= 0.95 * len(before)
