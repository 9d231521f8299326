"""One way from a model file to every later stage: `stage(model, ...)` resolves it once.

evaluate, predict and every exporter start from a model: a `.keras` path
(usually a run's `DIR/model.keras`) or a model in memory. Beside a path, a
run directory (kerasseg.training.rundir) may record the model's dataset, split lists,
class names and training size; the model itself may carry its class names
and training size (kerasseg.describe). `stage` loads the model once, reads
the run's record once, and applies one rule for each fact:

- the image size: the one asked for; else the model's fixed input size; else
  the training size the model carries; else the run's; else an error;
- the class names: the run's; else the model's; else the dataset's;
- the data: the dataset asked for (with the run's split lists when it is the
  run's dataset, however spelled); else the run's; never a silent `shapes`.

Where the fix is a flag (no size, no data known), its error is worded in the
commands' flags (UsageError), which is why it lives with the command-line
wiring; a bad value (a dataset spec, a file) is an InputError worded in
values. A Stage's `file` passed to an exporter as its model is the model
loaded once, reported under its file's name.
"""

from dataclasses import dataclass

from kerasseg import cli, files
from kerasseg.errors import InputError
from kerasseg.training.rundir import Run


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

    def pairs(self, split, count=None, image_size=None):
        """`count` examples of `split`, decoded at their own sizes (a kerasseg.data.Pairs; `shapes` is made at
        `image_size`)."""
        from kerasseg import data

        pairs, names = data.load_examples(self.spec, split, image_size, count, **self._arguments(split, count))
        return data.Pairs(pairs, names, self.spec)

    def list_examples(self, split, image_size=None, count=None):
        """The examples of `split` (listed, not decoded) and the class names."""
        from kerasseg import data

        return data.list_examples(self.spec, split, image_size, count, **self._arguments(split, count))

    def scan(self, examples, num_classes):
        """The scan of `examples` (kerasseg.data.scan): the run's recorded one for the files unchanged since."""
        from kerasseg.data.scan import Scan, scan

        return scan(examples, num_classes, Scan.load(self.record.directory) if self.record else None)


@dataclass
class Stage:
    """A model resolved for a later stage (see the module docstring): the model, its file, its run's record,
    the size to work at, its class names, and the data it defaults to."""

    model: object  # a keras.Model, loaded once
    path: str = None  # the .keras file it was loaded from
    record: Run = None
    image_size: tuple = None  # None only where it was not needed (evaluate and predict at native sizes)
    class_names: tuple = None
    view: DataView = None  # None: no dataset given and no run recorded one (an error only when data is read)

    @property
    def name(self):
        return self.path or self.model.name

    @property
    def file(self):
        """The model as an exporter takes it loaded: reported under its file's name (kerasseg.files.ModelFile)."""
        return files.ModelFile(self.model, self.path) if self.path else self.model

    @property
    def channels(self):
        return self.model.outputs[0].shape[-1]

    def data(self, dataset=None, classes=None):
        """The DataView of `dataset` (with the run's split lists if it is the run's dataset), else this stage's;
        a UsageError when neither is known. `classes`: the class count of a dataset that does not name its
        classes (a folder without labels.txt: evaluate gives the model's)."""
        if dataset is None and classes is not None and self.view is not None:
            dataset = self.view.spec
        if dataset is None:
            if self.view is None:
                raise _unknown_data(self.name)
            return self.view
        return _view(dataset, self.record, self.view.data_dir if self.view else None, classes,
                     self.view.binary_masks if self.view else False)

    def split(self, split, count=None, dataset=None):
        """`count` examples of `split` of `dataset` (default: this stage's data) at the stage's image size."""
        return self.data(dataset).load_split(split, self.image_size, count)


def _view(dataset, record, data_dir=None, classes=None, binary_masks=False):
    from kerasseg import data

    try:
        spec = data.resolve_spec(dataset)
    except ValueError as error:  # (worded in values: the spec)
        raise InputError(str(error)) from None
    if record is not None and spec == data.resolve_spec(record.dataset):
        return DataView(spec, data_dir or record.arguments.get("data_dir"), record,
                        binary_masks=binary_masks or record.arguments.get("binary_masks", False))
    return DataView(spec, data_dir, classes=classes, binary_masks=binary_masks)


def size_of(model, requested=None, record=None, name=None, required=True):
    """The (height, width) to work at, by the one rule (the module docstring): a UsageError when nothing
    gives one and `required`, else None."""
    from kerasseg.described import working_size

    size = working_size(model, requested, record.image_size if record is not None else None)
    if size or not required:
        return size
    raise cli.UsageError(f"{name or model.name} accepts any image size and neither it nor a run record (run.json "
                         "beside it) gives the training size: pass --image-size N or HxW")


def stage(model, image_size=None, dataset=None, data_dir=None, binary_masks=False, size_required=True):
    """The Stage of `model` (a .keras path, or a keras.Model) for the options a command was given."""
    import os

    from kerasseg.described import description

    path = None
    if isinstance(model, (str, os.PathLike)):
        path = os.fspath(model)
        model = files.load_keras_model(path)
    record = Run.of_model(path) if path else None
    described = description(model)
    if record is not None and not (described.image_size and described.resize):  # (a model saved before it said)
        from kerasseg.described import describe
        from kerasseg.geometry import resize_rule

        model = describe(model, image_size=described.image_size or record.image_size,
                         resize=described.resize or resize_rule(record.arguments.get("augment")))
    size = size_of(model, image_size, record, path, size_required)
    view = None
    if dataset is not None or record is not None:
        view = _view(dataset or record.dataset, record, data_dir, None, binary_masks)
    names = record.class_names if record is not None else description(model).class_names
    return Stage(model, path, record, size, names, view)


def data_view(model_path, dataset=None, data_dir=None, classes=None, binary_masks=False):
    """The data a stage after training uses for `model_path` (without loading the model): `dataset` when given
    (with the run's split lists if it names the run's dataset, however spelled), else the run's record;
    neither is a UsageError, never `shapes`."""
    record = Run.of_model(model_path)
    if dataset is None and record is None:
        raise _unknown_data(model_path)
    return _view(dataset or record.dataset, record, data_dir, classes, binary_masks)


def _unknown_data(name):
    from kerasseg import data

    return cli.UsageError(f"{name} has no run record (run.json beside it, written by python -m kerasseg.train), so "
                          f"its data is unknown: pass --dataset SPEC ({', '.join(data.ACCEPTED_SPECS)})")
