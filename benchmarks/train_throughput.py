"""Training throughput (images/s of model.fit) of our builders next to keras.applications' same networks.

    python benchmarks/train_throughput.py [--batch-size 32] [--image-size 224] [--steps 30] [--mixed-precision]
    KERAS_BACKEND=jax python benchmarks/train_throughput.py --mixed-precision     # on a GPU

Every model trains on the same random batch held on the device (so the input
pipeline is not what is measured) with Adam; the figure is images per second
over --steps steps after a compiled warm-up epoch, on whatever device the
backend finds. Segmenters (no keras.applications counterpart) are listed
alone, at --segmenter-size.
"""

import argparse
import os
import sys
import time

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

PAIRS = (  # (our registered name, keras.applications class name)
    ("resnet50", "ResNet50"),
    ("mobilenet_v2", "MobileNetV2"),
    ("efficientnet_b0", "EfficientNetB0"),
    ("densenet121", "DenseNet121"),
    ("vgg16", "VGG16"),
)
SEGMENTERS = ("unet", "unet_edge", "deeplab_v3_plus", "fcn8s")


def images_per_second(model, size, classes, batch, steps, segmentation):
    import keras
    import numpy as np

    rng = np.random.default_rng(0)
    x = rng.uniform(0, 255, (batch, size, size, 3)).astype("float32")
    y = rng.integers(0, classes, (batch, size, size) if segmentation else (batch,)).astype("int32")
    # segmenters return logits; classifiers (ours and keras.applications') end in softmax
    loss = keras.losses.SparseCategoricalCrossentropy(from_logits=segmentation)
    model.compile(optimizer=keras.optimizers.Adam(1e-4), loss=loss, jit_compile="auto")
    model.train_on_batch(x, y)  # compile / trace
    start = time.perf_counter()
    for _ in range(steps):
        model.train_on_batch(x, y)
    return batch * steps / (time.perf_counter() - start)


def main():
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--batch-size", type=int, default=32)
    parser.add_argument("--image-size", type=int, default=224)
    parser.add_argument("--segmenter-size", type=int, default=256)
    parser.add_argument("--steps", type=int, default=30)
    parser.add_argument("--mixed-precision", action="store_true")
    parser.add_argument("--only", nargs="*", help="names to run (ours or keras.applications')")
    args = parser.parse_args()

    import keras

    from kerasseg import models

    if args.mixed_precision:
        keras.mixed_precision.set_global_policy("mixed_bfloat16")
    devices = keras.distribution.list_devices()
    print(f"backend {keras.backend.backend()}, devices {devices}, batch {args.batch_size}, "
          f"policy {keras.mixed_precision.global_policy().name}")
    rows = []
    for ours, theirs in PAIRS:
        if args.only and ours not in args.only and theirs not in args.only:
            continue
        shape = (args.image_size, args.image_size, 3)
        ours_ips = images_per_second(models.create_model(ours, weights=None, input_shape=shape), args.image_size,
                                     1000, args.batch_size, args.steps, False)
        keras.backend.clear_session()
        reference = getattr(keras.applications, theirs)(weights=None, input_shape=shape)
        theirs_ips = images_per_second(reference, args.image_size, 1000, args.batch_size, args.steps, False)
        keras.backend.clear_session()
        rows.append((ours, f"{ours_ips:.0f}", theirs, f"{theirs_ips:.0f}", f"{ours_ips / theirs_ips:.2f}"))
        print(rows[-1], flush=True)
    for name in SEGMENTERS:
        if args.only and name not in args.only:
            continue
        size = args.segmenter_size
        model = models.create_model(name, classes=21, input_shape=(size, size, 3))
        ips = images_per_second(model, size, 21, args.batch_size, args.steps, True)
        keras.backend.clear_session()
        rows.append((f"{name} ({size}x{size}, 21 classes)", f"{ips:.0f}", "-", "-", "-"))
        print(rows[-1], flush=True)
    print("\n| ours | img/s | keras.applications | img/s | ratio |\n|---|---|---|---|---|")
    for row in rows:
        print("| " + " | ".join(row) + " |")


if __name__ == "__main__":
    main()
