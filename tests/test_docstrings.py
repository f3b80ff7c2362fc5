"""Every `>>>` example in the package docstrings runs, and prints what its docstring says.

The examples run as doctests with the globals of their own module, from the repository root (the
directory a user runs the commands from), so that `train_configs/...` paths resolve. An example
that writes files writes them under a `tempfile.mkdtemp()` directory of its own.
"""

import doctest
import importlib
import io
import pathlib
import re

import pytest

REPO = pathlib.Path(__file__).resolve().parents[1]
PACKAGES = ("deeplab_family", "tfrecords_tools")
OPTIONFLAGS = doctest.ELLIPSIS | doctest.NORMALIZE_WHITESPACE
_PROMPT = re.compile(r"^\s*>>>", re.MULTILINE)


def _module_name(path):
    parts = path.relative_to(REPO).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def _modules_with_examples():
    """{module name: number of `>>>` lines in its source}, read from the files, not imported."""
    found = {}
    for package in PACKAGES:
        for path in sorted((REPO / package).rglob("*.py")):
            count = len(_PROMPT.findall(path.read_text(encoding="utf-8")))
            if count:
                found[_module_name(path)] = count
    return found


MODULES = _modules_with_examples()


def _doctests(module_name):
    module = importlib.import_module(module_name)
    finder = doctest.DocTestFinder(exclude_empty=True)
    return [test for test in finder.find(module, module_name) if test.examples]


def test_examples_exist():
    """The list below is not empty by accident (a glob that matches nothing would pass)."""
    assert sum(MODULES.values()) >= 50, MODULES


@pytest.mark.parametrize("module_name", sorted(MODULES))
def test_docstring_examples(module_name, monkeypatch):
    monkeypatch.chdir(REPO)
    # `malloc.limit_arenas` defers to a MALLOC_ARENA_MAX of the user's; its example shows the
    # default case.
    monkeypatch.delenv("MALLOC_ARENA_MAX", raising=False)
    tests = _doctests(module_name)
    # Every `>>>` line of the file belongs to an example that doctest finds and runs (one
    # in a docstring doctest cannot see, such as a nested function's, would never run).
    assert sum(len(t.examples) for t in tests) == MODULES[module_name], (
        f"{module_name}: doctest finds {sum(len(t.examples) for t in tests)} examples, the "
        f"source has {MODULES[module_name]} '>>>' lines"
    )
    runner = doctest.DocTestRunner(optionflags=OPTIONFLAGS)
    report = io.StringIO()
    for test in tests:
        runner.run(test, out=report.write)
    results = runner.summarize(verbose=False)
    assert results.failed == 0, report.getvalue()
