"""Segmenters kerasseg did not build, exported two ways: Keras's own `model.export(format="litert")` and
kerasseg's checked export (`export.tflite.export`), side by side.

    python benchmarks/foreign_models.py [--size 64] [--epochs 6] [--output benchmarks/foreign_models.json]

Each model is small (keras-hub's DeepLabV3 on a two-stage ResNet, SegFormer on a two-stage MiT, a user's own
functional U-Net-like model with a bilinear UpSampling2D, kerasseg's unet_edge), trained --epochs on the same
synthetic task (bright discs on noise: 2 classes), then exported. Keras's file, when there is one, is run in
LiteRT here at the same size and compared with the Keras model as kerasseg compares its own (pixel agreement,
max |logit error|, mIoU of both on the held-out images): Keras itself checks nothing. Prints the Markdown
table for RESULTS.md and writes OUTPUT.
"""

import argparse
import json
import os
import sys
import tempfile

import numpy as np

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, ROOT)


def bright_discs(count, size, seed):
    """Pixels (N, size, size, 3) uint8 with bright discs on noise, and the discs' masks."""
    rng = np.random.default_rng(seed)
    yy, xx = np.mgrid[:size, :size]
    images = rng.integers(0, 120, (count, size, size, 3)).astype(np.uint8)
    masks = np.zeros((count, size, size), np.uint8)
    for image, mask in zip(images, masks):
        radius = int(rng.integers(size // 8, size // 4))
        cy, cx = rng.integers(radius, size - radius, 2).tolist()
        mask[(yy - cy) ** 2 + (xx - cx) ** 2 <= radius * radius] = 1
        image[mask == 1] = rng.integers(150, 256, 3)
    return images, masks


def models(size):
    """{label: an untrained model}, each taking pixels in [0, 255] and giving per-pixel logits."""
    import keras
    import keras_hub

    from kerasseg import models as ours

    resnet = keras_hub.models.ResNetBackbone(
        input_conv_filters=[64], input_conv_kernel_sizes=[7], stackwise_num_filters=[64, 32],
        stackwise_num_blocks=[1, 1], stackwise_num_strides=[1, 2], block_type="basic_block")
    deeplab = keras_hub.models.DeepLabV3ImageSegmenter(keras_hub.models.DeepLabV3Backbone(
        image_encoder=resnet, spatial_pyramid_pooling_key="P3", upsampling_size=2, dilation_rates=[2, 4],
        low_level_feature_key="P2", projection_filters=8), num_classes=2)
    mit = keras_hub.models.MiTBackbone(
        layerwise_depths=[1, 1], num_layers=2, layerwise_num_heads=[1, 2], layerwise_sr_ratios=[2, 1],
        max_drop_path_rate=0.0, layerwise_patch_sizes=[7, 3], layerwise_strides=[4, 2], hidden_dims=[8, 16],
        image_shape=(size, size, 3))
    segformer = keras_hub.models.SegFormerImageSegmenter(
        keras_hub.models.SegFormerBackbone(image_encoder=mit, projection_filters=8), num_classes=2)
    pixels = keras.Input((None, None, 3))
    x = keras.layers.Rescaling(1 / 127.5, offset=-1)(pixels)
    skip = keras.layers.Conv2D(8, 3, padding="same", activation="relu")(x)
    x = keras.layers.Conv2D(16, 3, strides=2, padding="same", activation="relu")(skip)
    x = keras.layers.Concatenate()([keras.layers.UpSampling2D(interpolation="bilinear")(x), skip])
    functional = keras.Model(pixels, keras.layers.Conv2D(2, 1)(x), name="users_functional")
    return {"keras-hub DeepLabV3 (ResNet)": deeplab, "keras-hub SegFormer (MiT)": segformer,
            "a user's functional model (bilinear UpSampling2D)": functional,
            "kerasseg unet_edge": ours.unet_edge(classes=2)}


def keras_export(model, path, held_out):
    """Keras's own LiteRT export, then its file run here: {'error': ...} or the agreement figures."""
    from ai_edge_litert.interpreter import Interpreter

    from export import report as reports

    try:
        model.export(path, format="litert", verbose=False)
    except Exception as error:  # what a user of model.export meets
        return {"error": f"{type(error).__name__}: {str(error).strip().splitlines()[0][:160]}"}
    images, masks = held_out
    interpreter = Interpreter(model_path=path)
    source = interpreter.get_input_details()[0]
    if list(source["shape"][1:3]) != list(images.shape[1:3]):
        interpreter.resize_tensor_input(source["index"], [1, *images.shape[1:]])
    interpreter.allocate_tensors()
    source, sink = interpreter.get_input_details()[0], interpreter.get_output_details()[0]
    found = []
    for image in images:
        interpreter.set_tensor(source["index"], image[None].astype(np.float32))
        interpreter.invoke()
        found.append(interpreter.get_tensor(sink["index"]))
    exported = np.concatenate(found)
    reference = np.asarray(reports.keras_function(model, images.shape[1:3])(images.astype(np.float32)))
    from kerasseg import metrics

    miou = [metrics.scores(metrics.confusion_matrix(masks, x.argmax(-1), 2), ("background", "disc"))["miou"]
            for x in (reference, exported)]
    return {"pixel_agreement": float((reference.argmax(-1) == exported.argmax(-1)).mean()),
            "max_abs_error": float(np.abs(reference - exported).max()), "miou_reference": miou[0],
            "miou_exported": miou[1], "size_bytes": os.path.getsize(path)}


def main():
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--size", type=int, default=64)
    parser.add_argument("--epochs", type=int, default=6)
    parser.add_argument("--output", default=os.path.join(ROOT, "benchmarks", "foreign_models.json"))
    args = parser.parse_args()
    import keras

    from export import tflite

    keras.utils.set_random_seed(0)
    images, masks = bright_discs(256, args.size, seed=0)
    held_out = bright_discs(32, args.size, seed=1)
    results = {}
    for label, model in models(args.size).items():
        print(f"== {label}", flush=True)
        model.compile(optimizer=keras.optimizers.Adam(1e-2), metrics=[],
                      loss=keras.losses.SparseCategoricalCrossentropy(from_logits=True))
        model.fit(images, masks, epochs=args.epochs, batch_size=16, verbose=2)
        with tempfile.TemporaryDirectory() as tmp:
            row = {"keras_litert": keras_export(model, os.path.join(tmp, "keras.tflite"), held_out)}
            for mode in ("float32", "int8"):
                report = tflite.export(model, os.path.join(tmp, f"{mode}.tflite"), quantize=mode,
                                       calibration=images[:64], validation=held_out,
                                       image_size=(args.size, args.size))
                row[f"kerasseg_{mode}"] = {key: report.get(key) for key in (
                    "passed", "pixel_agreement", "max_abs_error", "miou_reference", "miou_exported", "size_bytes")}
        results[label] = row
        print(json.dumps(row, indent=1), flush=True)
    with open(args.output, "w") as f:
        json.dump({"size": args.size, "epochs": args.epochs, "results": results}, f, indent=2)
    print(table(results, args.size))


def table(results, size):
    def cell(entry):
        if "error" in entry:
            return f"fails: `{entry['error'][:90]}`"
        return (f"{entry['pixel_agreement']:.5f} / {entry['max_abs_error']:.1e} / "
                f"{entry['miou_reference']:.3f} -> {entry['miou_exported']:.3f}")

    lines = [f"| model ({size} px) | Keras `model.export(format=\"litert\")`, then run in LiteRT | kerasseg float32 "
             "| kerasseg int8 |", "| --- | --- | --- | --- |"]
    for label, row in results.items():
        lines.append(f"| {label} | {cell(row['keras_litert'])} | {cell(row['kerasseg_float32'])} | "
                     f"{cell(row['kerasseg_int8'])} |")
    return "\n".join(lines) + "\n\ncells: pixel agreement / max |logit error| / mIoU Keras -> file"


if __name__ == "__main__":
    main()
