"""Pictures of masks: class colours, overlays, and image grids written atomically as PNG."""

import numpy as np

from kerasseg import files


def palette(count=256):
    """Pascal VOC's colour map (class 0 black, 1 dark red, 2 green, ...); the ignore label 255 is white."""
    colours = np.zeros((count, 3), np.uint8)
    for index in range(count):
        c, r, g, b = index, 0, 0, 0
        for bit in range(8):
            r |= ((c >> 0) & 1) << (7 - bit)
            g |= ((c >> 1) & 1) << (7 - bit)
            b |= ((c >> 2) & 1) << (7 - bit)
            c >>= 3
        colours[index] = (r, g, b)
    if count > 255:
        colours[255] = (255, 255, 255)
    return colours


def png_bytes(array):
    """`array` (H, W) or (H, W, 3) uint8 encoded as PNG."""
    import io

    from PIL import Image

    buffer = io.BytesIO()
    Image.fromarray(array).save(buffer, format="PNG")
    return buffer.getvalue()


def colorize(mask):
    """An (H, W) class mask as an (H, W, 3) uint8 picture."""
    return palette()[np.asarray(mask, np.uint8)]


def overlay(image, mask, alpha=0.5):
    """`image` (H, W, 3) with the class colours of `mask` blended in (background left as it is)."""
    image = np.asarray(image, np.float32)
    colours = colorize(mask).astype(np.float32)
    blend = np.where((np.asarray(mask) > 0)[..., None], (1 - alpha) * image + alpha * colours, image)
    return np.clip(blend, 0, 255).astype(np.uint8)


def differences(image, first, second):
    """Where two masks disagree: those pixels red on a faded grey copy of `image`."""
    grey = np.asarray(image, np.float32).mean(-1, keepdims=True).repeat(3, -1) * 0.4 + 100
    grey[np.asarray(first) != np.asarray(second)] = (230, 25, 25)
    return grey.astype(np.uint8)


def save_grid(rows, titles, path, caption=None):
    """Saves `rows` (lists of (H, W, 3) pictures, one column per title) as one PNG at `path`."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(len(rows), len(titles), figsize=(2.4 * len(titles), 2.4 * len(rows) + 0.4),
                             squeeze=False)
    for r, row in enumerate(rows):
        for c, picture in enumerate(row):
            axes[r][c].imshow(picture, interpolation="nearest")
            axes[r][c].set_xticks([])
            axes[r][c].set_yticks([])
            if r == 0:
                axes[r][c].set_title(titles[c], fontsize=9)
            if isinstance(caption, list) and c == 0:
                axes[r][c].set_ylabel(caption[r], fontsize=8)
    if isinstance(caption, str):
        fig.suptitle(caption, fontsize=10)
    fig.tight_layout()
    files.atomic_write(path, lambda tmp: fig.savefig(tmp, dpi=110, format="png"))
    plt.close(fig)


def save_curves(rows, path):
    """Loss and mIoU per epoch (train and validation) from history rows, as one PNG at `path`."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    epochs = [int(row["epoch"]) + 1 for row in rows]
    fig, axes = plt.subplots(1, 2, figsize=(9, 3.4))
    for ax, key, title in ((axes[0], "loss", "loss"), (axes[1], "miou", "mIoU")):
        for prefix, style in (("", "-"), ("val_", "--")):
            values = [row.get(prefix + key) for row in rows]
            if any(v is not None for v in values):
                ax.plot(epochs, values, style, marker="o", markersize=3,
                        label="validation" if prefix else "training")
        ax.set_xlabel("epoch")
        ax.set_title(title)
        ax.grid(alpha=0.3)
        ax.legend()
    fig.tight_layout()
    files.atomic_write(path, lambda tmp: fig.savefig(tmp, dpi=110, format="png"))
    plt.close(fig)
