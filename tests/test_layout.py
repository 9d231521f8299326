"""The package's shape: imports flow one way, a new family is one new file, the code is lint-clean, and the
README stays a short front page whose links, and those of docs/ and benchmarks/RESULTS.md, all resolve."""

import ast
import os
import re
import shutil
import subprocess
import sys

from conftest import ROOT

PACKAGES = ("kerasseg", "export")


def _modules(root):
    found = {}
    for package in PACKAGES:
        for directory, _, names in os.walk(os.path.join(root, package)):
            for file_name in names:
                if file_name.endswith(".py"):
                    path = os.path.join(directory, file_name)
                    found[os.path.relpath(path, root)[:-3].replace(os.sep, ".").removesuffix(".__init__")] = path
    return found


def import_graph(root=ROOT):
    """{module: modules of kerasseg / export it imports}, lazy imports inside functions included."""
    modules, graph = _modules(root), {}
    for name, path in modules.items():
        package = name if path.endswith("__init__.py") else name.rpartition(".")[0]
        deps = set()
        for node in ast.walk(ast.parse(open(path).read())):
            if isinstance(node, ast.Call) and getattr(node.func, "attr", getattr(node.func, "id", "")) == "lazy_import":
                # (kerasseg.cli.lazy_import("a.b", ...): imports too, only executed later)
                deps.update(arg.value for arg in node.args if isinstance(arg, ast.Constant) and arg.value in modules)
            if isinstance(node, ast.Import):
                deps.update(alias.name for alias in node.names if alias.name in modules)
            elif isinstance(node, ast.ImportFrom):
                base = node.module or ""
                if node.level:
                    parts = package.split(".")[: len(package.split(".")) - node.level + 1]
                    base = ".".join(parts + ([node.module] if node.module else []))
                for alias in node.names:
                    full = f"{base}.{alias.name}"
                    deps.add(full if full in modules else base)
        graph[name] = (deps & set(modules)) - {name}
    return graph


def cycles(graph):
    """The strongly connected components of more than one module (Tarjan)."""
    index, low, stack, on_stack, found = {}, {}, [], set(), []

    def visit(v):
        index[v] = low[v] = len(index)
        stack.append(v)
        on_stack.add(v)
        for w in graph[v]:
            if w not in index:
                visit(w)
                low[v] = min(low[v], low[w])
            elif w in on_stack:
                low[v] = min(low[v], index[w])
        if low[v] == index[v]:
            component = []
            while not component or component[-1] != v:
                component.append(stack.pop())
                on_stack.discard(component[-1])
            if len(component) > 1:
                found.append(sorted(component))

    for v in graph:
        if v not in index:
            visit(v)
    return found


def test_no_import_cycle_in_kerasseg_or_export():
    assert cycles(import_graph()) == []


def test_the_cycle_check_finds_a_cycle():
    graph = {"export.common": {"export.agreement"}, "export.agreement": {"export.tflite"},
             "export.tflite": {"export.common"}, "kerasseg.cli": set()}
    assert cycles(graph) == [["export.agreement", "export.common", "export.tflite"]]


def test_export_is_layered_runtimes_report_pipeline_formats():
    graph = import_graph()
    order = ["export.runtimes", "export.report", "export.pipeline", "export.commands", "export.formats",
             "export.ranges", "export.edgetpu", "export.tflite", "export.onnx", "export.android", "export.agreement"]
    for i, module in enumerate(order):
        upward = {dep for dep in graph[module] if dep in order[i + 1:]}
        assert not upward, f"{module} imports {upward}, a layer above it"


# the command lines' words: flags, the run directory's record, and kerasseg.resolve, which turns it into values
WIRING = ("UsageError", "rundir", "resolve")


def wiring_outside_main(source, words=WIRING, functions=("main",)):
    """Lines of `source` that name one of `words` (UsageError, kerasseg.training.rundir, kerasseg.resolve) outside a
    function called main (or another of `functions`)."""
    tree = ast.parse(source)
    inside = {id(node) for function in ast.walk(tree) if isinstance(function, ast.FunctionDef)
              and function.name in functions for node in ast.walk(function)}
    found = set()
    for node in ast.walk(tree):
        if isinstance(node, (ast.Import, ast.ImportFrom)):
            names = [alias.name for alias in node.names] + [getattr(node, "module", None) or ""]
        else:
            names = [node.id] if isinstance(node, ast.Name) else [node.attr] if isinstance(node, ast.Attribute) else []
        names = {name.rpartition(".")[2] for name in names}
        if id(node) not in inside and set(names) & set(words):
            found.add(node.lineno)
    return sorted(found)


def test_only_the_command_lines_read_a_run_directory_or_word_errors_in_flags():
    """The export functions work on values (a model, arrays): a run's record is resolved, and errors are
    worded in flags, only by the command-line wiring (export.commands, the commands' main)."""
    commands = {"export.commands", "export.agreement"}  # (agreement is a command line and nothing else)
    for name, path in _modules(ROOT).items():
        if name.startswith("export.") and name not in commands:
            assert wiring_outside_main(open(path).read()) == [], f"{name} reaches the command-line wiring"


def test_kerasseg_words_its_errors_in_values_outside_its_command_lines():
    """Library errors are ValueErrors worded in values: only the commands' main and parse_args, and the
    wiring modules (kerasseg.cli, kerasseg.resolve), word them in flags."""
    for name, path in _modules(ROOT).items():
        if name.startswith("kerasseg.") and name not in ("kerasseg.cli", "kerasseg.resolve"):
            found = wiring_outside_main(open(path).read(), ("UsageError",), ("main", "parse_args"))
            assert found == [], f"{name} raises UsageError outside its command line, lines {found}"


def test_the_wiring_check_finds_wiring():
    source = ("from kerasseg import rundir\nfrom kerasseg.cli import UsageError\n\n"
              "def export(path):\n    raise cli.UsageError(path)\n\n"
              "def main():\n    from kerasseg import rundir\n    raise UsageError(rundir.x)\n")
    assert wiring_outside_main(source) == [1, 2, 5]



NEW_CLASSIFIER = '''
from keras import layers

from kerasseg.layers import PixelNormalization, image_input
from kerasseg.models import backbone
from kerasseg.models.registry import Encoder, register


@register("classification", encoder=Encoder({"P1": 4, "P2": 4, "P3": 4, "P4": 4, "P5": 8}))
def toy_net(include_top=True, weights=None, input_tensor=None, input_shape=None, pooling=None, classes=10,
            classifier_activation="softmax", features_only=False, output_stride=32, name="toy_net"):
    inputs = backbone.classifier_input(input_shape, input_tensor, weights, min_size=32)
    x, pyramid = PixelNormalization("unit")(inputs), {}
    for level, (stride, dilation) in enumerate(backbone.stage_strides(output_stride), start=1):
        x = layers.Conv2D(8 if level == 5 else 4, 3, strides=stride, dilation_rate=dilation, padding="same",
                          activation="relu")(x)
        pyramid[f"P{level}"] = x
    return backbone.finish(inputs, x, pyramid, include_top=include_top, pooling=pooling, classes=classes,
                           classifier_activation=classifier_activation, features_only=features_only, name=name)
'''

NEW_SEGMENTER = '''
from kerasseg.layers import image_input
from kerasseg.models.backbone import encoder_pyramid
from kerasseg.models.heads import segmenter
from kerasseg.models.registry import register


@register("segmentation")
def toy_segmenter(classes=3, backbone="toy_net", input_shape=None, activation=None, name="toy_segmenter"):
    inputs = image_input(input_shape)
    return segmenter(inputs, encoder_pyramid(inputs, backbone)["P3"], classes, activation, name=name)
'''


def test_a_new_classifier_and_a_new_segmenter_are_one_file_each(tmp_path):
    """In a copy of the package: drop the two files in, edit nothing else, and both are built by name."""
    shutil.copytree(os.path.join(ROOT, "kerasseg"), tmp_path / "kerasseg",
                    ignore=shutil.ignore_patterns("__pycache__"))
    (tmp_path / "kerasseg" / "models" / "classifiers" / "toy.py").write_text(NEW_CLASSIFIER)
    (tmp_path / "kerasseg" / "models" / "segmenters" / "toy_head.py").write_text(NEW_SEGMENTER)
    script = (
        "import numpy as np\n"
        "from kerasseg import models\n"
        "assert 'toy_net' in models.list_models(encoder=True) and 'toy_net' in models.__all__\n"
        "model = models.toy_segmenter(classes=5)\n"
        "print(models.toy_net().output_shape, model(np.zeros((1, 40, 56, 3), 'float32')).shape)\n"
        "print(models.deeplab_v3_plus(backbone='toy_net', classes=2, aspp_filters=8).output_shape)\n"
    )
    run = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, cwd=tmp_path,
                         env={**os.environ, "PYTHONPATH": str(tmp_path)}, timeout=300)
    assert run.returncode == 0, run.stderr[-2000:]
    assert run.stdout.split() == ["(None,", "10)", "(1,", "40,", "56,", "5)", "(None,", "None,", "None,", "2)"]


def test_ruff_finds_nothing_under_the_projects_configuration():
    """`ruff check` over the repository with pyproject.toml's [tool.ruff] (pyflakes, pycodestyle, bugbear). Ruff
    comes with the dev extras: where it is missing, this fails ("No module named ruff") rather than skips."""
    run = subprocess.run([sys.executable, "-m", "ruff", "check", "--no-cache", "--output-format", "concise", "."],
                         capture_output=True, text=True, cwd=ROOT, timeout=300)
    assert run.returncode == 0, (run.stdout + run.stderr)[-4000:]


# where the private APIs of TensorFlow, Keras, LiteRT and MediaPipe may be used: one module per library side
PRIVATE_HOMES = {"kerasseg/internals.py", "export/internals.py"}
PRIVATE_MODULES = ("keras.src", "tensorflow.python", "tensorflow.lite.python", "tensorflow.lite.tools",
                   "mediapipe.tasks.cc")


def _own_private_names(root=ROOT):
    """The names with one leading underscore that kerasseg, export, benchmarks and tests define themselves
    (functions, classes, attributes they assign): using one of those is not reaching into another library."""
    names = set()
    for folder in (*PACKAGES, "benchmarks", "tests"):
        for directory, _, files in os.walk(os.path.join(root, folder)):
            for file_name in files:
                if file_name.endswith(".py"):
                    for node in ast.walk(ast.parse(open(os.path.join(directory, file_name)).read())):
                        if isinstance(node, (ast.FunctionDef, ast.ClassDef)):
                            names.add(node.name)
                        elif isinstance(node, ast.Attribute) and isinstance(node.ctx, ast.Store):
                            names.add(node.attr)
                        elif isinstance(node, ast.Name) and isinstance(node.ctx, ast.Store):
                            names.add(node.id)
    return {name for name in names if name.startswith("_") and not name.startswith("__")}


def private_uses(source, own=frozenset()):
    """(line, what) for each use in `source` of another library's private API: an import from one of
    PRIVATE_MODULES (or its name in a string), an attribute with one leading underscore that the project does
    not define itself (`own`), read directly or by getattr / hasattr, and a module made up to stand in for
    one of another library's (types.ModuleType)."""
    found = []
    for node in ast.walk(ast.parse(source)):
        if isinstance(node, (ast.Import, ast.ImportFrom)):
            for name in [getattr(node, "module", None) or ""] + [alias.name for alias in node.names]:
                if name.startswith(PRIVATE_MODULES):
                    found.append((node.lineno, name))
        elif isinstance(node, ast.Attribute) and node.attr.startswith("_") and not node.attr.startswith("__") \
                and node.attr not in own:
            found.append((node.lineno, node.attr))
        elif isinstance(node, ast.Call) and getattr(node.func, "id", None) in ("getattr", "hasattr", "setattr") \
                and len(node.args) > 1 and isinstance(node.args[1], ast.Constant) \
                and str(node.args[1].value).startswith("_") and not str(node.args[1].value).startswith("__") \
                and node.args[1].value not in own:
            found.append((node.lineno, node.args[1].value))
        elif isinstance(node, ast.Constant) and isinstance(node.value, str) and node.value.startswith(PRIVATE_MODULES):
            found.append((node.lineno, node.value))
        elif isinstance(node, ast.Call) and ast.unparse(node.func) in ("types.ModuleType", "ModuleType"):
            found.append((node.lineno, "a module planted in place of another library's"))
    return found


def test_private_internals_of_tensorflow_keras_litert_live_in_their_two_modules():
    own = _own_private_names()
    for folder in (*PACKAGES, "benchmarks", "tests"):
        for directory, _, files in os.walk(os.path.join(ROOT, folder)):
            for file_name in files:
                path = os.path.join(directory, file_name)
                relative = os.path.relpath(path, ROOT)
                if file_name.endswith(".py") and relative not in PRIVATE_HOMES and relative != "tests/test_layout.py":
                    uses = private_uses(open(path).read(), own)
                    assert uses == [], f"{relative} uses private internals {uses}: move them to {PRIVATE_HOMES}"


def test_the_private_check_finds_each_kind_of_private_use():
    source = ("import sys\nfrom keras.src.backend.tensorflow import trainer\nlayers = model._flatten_layers()\n"
              "ok = model._own()\nhasattr(layer, '_nodes_by_depth')\n"
              "sys.modules['m.stub'] = types.ModuleType('m.stub')\n"
              "name = 'tensorflow.lite.python.convert'\nimport tensorflow.python.framework as f\n")
    assert sorted({line for line, _ in private_uses(source, own={"_own"})}) == [2, 3, 5, 6, 7, 8]
    for home in PRIVATE_HOMES:  # and the two homes hold what they are for
        assert private_uses(open(os.path.join(ROOT, home)).read(), _own_private_names())


# the README is the front page: what it does not hold lives in docs/ and benchmarks/RESULTS.md, linked from it
README_LIMIT = 15_000  # bytes
MARKDOWN_LINK = re.compile(r"\]\(<?([^)\s>]+)>?(?:\s+\"[^\"]*\")?\)")
FENCED_CODE = re.compile(r"^[ \t]*```.*?^[ \t]*```[^\n]*", re.S | re.M)


def markdown_pages(root=ROOT):
    """README.md, every docs/*.md and benchmarks/RESULTS.md."""
    docs = os.path.join(root, "docs")
    pages = sorted(os.path.join(docs, name) for name in os.listdir(docs) if name.endswith(".md"))
    return [os.path.join(root, "README.md"), *pages, os.path.join(root, "benchmarks", "RESULTS.md")]


def broken_links(path):
    """The relative Markdown links, `](target)` or `](target#anchor)`, in the file at `path` whose target does
    not exist, resolved from the file's own folder. Web links, `#anchor` alone and fenced code are skipped."""
    text = FENCED_CODE.sub("", open(path, encoding="utf-8").read())
    return [target for target in MARKDOWN_LINK.findall(text)
            if not target.startswith(("http://", "https://", "mailto:", "#"))
            and not os.path.exists(os.path.join(os.path.dirname(path), target.split("#")[0]))]


def test_the_readme_stays_at_most_15_kb():
    size = os.path.getsize(os.path.join(ROOT, "README.md"))
    assert size <= README_LIMIT, f"README.md is {size} bytes, over {README_LIMIT}: move a section to a docs/ page"


def test_every_relative_link_of_the_readme_docs_and_results_resolves():
    pages = markdown_pages()
    assert len(pages) > 2, "docs/ holds the README's pages"
    broken = {os.path.relpath(page, ROOT): broken_links(page) for page in pages}
    assert {page: links for page, links in broken.items() if links} == {}


def test_the_link_check_finds_a_broken_link(tmp_path):
    (tmp_path / "docs").mkdir()
    (tmp_path / "README.md").write_text("# x\n")
    page = tmp_path / "docs" / "page.md"
    page.write_text("[up](../README.md#x) [web](https://example.org/a) [here](#anchor) ![figure](gone.png)\n"
                    "```bash\n[code](not/a/link.md)\n```\n  ```python\nx[0](y)\n  ```\n"
                    "[bad](../missing.md#part) [self](page.md)\n")
    assert broken_links(str(page)) == ["gone.png", "../missing.md#part"]
