"""The house: layers point one way (CLI → lab → runs → chapters → accel → errors), no import cycle, click only in
the CLI, and each chapter imports only the chapters before it in the reading order that `minidiff.CHAPTERS` states.

Every import counts, at module level or inside a function, so a function-level import cannot hide a cycle.
"""
import ast
import os

import pytest

import minidiff

PACKAGE = os.path.dirname(minidiff.__file__)
# bottom to top: a module may import its own layer or below
LAYERS = ("errors", "accel", "chapters", "runs", "lab", "cli")


def module_name(path):
    rel = os.path.relpath(path, os.path.dirname(PACKAGE))[:-3].replace(os.sep, ".")
    return rel[:-len(".__init__")] if rel.endswith(".__init__") else rel


def all_modules():
    found = {}
    for folder, _, names in os.walk(PACKAGE):
        for name in names:
            if name.endswith(".py"):
                path = os.path.join(folder, name)
                found[module_name(path)] = path
    return found


MODULES = all_modules()


def imported(module, path):
    """(line, module) of every minidiff module that `module` imports (a name imported from a package that is a
    submodule counts as that submodule)."""
    tree = ast.parse(open(path, encoding="utf-8").read())
    package = module if path.endswith("__init__.py") else module.rpartition(".")[0]
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            for alias in node.names:
                yield node.lineno, alias.name
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                parts = package.split(".")[:len(package.split(".")) - (node.level - 1)]
                base = ".".join(parts + ([node.module] if node.module else []))
            for alias in node.names:
                full = f"{base}.{alias.name}"
                yield node.lineno, full if full in MODULES else base


def graph():
    return {m: sorted({(line, t) for line, t in imported(m, p) if t in MODULES and t != m}) for m, p in MODULES.items()}


def layer(module):
    if module == "minidiff.errors":  # the one exception of a user's mistake, which every layer may raise
        return "errors"
    parts = module.split(".")
    if len(parts) > 1 and parts[1] in ("accel", "runs", "lab", "cli"):
        return parts[1]
    return "cli" if module == "minidiff.__main__" else "chapters"


def chapter_rank(module):
    """Position of a chapter in the reading order; modules of one group (a chapter and its helpers) share it."""
    leaf = module.split(".")[-1]
    for rank, group in enumerate(minidiff.CHAPTERS):
        if leaf in group.split("+"):
            return rank
    return None


def test_every_chapter_is_in_the_reading_order():
    chapters = [m for m in MODULES if layer(m) == "chapters" and m != "minidiff"]
    assert [m for m in chapters if chapter_rank(m) is None] == []


@pytest.mark.parametrize("module", sorted(MODULES))
def test_imports_point_down_the_layers(module):
    upward = [(line, t) for line, t in graph()[module] if LAYERS.index(layer(t)) > LAYERS.index(layer(module))]
    assert upward == [], f"{module} imports a higher layer: " + ", ".join(f"{t} (line {n})" for n, t in upward)


@pytest.mark.parametrize("module", sorted(m for m in MODULES if layer(m) == "chapters" and m != "minidiff"))
def test_a_chapter_imports_only_the_chapters_before_it(module):
    later = [(line, t) for line, t in graph()[module] if layer(t) == "chapters" and t != "minidiff"
             and chapter_rank(t) > chapter_rank(module)]
    assert later == [], f"{module} reads ahead: " + ", ".join(f"{t} (line {n})" for n, t in later)


def test_there_is_no_import_cycle():
    edges = {m: [t for _, t in targets] for m, targets in graph().items()}
    state, cycles = {}, []

    def visit(m, path):
        state[m] = "open"
        for t in edges[m]:
            if state.get(t) == "open":
                cycles.append(path[path.index(t):] + [t])
            elif t not in state:
                visit(t, path + [t])
        state[m] = "done"

    for m in sorted(edges):
        if m not in state:
            visit(m, [m])
    assert cycles == [], "import cycles: " + "; ".join(" → ".join(c) for c in cycles)


def test_click_is_imported_by_the_cli_alone():
    users = sorted(m for m, p in MODULES.items() if layer(m) != "cli"
                   and any(t == "click" or t.startswith("click.") for _, t in imported(m, p)))
    assert users == []


def test_dask_is_imported_by_the_cluster_module_alone():
    """dask.distributed is an optional extra: only the dask engine's module may import it."""
    users = sorted(m for m, p in MODULES.items() if any(t.split(".")[0] in ("dask", "distributed")
                                                         for _, t in imported(m, p)))
    assert users == ["minidiff.lab.diagnostics.cluster"]


def test_cupy_is_imported_by_the_accelerator_alone():
    text = {m: open(p, encoding="utf-8").read() for m, p in MODULES.items() if layer(m) != "accel"}
    assert sorted(m for m, t in text.items() if "import cupy" in t) == []


def test_the_checker_finds_an_upward_import_and_a_cycle(tmp_path, monkeypatch):
    """The checks above can fail: a chapter that imports the lab, and two modules that import each other."""
    fake = {"minidiff.targets": "from minidiff.lab import figures\n", "minidiff.lab.figures": "import minidiff.targets\n"}
    paths = {}
    for name, source in fake.items():
        paths[name] = tmp_path / (name.replace(".", "_") + ".py")
        paths[name].write_text(source)
    monkeypatch.setattr(__import__(__name__), "MODULES", {n: str(p) for n, p in paths.items()})
    edges = graph()
    assert edges["minidiff.targets"] == [(1, "minidiff.lab.figures")]
    assert LAYERS.index(layer("minidiff.lab.figures")) > LAYERS.index(layer("minidiff.targets"))
    assert edges["minidiff.lab.figures"] == [(1, "minidiff.targets")]  # and back: a cycle
