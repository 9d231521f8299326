import gc

import keras
import numpy as np
import pytest

from helpers import NOT_ON_JAX, fewer_on_jax, predict, weights_without_gradient
from kerasseg import models
from kerasseg.models.classifiers import googlenet as googlenet_family

TINY = models.list_models(task="classification", tiny=True)


def _conv(cin, cout, k, bias=True):
    return cin * k * k * cout + (cout if bias else 0)


def _resnet_basic(blocks, classes=1000):
    """Basic-block ResNet without conv biases (the paper, torchvision); BN: 4 numbers per channel."""
    total, cin = _conv(3, 64, 7, bias=False) + 4 * 64, 64
    for filters, count in zip((64, 128, 256, 512), blocks):
        for _ in range(count):
            project = cin != filters
            total += _conv(cin, filters, 3, False) + _conv(filters, filters, 3, False) + 8 * filters
            total += (_conv(cin, filters, 1, False) + 4 * filters) if project else 0
            cin = filters
    return total + 512 * classes + classes


def _resnet_cifar(depth, classes=10):
    """He et al. Sec. 4.2: 6n + 2 layers, basic blocks on 16/32/64 filters, projection where channels double."""
    n = (depth - 2) // 6
    total, cin = _conv(3, 16, 3, bias=False) + 4 * 16, 16
    for filters in (16, 32, 64):
        for _ in range(n):
            total += _conv(cin, filters, 3, False) + _conv(filters, filters, 3, False) + 8 * filters
            total += (_conv(cin, filters, 1, False) + 4 * filters) if cin != filters else 0
            cin = filters
    return total + 64 * classes + classes


def _se_extra(blocks, ratio=16):
    """Parameters SE adds to a bottleneck ResNet: two FC layers (with bias) on c = 4 x width channels."""
    total = 0
    for width, count in zip((64, 128, 256, 512), blocks):
        c = 4 * width
        total += count * (c * (c // ratio) + c // ratio + (c // ratio) * c + c)
    return total


def _googlenet(classes=1000):
    """Table 1 of Szegedy et al. 2014, every convolution with a bias."""
    total = _conv(3, 64, 7) + _conv(64, 64, 1) + _conv(64, 192, 3)
    cin = 192
    for c1, c3r, c3, c5r, c5, pp in googlenet_family.MODULES.values():
        total += _conv(cin, c1, 1) + _conv(cin, c3r, 1) + _conv(c3r, c3, 3) + _conv(cin, c5r, 1)
        total += _conv(c5r, c5, 5) + _conv(cin, pp, 1)
        cin = c1 + c3 + c5 + pp
    return total + cin * classes + classes


# include_top=True, 1000 classes, default input. keras.applications' own figures where it has the
# model; the others derived above from the papers' tables.
PARAMS = {
    "vgg16": 138_357_544, "vgg19": 143_667_240,
    "resnet50": 25_636_712, "resnet101": 44_707_176, "resnet152": 60_419_944,
    "densenet121": 8_062_504, "densenet169": 14_307_880, "densenet201": 20_242_984,
    "efficientnet_b0": 5_330_571, "efficientnet_b1": 7_856_239, "efficientnet_b2": 9_177_569,
    "efficientnet_b3": 12_320_535, "efficientnet_b4": 19_466_823, "efficientnet_b5": 30_562_527,
    "efficientnet_b6": 43_265_143, "efficientnet_b7": 66_658_687,
    "mobilenet_v2": 3_538_984, "mobilenet_v3_large": 5_507_432, "mobilenet_v3_small": 2_554_968,
    "resnet18": _resnet_basic((2, 2, 2, 2)), "resnet34": _resnet_basic((3, 4, 6, 3)),
    "se_resnet50": 25_636_712 + _se_extra((3, 4, 6, 3)),
    "se_resnet101": 44_707_176 + _se_extra((3, 4, 23, 3)),
    "se_resnet152": 60_419_944 + _se_extra((3, 8, 36, 3)),
    "googlenet": _googlenet(),
    "resnet_cifar": _resnet_cifar(20),
}


def test_every_full_size_classifier_has_a_stated_figure():
    assert set(PARAMS) == set(models.list_models(task="classification", tiny=False))


def test_derived_figures_match_the_papers():
    # torchvision's ResNet-18/34 (the paper's) count only learnable numbers: without BN moving statistics
    bn_channels_18 = 64 + 4 * 64 + 5 * 128 + 5 * 256 + 5 * 512
    assert PARAMS["resnet18"] - 2 * bn_channels_18 == 11_689_512
    assert round(PARAMS["se_resnet50"] / 1e6, 1) == 28.2  # the SENet paper reports 28.1M (no conv biases)
    assert round(PARAMS["googlenet"] / 1e6, 1) == 7.0  # ~6.8M weights in Table 1, plus biases
    assert round(PARAMS["resnet_cifar"] / 1e6, 2) == 0.27  # Table 6: ResNet-20 has 0.27M
    assert models.resnet_cifar(depth=56).count_params() == _resnet_cifar(56)  # 0.85M in Table 6


# the deepest of each family (4-8 s each to build, 51 s in all) in make test-large; each family's others here
DEEPEST = ("resnet101", "resnet152", "se_resnet101", "se_resnet152", "densenet169", "densenet201", "efficientnet_b5",
           "efficientnet_b6", "efficientnet_b7")


@pytest.mark.skipif(keras.backend.backend() != "tensorflow",
                    reason="a count does not depend on the backend; JAX builds full models in the weight tests")
@pytest.mark.parametrize("name", [pytest.param(name, marks=[pytest.mark.large] * (name in DEEPEST))
                                  for name in sorted(PARAMS)])
def test_parameter_count_with_no_arguments(name):
    model = models.create_model(name)
    assert model.count_params() == PARAMS[name]
    del model
    keras.backend.clear_session()
    gc.collect()


@pytest.mark.parametrize("name", TINY)
def test_tiny_forward_gradient_and_save_load(name, tmp_path):
    # seeded: EfficientNet's stochastic depth may drop a whole block for a batch of two, and then the
    # block's weights rightly get no gradient in that step
    keras.utils.set_random_seed(0)
    model = models.create_model(name, classes=5, classifier_activation=None, input_shape=(96, 96, 3))
    x = np.random.default_rng(0).uniform(0, 255, (2, 96, 96, 3)).astype("float32")
    y = predict(model, x)
    assert y.shape == (2, 5) and np.isfinite(y).all()
    assert not weights_without_gradient(model, x, np.array([1, 3]))  # (updates BN statistics)
    path = tmp_path / "m.keras"
    model.save(path)
    np.testing.assert_array_equal(predict(keras.saving.load_model(path), x), predict(model, x))


@pytest.mark.parametrize("name", TINY)
@pytest.mark.parametrize("output_stride", [32, 16, 8])
def test_pyramid_keys_and_strides(name, output_stride):
    model = models.create_model(name, features_only=True, include_top=False, output_stride=output_stride,
                                input_shape=(None, None, 3))
    features = predict(model, np.zeros((1, 128, 96, 3), "float32"))
    assert sorted(features) == ["P1", "P2", "P3", "P4", "P5"]
    for level in range(1, 6):
        stride = min(2**level, output_stride)
        assert tuple(features[f"P{level}"].shape[1:3]) == (128 // stride, 96 // stride), (level, output_stride)


def _odd(*case, large=False):
    # how an odd side rounds is the layers' configuration, the same on every backend: checked on TensorFlow
    # (large: the biggest three, 10-22 s each, in make test-large, with DenseNet's and EfficientNet's top-included
    # twins; ResNet-50's runs in make test, as do EfficientNet's own weight normalisation and every MobileNet)
    marks = [pytest.mark.skipif(keras.backend.backend() != "tensorflow", reason="rounding is checked on TensorFlow")]
    return pytest.param(*case, (67, 97), marks=marks + [pytest.mark.large] * large)


@pytest.mark.parametrize("name, ours, theirs, preprocess, size", fewer_on_jax([
    ("resnet50", "resnet50", "ResNet50", "resnet", (64, 64)),
    pytest.param("densenet121", "densenet121", "DenseNet121", "densenet", (64, 64), marks=pytest.mark.large),
    ("mobilenet_v2", "mobilenet_v2", "MobileNetV2", "mobilenet_v2", (64, 64)),
    pytest.param("efficientnet_b0", "efficientnet_b0", "EfficientNetB0", None, (64, 64), marks=pytest.mark.large),
    ("mobilenet_v3_large", "mobilenet_v3_large", "MobileNetV3Large", None, (64, 64)),
    ("mobilenet_v3_small", "mobilenet_v3_small", "MobileNetV3Small", None, (64, 64)),
    ("mobilenet_v3_small (alpha 0.75)", "mobilenet_v3_small", "MobileNetV3Small", None, (64, 64)),
    ("mobilenet_v3_large (minimalistic)", "mobilenet_v3_large", "MobileNetV3Large", None, (64, 64)),
    # odd sizes, no top (any size both accept): the same feature map (pooling= then averages or maxes it)
    _odd("resnet50 (no top)", "resnet50", "ResNet50", "resnet", large=True),
    _odd("vgg16 (no top)", "vgg16", "VGG16", "vgg16"),
    _odd("vgg19 (no top)", "vgg19", "VGG19", "vgg19"),
    _odd("densenet121 (no top)", "densenet121", "DenseNet121", "densenet", large=True),
    _odd("mobilenet_v2 (no top)", "mobilenet_v2", "MobileNetV2", "mobilenet_v2"),
    _odd("efficientnet_b0 (no top)", "efficientnet_b0", "EfficientNetB0", None, large=True),
    _odd("mobilenet_v3_large (no top)", "mobilenet_v3_large", "MobileNetV3Large", None),
    _odd("mobilenet_v3_small (minimalistic, no top)", "mobilenet_v3_small", "MobileNetV3Small", None),
], keep=[("mobilenet_v2", "mobilenet_v2", "MobileNetV2", "mobilenet_v2", (64, 64))]))
def test_keras_applications_weight_files_load_into_ours(name, ours, theirs, preprocess, size, tmp_path):
    """The same weights, saved from keras.applications, give the same outputs through our builder, at
    even and odd sizes."""
    include_top = "no top)" not in name
    options = {"alpha": 0.75} if "alpha 0.75" in name else {"minimalistic": True} if "minimalistic" in name else {}
    shape = (*size, 3)
    reference = getattr(keras.applications, theirs)(weights=None, include_top=include_top, input_shape=shape,
                                                    **options)
    rng = np.random.default_rng(1)
    for weight in reference.weights:  # non-trivial values, so a misplaced tensor shows
        weight.assign(rng.normal(0, 0.05, weight.shape).astype("float32") + (1.0 if "variance" in weight.path else 0))
    path = tmp_path / f"{theirs}.weights.h5"
    reference.save_weights(path)
    model = models.create_model(ours, weights=str(path), include_top=include_top, input_shape=shape, **options)
    x = rng.uniform(0, 255, (2, *shape)).astype("float32")
    expected_input = getattr(keras.applications, preprocess).preprocess_input(x.copy()) if preprocess else x
    expected = predict(reference, expected_input)
    assert predict(model, x).shape == expected.shape
    np.testing.assert_allclose(predict(model, x), expected, rtol=1e-4, atol=1e-4)


@pytest.mark.large  # (35-40 s: a full GoogLeNet trained two epochs)
@NOT_ON_JAX  # (the auxiliary heads' loss weights and the rebuild without them are the model's, not the backend's)
def test_googlenet_trains_with_auxiliary_heads_and_deploys_without_them():
    keras.utils.set_random_seed(0)
    model = models.googlenet_tiny(aux_logits=True, classes=3, input_shape=(96, 96, 3))
    assert [o.shape for o in model.outputs] == [(None, 3)] * 3
    model.compile(optimizer="adam", loss=["sparse_categorical_crossentropy"] * 3,
                  loss_weights=list(models.AUX_LOSS_WEIGHTS))
    model.optimizer.build(model.trainable_variables)  # (the first step traced once: see kerasseg/training/_fitting.py)
    x = np.random.default_rng(2).uniform(0, 255, (6, 96, 96, 3)).astype("float32")
    y = np.array([0, 1, 2, 0, 1, 2])
    model.fit(x, [y, y, y], epochs=2, verbose=0)
    deployed = models.googlenet_inference(model)
    assert len(deployed.outputs) == 1 and deployed.count_params() < model.count_params()
    np.testing.assert_allclose(predict(deployed, x), predict(model, x)[0], rtol=1e-5, atol=1e-6)


def test_plain_network_has_no_shortcuts_and_se_adds_gates():
    plain = models.resnet_tiny(shortcut=False)
    assert not [layer for layer in plain.layers if isinstance(layer, keras.layers.Add)]
    plain56 = models.resnet_cifar(depth=56, shortcut=False)
    assert not [layer for layer in plain56.layers if isinstance(layer, keras.layers.Add)]
    assert len([layer for layer in plain56.layers if isinstance(layer, keras.layers.Conv2D)]) == 55
    se = models.se_resnet_tiny()
    assert len([layer for layer in se.layers if layer.name.endswith("se_excite")]) == 4


@pytest.mark.parametrize("build, match", [
    (lambda: models.create_model("resnet5"), "Did you mean: resnet50"),
    (lambda: models.resnet50(weights="imagenet", classes=10), "classes must be 1000.*Received: classes=10"),
    (lambda: models.resnet50(weights="imagenet", include_top=False, input_shape=(224, 224, 1)),
     "3 input channels.*Received: input_shape"),
    (lambda: models.densenet121(input_shape=(16, 16, 3)), "at least 32.*Received: input_shape=\\(16, 16, 3\\)"),
    (lambda: models.mobilenet_v2(output_stride=4), "output_stride must be one of.*Received: output_stride=4"),
    (lambda: models.vgg16(input_shape=(None, None, 3)), "include_top=True needs a fixed input"),
    (lambda: models.googlenet(weights="imagenet"), "no GoogLeNet weights"),
    (lambda: models.resnet50(weights="/no/such/file.h5"), "weights must be None.*Received: weights="),
    (lambda: models.googlenet(aux_logits=True, input_shape=(64, 64, 3)), "at least 65"),
])
def test_bad_arguments_are_clear_value_errors(build, match):
    with pytest.raises(ValueError, match=match):
        build()


@NOT_ON_JAX
def test_imagenet_weights_offline_says_where_to_put_the_file(monkeypatch, tmp_path):
    monkeypatch.setenv("KERAS_HOME", str(tmp_path))
    monkeypatch.setattr(keras.utils, "get_file", _offline_get_file)
    with pytest.raises(ValueError, match=r"put it at .*resnet50_weights_tf_dim_ordering_tf_kernels_notop\.h5"):
        models.resnet50(weights="imagenet", include_top=False)


def _offline_get_file(*args, **kwargs):
    raise OSError("network is unreachable")


@NOT_ON_JAX
def test_model_table_counts_multiply_adds_and_draws_the_chart(tmp_path):
    from kerasseg.models.__main__ import plot, rows
    from kerasseg.profile import multiply_adds

    # one 3x3 conv, 3 -> 8 channels on 10x10 ('same'), then a dense 8 -> 2 per pixel: hand-counted
    inputs = keras.Input((10, 10, 3))
    x = keras.layers.Conv2D(8, 3, padding="same")(inputs)
    x = keras.layers.Dense(2)(x)
    assert multiply_adds(keras.Model(inputs, x)) == 10 * 10 * 9 * 3 * 8 + 10 * 10 * 8 * 2
    # a segmenter's encoder is a nested model built for any size: counted at the segmenter's input size
    from kerasseg import models

    fcn = models.fcn8s(backbone="vgg16", classes=21, input_shape=(224, 224, 3))
    vgg_convs = models.vgg16(input_shape=(224, 224, 3), include_top=False)
    assert multiply_adds(fcn) > multiply_adds(vgg_convs) > 15e9  # VGG16's 15.3 G conv multiply-adds
    table = list(rows(["resnet18", "mobilenet_v2"]))
    # the usual published figures: ResNet-18 1.8 G, MobileNetV2 300 M multiply-adds at 224x224
    assert [round(r["macs"] / 1e9, 1) for r in table] == [1.8, 0.3]
    assert [r["params"] for r in table] == [PARAMS["resnet18"], PARAMS["mobilenet_v2"]]
    plot(table, tmp_path / "chart.png")
    assert (tmp_path / "chart.png").read_bytes()[:4] == b"\x89PNG"


@NOT_ON_JAX
def test_efficientnet_normalises_a_weights_file_as_it_does_imagenet(monkeypatch, tmp_path):
    """keras.applications' EfficientNet file stores the ImageNet std where the variance belongs; the offline
    path to that file (weights=PATH, as the download error suggests) must normalise exactly as "imagenet"."""
    reference = keras.applications.EfficientNetB0(weights=None, include_top=False, input_shape=(64, 64, 3))
    norm = next(layer for layer in reference.layers if isinstance(layer, keras.layers.Normalization))
    norm.set_weights([np.array([0.485, 0.456, 0.406], "float32"), np.array([0.229, 0.224, 0.225], "float32"),
                      norm.get_weights()[2]])
    path = tmp_path / "efficientnetb0_notop.h5"
    reference.save_weights(str(path).replace(".h5", ".weights.h5"))
    path = str(path).replace(".h5", ".weights.h5")
    monkeypatch.setattr(keras.utils, "get_file", lambda *args, **kwargs: path)  # the download, already done
    from_imagenet = models.efficientnet_b0(weights="imagenet", include_top=False, input_shape=(64, 64, 3))
    from_path = models.efficientnet_b0(weights=path, include_top=False, input_shape=(64, 64, 3))
    x = np.random.default_rng(2).uniform(0, 255, (2, 64, 64, 3)).astype("float32")
    np.testing.assert_allclose(predict(from_path, x), predict(from_imagenet, x), rtol=1e-5, atol=1e-5)
    # and that normalisation is ImageNet's (x / 255 - mean) / std
    probe = keras.Model(from_path.inputs, from_path.get_layer("stem_conv").input)
    expected = (x / 255 - [0.485, 0.456, 0.406]) / [0.229, 0.224, 0.225]
    np.testing.assert_allclose(predict(probe, x), expected, rtol=1e-4, atol=1e-4)


def test_option_a_shortcut_pads_with_zeros_and_adds_no_parameters():
    """He et al.'s CIFAR ResNets (option A): ResNet-20 has exactly the plain-20's parameters, 0.27M."""
    option_a = models.resnet_cifar(depth=20, shortcut="A")
    plain = models.resnet_cifar(depth=20, shortcut=False)
    assert option_a.count_params() == plain.count_params()
    assert round(option_a.count_params() / 1e6, 2) == 0.27  # Table 6
    assert models.resnet_cifar(depth=20, shortcut=True).count_params() == _resnet_cifar(20)  # option B, default
    assert len([layer for layer in option_a.layers if isinstance(layer, keras.layers.Add)]) == 9
    from kerasseg.layers import ZeroPadShortcut

    x = np.random.default_rng(3).normal(size=(2, 7, 9, 16)).astype("float32")
    y = keras.ops.convert_to_numpy(ZeroPadShortcut(2, 32)(x))
    assert y.shape == (2, 4, 5, 32)
    np.testing.assert_array_equal(y[..., :16], x[:, ::2, ::2, :])
    assert not y[..., 16:].any()
    with pytest.raises(ValueError, match="shortcut must be one of"):
        models.resnet_cifar(depth=20, shortcut="C")
