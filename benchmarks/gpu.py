"""The GPU side by side, on the JAX backend with numpy data only (a CUDA machine with JAX and no TensorFlow).

    SMALL=1 KERAS_BACKEND=jax python benchmarks/gpu.py                 # the dry run, on a CPU (5 minutes on 2 cores)
    KERAS_BACKEND=jax DEADLINE_S=400 OUT=out python benchmarks/gpu.py   # on the GPU (about 9 minutes)
    KERAS_BACKEND=jax PARTS=dlv3 DLV3_SIZE=256 DLV3_BATCH=4 STEPS=3 POLICY=float32 python benchmarks/gpu.py
                                                                        # the DeepLab side by side on a CPU

Parts, in order (PARTS=fit,r50,effb0,mnv2,dlv3 by default), each written to $OUT/gpu.json (temporary name,
then rename) as soon as it ends; once DEADLINE_S seconds have passed the parts left are skipped, and said so:

  fit    model.fit of unet_edge on `shapes` at 128 px (2,000 images, 12 epochs, float32), then the validation
         mIoU from one confusion matrix over the split (kerasseg.metrics)
  r50, effb0, mnv2
         training images/s of our ResNet-50, EfficientNet-B0 and MobileNetV2 against keras.applications' (batch
         128, 224 px, bfloat16), each model on the same random batch held on the device
  dlv3   training images/s of our DeepLab v3+ / ResNet-50 against keras-hub's DeepLabV3ImageSegmenter on its
         ResNet-50 (512 px, batch 16, bfloat16), ours at output stride 16 (the paper's) and 32 (keras-hub's:
         no dilation, ASPP at keras-hub's rates 6/12/18)

Every row records its peak device memory. Anchors measured on an H100 (Keras 3.15.1, JAX 0.11.2):
keras.applications ResNet50 bf16 2,963 images/s at batch 128; keras-hub DeepLabV3+ R50 444 images/s at
512 px, batch 16.
"""

import json
import os
import sys
import time
import traceback

os.environ.setdefault("KERAS_BACKEND", "jax")
sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
OUT = os.environ.get("OUT") or "/tmp/gpu_out"
SMALL = os.environ.get("SMALL") == "1"
PARTS = os.environ.get("PARTS", "fit,r50,effb0,mnv2,dlv3").split(",")
DEADLINE_S = float(os.environ.get("DEADLINE_S", "420"))

import jax  # noqa: E402
import keras  # noqa: E402
import numpy as np  # noqa: E402

results = {"env": {"jax": jax.__version__, "keras": keras.__version__, "backend": keras.backend.backend(),
                   "devices": [str(d) for d in jax.devices()], "small": SMALL}, "parts": {}}


def save():
    os.makedirs(OUT, exist_ok=True)
    tmp = os.path.join(OUT, "gpu.json.tmp")
    with open(tmp, "w") as f:
        json.dump(results, f, indent=1)
    os.replace(tmp, os.path.join(OUT, "gpu.json"))


def log(*parts):
    print(f"[{time.strftime('%H:%M:%S')}]", *parts, flush=True)


def peak_gib():
    try:
        stats = jax.devices()[0].memory_stats() or {}
    except Exception:  # (a CPU device keeps none)
        return None
    return round(stats.get("peak_bytes_in_use", 0) / 2**30, 2) if stats else None


def images_per_second(model, x, y, steps, from_logits):
    """(best of two timed runs of `steps` training steps, the first step's seconds: compile and trace)."""
    model.compile(optimizer=keras.optimizers.Adam(1e-4),
                  loss=keras.losses.SparseCategoricalCrossentropy(from_logits=from_logits))
    start = time.perf_counter()
    model.train_on_batch(x, y)
    compile_s = time.perf_counter() - start
    model.train_on_batch(x, y)
    best = 0.0
    for _ in range(2):
        start = time.perf_counter()
        for _ in range(steps):
            model.train_on_batch(x, y)  # (returns host floats: each step is synchronised)
        best = max(best, steps * len(x) / (time.perf_counter() - start))
    return best, round(compile_s, 1)


def measured(who, build, x, y, steps, from_logits):
    """{who_params, who_img_s, who_compile_s, who_peak_gib} of the model `build()` makes."""
    model = build()
    row = {f"{who}_params": model.count_params()}
    row[f"{who}_img_s"], row[f"{who}_compile_s"] = images_per_second(model, x, y, steps, from_logits)
    row[f"{who}_peak_gib"] = peak_gib()
    del model
    keras.backend.clear_session()
    return row


def side_by_side(build_ours, build_theirs, x, theirs_x, y, steps, from_logits, theirs=None):
    """Ours against theirs (`theirs`: their row, measured already) on the same batch."""
    row = {**measured("ours", build_ours, x, y, steps, from_logits),
           **(theirs or measured("theirs", build_theirs, theirs_x, y, steps, from_logits))}
    row["ratio"] = round(row["ours_img_s"] / row["theirs_img_s"], 3)
    row.update(ours_img_s=round(row["ours_img_s"], 2), theirs_img_s=round(row["theirs_img_s"], 2))
    row.update(batch=int(x.shape[0]), size=int(x.shape[1]), policy=keras.mixed_precision.global_policy().name)
    return row


def part_fit():
    from kerasseg import losses, metrics, models
    from kerasseg.data import shapes

    size, count, epochs, batch = (32, 64, 2, 16) if SMALL else (128, 2000, 12, 32)
    start = time.perf_counter()
    images, masks = shapes.load("train", size, size, count)
    val_images, val_masks = shapes.load("val", size, size, 64 if SMALL else 200)
    generated_s = time.perf_counter() - start
    keras.utils.set_random_seed(0)
    model = models.unet_edge(classes=len(shapes.CLASS_NAMES))
    model.compile(optimizer=keras.optimizers.Adam(1e-3), loss=losses.SegmentationLoss("ce"),
                  metrics=metrics.segmentation_metrics(len(shapes.CLASS_NAMES)))
    start = time.perf_counter()
    history = model.fit(images.astype("float32"), masks, batch_size=batch, epochs=epochs,
                        validation_data=(val_images.astype("float32"), val_masks), verbose=2)
    fit_s = time.perf_counter() - start
    scores = metrics.evaluate_pairs(model, zip(val_images, val_masks), shapes.CLASS_NAMES, batch_size=50)
    return {"model": "unet_edge", "size": size, "train_images": count, "epochs": epochs, "batch": batch,
            "data_generated_s": round(generated_s, 1), "fit_s": round(fit_s, 1),
            "epoch_s": round(fit_s / epochs, 2), "train_img_s": round(count * epochs / fit_s, 1),
            "val_miou_per_epoch": [round(float(v), 4) for v in history.history.get("val_miou", [])],
            "val_miou": round(scores["miou"], 4), "val_pixel_accuracy": round(scores["pixel_accuracy"], 4),
            "peak_gib": peak_gib()}


def classifier_pair(ours, theirs, preprocess):
    from kerasseg import models

    batch, size, steps = (4, 64, 2) if SMALL else (128, 224, 20)
    rng = np.random.default_rng(0)
    x = rng.uniform(0, 255, (batch, size, size, 3)).astype("float32")
    y = rng.integers(0, 1000, (batch,)).astype("int32")
    theirs_x = preprocess(x)  # (keras.applications' models take their preprocessed values; ours, pixels)
    x, theirs_x, y = (jax.device_put(a) for a in (x, theirs_x, y))
    row = side_by_side(
        lambda: models.create_model(ours, weights=None, input_shape=(size, size, 3), classifier_activation=None),
        lambda: getattr(keras.applications, theirs)(weights=None, input_shape=(size, size, 3),
                                                   classifier_activation=None),
        x, theirs_x, y, steps, True)
    return {"ours": ours, "theirs": f"keras.applications.{theirs}", **row}


def part_dlv3():
    import keras_hub

    from kerasseg import models

    batch, size, steps = (2, 64, 2) if SMALL else (16, 512, 10)
    size, batch = int(os.environ.get("DLV3_SIZE", size)), int(os.environ.get("DLV3_BATCH", batch))
    steps, classes = int(os.environ.get("STEPS", steps)), 21

    def keras_hubs():
        encoder = keras_hub.models.ResNetBackbone(
            input_conv_filters=[64], input_conv_kernel_sizes=[7], stackwise_num_filters=[64, 128, 256, 512],
            stackwise_num_blocks=[3, 4, 6, 3], stackwise_num_strides=[1, 2, 2, 2], block_type="bottleneck_block",
            use_pre_activation=False, image_shape=(size, size, 3))
        backbone = keras_hub.models.DeepLabV3Backbone(image_encoder=encoder, low_level_feature_key="P2",
                                                      spatial_pyramid_pooling_key="P5", upsampling_size=8,
                                                      dilation_rates=[6, 12, 18])
        task = keras_hub.models.DeepLabV3ImageSegmenter(backbone=backbone, num_classes=classes)
        pixels = keras.Input((size, size, 3))
        return keras.Model(pixels, task(pixels))

    rng = np.random.default_rng(0)
    x = rng.uniform(0, 255, (batch, size, size, 3)).astype("float32")
    y = rng.integers(0, classes, (batch, size, size)).astype("int32")
    x, theirs_x, y = (jax.device_put(a) for a in (x, x / 255.0, y))
    theirs = measured("theirs", keras_hubs, theirs_x, y, steps, True)  # (once, against both of ours)
    rows = {}
    for stride, rates in ((16, None), (32, (6, 12, 18))):
        rows[f"output_stride_{stride}"] = side_by_side(
            lambda stride=stride, rates=rates: models.deeplab_v3_plus(
                backbone="resnet50", classes=classes, input_shape=(size, size, 3), output_stride=stride,
                aspp_rates=rates),
            keras_hubs, x, theirs_x, y, steps, True, theirs)
    return {"ours": "deeplab_v3_plus(resnet50)", "theirs": "keras_hub DeepLabV3ImageSegmenter(ResNet50, P5 "
            "undilated, rates 6/12/18)", **rows}


PART_FUNCTIONS = {
    "fit": part_fit,
    "r50": lambda: classifier_pair("resnet50", "ResNet50",
                                   lambda x: keras.applications.resnet.preprocess_input(x.copy())),
    "effb0": lambda: classifier_pair("efficientnet_b0", "EfficientNetB0", lambda x: x),
    "mnv2": lambda: classifier_pair("mobilenet_v2", "MobileNetV2", lambda x: x / 127.5 - 1),
    "dlv3": part_dlv3,
}


def main():
    unknown = [p for p in PARTS if p not in PART_FUNCTIONS]
    if unknown:
        raise SystemExit(f"unknown PARTS {unknown}; accepted: {', '.join(PART_FUNCTIONS)}")
    policy = os.environ.get("POLICY") or ("float32" if SMALL else "mixed_bfloat16")
    log("environment", results["env"], "policy", policy)
    save()
    started = time.perf_counter()
    for name in PARTS:
        if time.perf_counter() - started > DEADLINE_S:
            results["parts"][name] = {"skipped": f"deadline: {DEADLINE_S:g} s had passed"}
            save()
            continue
        keras.mixed_precision.set_global_policy("float32" if name == "fit" else policy)  # (fit: float32)
        part_started = time.perf_counter()
        log("part", name)
        try:
            results["parts"][name] = PART_FUNCTIONS[name]()
        except Exception as error:  # (a part that fails is recorded, and the others still run)
            results["parts"][name] = {"error": f"{type(error).__name__}: {error}"[:2000],
                                      "trace": traceback.format_exc()[-3000:]}
        results["parts"][name]["wall_s"] = round(time.perf_counter() - part_started, 1)
        log("part", name, json.dumps(results["parts"][name])[:1500])
        save()
        keras.backend.clear_session()


if __name__ == "__main__":
    main()
