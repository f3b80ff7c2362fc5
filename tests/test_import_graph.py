"""The packages' import graph: no library module imports a command-line module, no module-level
import cycle, and the Keras-free modules stay free of Keras and TensorFlow.

The graph is read from the source with `ast`: every `import` statement, at any depth, so an
import inside a function counts too (a lazy import is how a cycle usually hides).
"""

import ast
import os
import subprocess
import sys

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
PACKAGES = ("deeplab_family", "tfrecords_tools")

# Modules that parse argv and exit: only their own `__main__` may import them.
COMMAND_LINE = {
    "deeplab_family.train",
    "deeplab_family.evaluate",
    "deeplab_family.predict",
    "deeplab_family.demo",
    "deeplab_family.export.cli",
    "deeplab_family.export.verify",
    "deeplab_family.serve.cli",
}

# Pure-Python modules whose packages load no Keras either: imported in a fresh process, they must
# leave Keras and TensorFlow unloaded.
KERAS_FREE = (
    "deeplab_family._validation",
    "deeplab_family._files",
    "deeplab_family.cli",
    "deeplab_family.defaults",
    "deeplab_family.progress",
    "deeplab_family.data.config",
    "deeplab_family.data.schema",
    "deeplab_family.data.palette",
    "deeplab_family.data.classes",
    "deeplab_family.data.spec",
    "deeplab_family.legend",
    "deeplab_family.masks",
    "deeplab_family.serve",
    "deeplab_family.serve.cli",
    "deeplab_family.serve.rest",
    "tfrecords_tools.cli",
    "tfrecords_tools.example",
    "tfrecords_tools.framing",
    "tfrecords_tools.progress",
    "tfrecords_tools.sources",
    "tfrecords_tools.writer",
    "tfrecords_tools.voc",
    "tfrecords_tools.cityscapes",
    "tfrecords_tools.synthetic",
    "tfrecords_tools.folder",
    "tfrecords_tools.ade20k",
    "tfrecords_tools.coco",
    "tfrecords_tools.inspect",
)
# Pure-Python modules inside `deeplab_family.backbones`, whose `__init__` registers the Keras
# layers: what they import, and what that imports in turn, must not reach Keras or TensorFlow.
KERAS_FREE_SOURCES = (
    "deeplab_family.backbones.config",
    "deeplab_family.backbones.plan",
    "deeplab_family.backbones.presets",
)
HEAVY = ("keras", "tensorflow", "tf_keras")


def _modules(root):
    """{module name: path} of every .py file of the packages."""
    found = {}
    for package in PACKAGES:
        for directory, _, files in os.walk(os.path.join(root, package)):
            for name in files:
                if not name.endswith(".py"):
                    continue
                path = os.path.join(directory, name)
                parts = os.path.relpath(path, root)[: -len(".py")].split(os.sep)
                if parts[-1] == "__init__":
                    parts = parts[:-1]
                found[".".join(parts)] = path
    return found


def _imports(path, modules, external=False):
    """The package modules `path` imports: `import a.b`, `from a import b` (b a module, else
    a); with `external`, the top-level names of the other packages it imports instead."""
    targets = set()
    for node in ast.walk(ast.parse(open(path).read(), path)):
        if isinstance(node, ast.Import):
            targets.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            for alias in node.names:
                sub = f"{node.module}.{alias.name}"
                targets.add(sub if sub in modules else node.module)
    if external:
        return {t.split(".")[0] for t in targets if t.split(".")[0] not in PACKAGES}
    return {t for t in targets if t in modules}


def _graph(root):
    modules = _modules(root)
    return {name: _imports(path, modules) for name, path in modules.items()}


def _cycles(graph):
    """The strongly connected components with more than one module (Tarjan), or a module
    that imports itself."""
    index, low, stack, on_stack, found = {}, {}, [], set(), []

    def visit(node):
        index[node] = low[node] = len(index)
        stack.append(node)
        on_stack.add(node)
        for nxt in graph[node]:
            if nxt not in index:
                visit(nxt)
                low[node] = min(low[node], low[nxt])
            elif nxt in on_stack:
                low[node] = min(low[node], index[nxt])
        if low[node] == index[node]:
            component = []
            while True:
                member = stack.pop()
                on_stack.discard(member)
                component.append(member)
                if member == node:
                    break
            if len(component) > 1 or node in graph[node]:
                found.append(sorted(component))

    for node in sorted(graph):
        if node not in index:
            visit(node)
    return found


def test_the_command_line_modules_exist():
    modules = _modules(ROOT)
    assert COMMAND_LINE <= set(modules), sorted(COMMAND_LINE - set(modules))


def test_no_module_imports_a_command_line_module():
    offenders = [
        f"{module} imports {target}"
        for module, targets in sorted(_graph(ROOT).items())
        for target in sorted(targets & COMMAND_LINE)
        if module != f"{target.rsplit('.', 1)[0]}.__main__" and module != target
    ]
    assert not offenders, offenders


def test_no_import_cycle():
    assert _cycles(_graph(ROOT)) == []


def test_cycle_finder_finds_a_cycle():
    assert _cycles({"a": {"b"}, "b": {"c"}, "c": {"a"}, "d": {"a"}}) == [["a", "b", "c"]]
    assert _cycles({"a": {"b"}, "b": set()}) == []


def test_the_plan_and_the_presets_import_no_keras():
    modules = _modules(ROOT)
    graph = _graph(ROOT)
    for start in KERAS_FREE_SOURCES:
        seen, todo = set(), [start]
        while todo:  # every package module `start` reaches through its imports
            module = todo.pop()
            if module not in seen:
                seen.add(module)
                todo.extend(graph[module])
        heavy = {
            (module, name)
            for module in seen
            for name in _imports(modules[module], modules, external=True)
            if name in HEAVY
        }
        assert not heavy, f"{start} reaches {sorted(heavy)}"


def test_importing_the_backbones_registers_their_layers(tmp_path):
    """A saved backbone loads in a fresh process that imported `deeplab_family.backbones` only."""
    from deeplab_family.backbones import build_backbone
    from tests.tiny import BACKBONE

    path = str(tmp_path / "backbone.keras")
    build_backbone(BACKBONE, image_shape=(32, 32, 3)).save(path)
    code = (
        "import keras, deeplab_family.backbones\n"
        f"print(type(keras.saving.load_model({path!r})).__name__)\n"
    )
    result = subprocess.run(
        [sys.executable, "-c", code], cwd=ROOT, env={**os.environ, "PYTHONPATH": ROOT},
        capture_output=True, text=True,
    )
    assert result.stdout.strip().endswith("ResNetBackbone"), result.stderr[-2000:]


def test_keras_free_modules_load_without_keras_or_tensorflow():
    code = (
        "import sys\n"
        f"for name in {KERAS_FREE!r}:\n"
        "    __import__(name)\n"
        "    heavy = [m for m in ('keras', 'tensorflow') if m in sys.modules]\n"
        "    assert not heavy, f'{name} loads {heavy}'\n"
        "print('ok')\n"
    )
    env = {**os.environ, "PYTHONPATH": ROOT}
    result = subprocess.run(
        [sys.executable, "-c", code], cwd=ROOT, env=env, capture_output=True, text=True
    )
    assert result.returncode == 0 and result.stdout.strip() == "ok", result.stderr[-2000:]
