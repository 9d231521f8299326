"""What the command lines after training share: a model file's run turned into values.

evaluate, predict and the exporters take a model path. Beside it, a run directory (kerasseg.rundir) may
record the model's dataset, split lists and training size; the model itself may carry its training size
(kerasseg.describe). These helpers resolve them, with the command's flags, into the values the library's
functions take; their errors are worded in those flags (UsageError), which is why they live here and not
in the library.
"""

from dataclasses import dataclass

from kerasseg import cli
from kerasseg.rundir import Run


@dataclass
class DataView:
    """A dataset as a later stage sees it: a spec, and the run's own split lists when it is the run's data."""

    spec: str
    data_dir: str = None
    record: Run = None  # (rundir.Run)
    classes: int = None  # for a dataset that does not name its classes (a folder without labels.txt)
    binary_masks: bool = False  # a folder's masks are black-and-white pictures (kerasseg.data.reading.read_mask)

    def _arguments(self, split, count):
        keys = self.record.split_keys(split) if self.record else None
        # a run's class count is its model's channels: one per class, or 1 for a binary segmenter's two
        classes = (1 if self.record.arguments.get("classes") == 1 else len(self.record.class_names)) \
            if self.record else self.classes
        return {"data_dir": self.data_dir, "classes": classes, "keys": None if keys is None else keys[:count],
                "binary_masks": self.binary_masks}

    def load_split(self, split, image_size, count=None):
        """`count` examples of `split` at `image_size` (a kerasseg.data.Split)."""
        from kerasseg import data

        return data.load_split(self.spec, split, image_size, count, **self._arguments(split, count))

    def list_examples(self, split, image_size=None, count=None):
        """The examples of `split` (listed, not decoded) and the class names."""
        from kerasseg import data

        return data.list_examples(self.spec, split, image_size, count, **self._arguments(split, count))

    def scan(self, examples, num_classes):
        """The scan of `examples` (kerasseg.data.scan): the run's recorded one for the files unchanged since."""
        from kerasseg.data.scan import Scan, scan

        return scan(examples, num_classes, Scan.load(self.record.directory) if self.record else None)


def image_size(model, model_path, requested=None):
    """The fixed (height, width) to export or predict at.

    In order: --image-size; the model's own fixed input size; the training
    size it carries (kerasseg.describe); the training size in the run's
    record (run.json beside the model).
    """
    from kerasseg.described import description

    if requested:
        return tuple(requested)
    height, width = model.inputs[0].shape[1:3]
    if height and width:
        return (height, width)
    if description(model).image_size:
        return description(model).image_size
    record = Run.of_model(model_path)
    if record is not None:
        return record.image_size
    raise cli.UsageError(
        f"{model_path} accepts any image size and neither it nor a run record (run.json) beside it gives the "
        "training size: "
        "pass --image-size N or HxW"
    )


def data_view(model_path, dataset=None, data_dir=None, classes=None, binary_masks=False):
    """The data a stage after training uses for `model_path`: `dataset` when given (with the run's split
    lists if it names the run's dataset, however spelled), else the run's record; neither is a UsageError,
    never `shapes`."""
    from kerasseg import data

    record = Run.of_model(model_path)
    if dataset is None:
        if record is None:
            raise cli.UsageError(f"{model_path} has no run record (run.json beside it, written by python -m "
                                 f"kerasseg.train), so its data is unknown: pass --dataset SPEC "
                                 f"({', '.join(data.ACCEPTED_SPECS)})")
        dataset = record.dataset
    try:
        spec = data.resolve_spec(dataset)
    except ValueError as error:
        raise cli.UsageError(str(error)) from None
    if record is not None and spec == data.resolve_spec(record.dataset):
        return DataView(spec, data_dir or record.arguments.get("data_dir"), record,
                        binary_masks=binary_masks or record.arguments.get("binary_masks", False))
    return DataView(spec, data_dir, classes=classes, binary_masks=binary_masks)
