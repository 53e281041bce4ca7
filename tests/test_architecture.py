"""The package's shape: its layers are folders and imports run one way between them,
no private name crosses a module,
and every declared key, method and properties file agree."""
from __future__ import annotations

import ast
import inspect
import re
from pathlib import Path

import pytest

import recbole_lth
from recbole_lth import methods
from recbole_lth.core import settings, tasks

PACKAGE = Path(recbole_lth.__file__).resolve().parent


def _modules() -> dict[str, Path]:
    found = {}
    for path in sorted(PACKAGE.rglob("*.py")):
        parts = list(path.relative_to(PACKAGE.parent).with_suffix("").parts)
        if parts[-1] == "__init__":
            parts = parts[:-1]
        found[".".join(parts)] = path
    return found


MODULES = _modules()


def _imports(name: str, path: Path) -> tuple[set[str], list[str]]:
    """Modules of the package that ``name`` imports (anywhere in the file, so an
    import hidden in a function counts), and the private names it takes from them."""
    tree = ast.parse(path.read_text())
    edges, private = set(), []
    aliases: dict[str, str] = {}
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            for alias in node.names:
                if alias.name in MODULES:
                    edges.add(alias.name)
                    aliases[alias.asname or alias.name] = alias.name
        elif isinstance(node, ast.ImportFrom) and node.module and node.module.startswith("recbole_lth"):
            for alias in node.names:
                sub = f"{node.module}.{alias.name}"
                if sub in MODULES:
                    edges.add(sub)
                    aliases[alias.asname or alias.name] = sub
                else:
                    edges.add(node.module)
                    if alias.name.startswith("_"):
                        private.append(f"{name}: from {node.module} import {alias.name}")
    for node in ast.walk(tree):
        if (isinstance(node, ast.Attribute) and isinstance(node.value, ast.Name) and node.value.id in aliases
                and node.attr.startswith("_") and not node.attr.startswith("__")):
            private.append(f"{name}: {aliases[node.value.id]}.{node.attr}")
    edges.discard(name)
    return edges, private


GRAPH = {name: _imports(name, path) for name, path in MODULES.items()}


def test_the_import_graph_has_no_cycle():
    state: dict[str, str] = {}
    stack: list[str] = []

    def visit(node):
        state[node] = "open"
        stack.append(node)
        for nxt in sorted(GRAPH[node][0]):
            if state.get(nxt) == "open":
                cycle = stack[stack.index(nxt):] + [nxt]
                pytest.fail("import cycle: " + " -> ".join(cycle))
            if nxt not in state:
                visit(nxt)
        stack.pop()
        state[node] = "done"

    for module in GRAPH:
        if module not in state:
            visit(module)


def test_no_private_name_crosses_a_module():
    crossing = [p for _, (_, private) in GRAPH.items() for p in private]
    assert crossing == []


# The layers, lowest first: a module imports only its own layer and those below.
LAYERS = ("core", "backbones", "engine", "sparse", "methods", "deploy", "views", "entry")
# The entry modules sit at the top of the package, beside the layers' folders.
ENTRY = {"recbole_lth", "recbole_lth.api", "recbole_lth.request", "recbole_lth.session", "recbole_lth.study",
         "recbole_lth.cli", "recbole_lth.commands", "recbole_lth.helptext", "recbole_lth.tune", "recbole_lth.version",
         "recbole_lth.compat"}


def _layer(module: str) -> str:
    parts = module.split(".")
    if len(parts) > 2 or (len(parts) == 2 and (PACKAGE / parts[1]).is_dir()):
        return parts[1]
    return "entry"


def test_every_module_lives_in_a_layer():
    """A folder is a layer; a module beside the folders is an entry module."""
    assert {_layer(m) for m in MODULES} == set(LAYERS)
    assert {m for m in MODULES if _layer(m) == "entry"} == ENTRY


def test_imports_go_one_way_between_the_layers():
    """A module in a lower layer never imports one in a higher layer."""
    upward = [f"{m} ({_layer(m)}) imports {dep} ({_layer(dep)})" for m, (deps, _) in sorted(GRAPH.items())
              for dep in sorted(deps) if LAYERS.index(_layer(dep)) > LAYERS.index(_layer(m))]
    assert upward == []


def test_the_engine_imports_nothing_method_specific():
    method_modules = {m for m in MODULES if m.startswith("recbole_lth.methods")} | {
        "recbole_lth.sparse.distill", "recbole_lth.sparse.dynamic", "recbole_lth.sparse.budget", "recbole_lth.api",
        "recbole_lth.request", "recbole_lth.session", "recbole_lth.study"}
    for core in ("recbole_lth.engine.run", "recbole_lth.core.paths", "recbole_lth.engine.builder",
                 "recbole_lth.core.masking", "recbole_lth.core.pruning", "recbole_lth.engine.trainer",
                 "recbole_lth.core.settings"):
        assert not GRAPH[core][0] & method_modules, core


VIEWS = ("recbole_lth.views.report", "recbole_lth.views.judge", "recbole_lth.views.plots",
         "recbole_lth.views.popularity", "recbole_lth.views.markdown", "recbole_lth.views.compare",
         "recbole_lth.views.summary", "recbole_lth.deploy.export", "recbole_lth.tune")


def test_no_view_tests_a_method_by_its_name():
    """Views ask a method what it declares (``Method.deploys``, ``iterative``,
    ``dense``), never compare a row's method with a name."""
    names = set(methods.METHODS)
    for module in VIEWS:
        for node in ast.walk(ast.parse(MODULES[module].read_text())):
            if not isinstance(node, ast.Compare):
                continue
            operands = [node.left, *node.comparators]
            literals = {n.value for n in operands if isinstance(n, ast.Constant) and isinstance(n.value, str)}
            named = {n.id if isinstance(n, ast.Name) else n.attr for n in operands
                     if isinstance(n, (ast.Name, ast.Attribute))}
            assert not literals & names, (module, node.lineno, literals & names)
            assert "DENSE_TICKET" not in named or "method" not in ast.unparse(node), (module, node.lineno)
            assert "sparsity_key" not in named, (module, node.lineno)


def test_run_directory_file_names_have_one_home():
    """No module but paths.py spells a run-directory file name."""
    names = ("settings.json", "results.csv", "ticket.pt", "result.json", "init_state.pt", "rewind_state.pt",
             "popularity.pt", "tables.json", "run.log", "report.md")
    for module, path in MODULES.items():
        if module == "recbole_lth.core.paths":
            continue
        code = [n.value for n in ast.walk(ast.parse(path.read_text()))
                if isinstance(n, ast.Constant) and isinstance(n.value, str)]
        # Docstrings may name the files; string constants that build paths may not.
        docstrings = {ast.get_docstring(n, clean=False) for n in ast.walk(ast.parse(path.read_text()))
                      if isinstance(n, (ast.Module, ast.FunctionDef, ast.ClassDef))}
        used = [c for c in code if c not in docstrings and " " not in c
                and any(c == f or c.endswith("/" + f) for f in names)]
        assert used == [], (module, used)


# ------------------------------------------------------------- declarations
def test_every_method_has_its_properties_file_and_a_summary():
    folder = settings.properties_dir()
    assert (folder / "overall.yaml").is_file()
    seen_summaries: set = set()
    for method in methods.METHODS.values():
        for name in method.properties_files():
            assert (folder / name).is_file(), name
        # A summary is a line of --help and of the README's table: a phrase, not a placeholder.
        assert len(method.summary.split()) >= 8 and method.summary not in seen_summaries, method.name
        seen_summaries.add(method.summary)
        assert list(inspect.signature(method.plan).parameters) == ["run"], method.name


def test_every_declared_key_has_one_default_and_every_plugin_default_is_declared():
    folder = settings.properties_dir()
    declared = methods.all_keys()
    defaults: dict[str, list[str]] = {}
    for path in folder.glob("*.yaml"):
        for key in settings.read_yaml(path):
            defaults.setdefault(key, []).append(path.name)
    variant_files = {f"{m.name}.yaml" for m in methods.METHODS.values() if m.base}
    for name in declared:
        homes = [f for f in defaults.get(name, []) if f not in variant_files]
        assert len(homes) == 1, (name, defaults.get(name))
    recbole_keys = set(settings.read_yaml(folder / "overall.yaml")) - set(declared) - {"method"}
    # overall.yaml also sets RecBole's own keys (the papers' protocol): nothing else is undeclared.
    assert recbole_keys == {"epochs", "stopping_step", "eval_step", "metrics", "topk", "valid_metric",
                            "show_progress"}
    task_files = {t.properties for t in tasks.TASKS.values() if t.properties}
    for path in folder.glob("*.yaml"):
        if path.name in task_files:  # a task sets RecBole's own data and evaluation keys, never a plugin key
            assert not set(settings.read_yaml(path)) & set(declared), path.name
        elif path.name != "overall.yaml":
            assert set(settings.read_yaml(path)) <= set(declared), path.name
    assert task_files <= {p.name for p in folder.glob("*.yaml")}


def test_each_declared_default_passes_its_own_check():
    for name in methods.METHODS:
        merged = settings.merge_settings("BPR", "ml-100k", name, method_files=methods.properties_files)
        methods.check(merged)  # raises on a default its own declaration refuses


def test_every_subpackage_ships_in_the_wheel():
    """setuptools' explicit package list must name every folder of the package
    (a missing one installs a wheel that cannot be imported)."""
    import tomllib

    listed = set(tomllib.loads((PACKAGE.parent / "pyproject.toml").read_text())["tool"]["setuptools"]["packages"])
    found = {".".join(p.parent.relative_to(PACKAGE.parent).parts) for p in PACKAGE.rglob("__init__.py")}
    assert found <= listed, sorted(found - listed)


# ------------------------------------------------------- the trainer adapter
RECBOLE_PRIVATE = re.compile(r"_train_epoch|_valid_epoch|_build_optimizer|_full_sort_batch_eval|get_tensorboard")
RECBOLE_STATE = ("stopping_step", "cur_step")  # early stopping's counters, as trainer attributes


def test_one_adapter_touches_recboles_private_trainer_api():
    """Methods get the training lifecycle from engine/trainer.py's TrainingHook and its
    factory; no other module names RecBole's private trainer API or moves its
    early-stopping counters (a RecBole release that changes them is fixed in one place)."""
    named = {m for m, path in MODULES.items() if RECBOLE_PRIVATE.search(path.read_text())}
    assert named == {"recbole_lth.engine.trainer"}
    moved = {m for m, path in MODULES.items() for node in ast.walk(ast.parse(path.read_text()))
             if isinstance(node, ast.Attribute) and node.attr in RECBOLE_STATE}
    assert moved <= {"recbole_lth.engine.trainer"}


def test_only_the_adapter_and_the_mask_core_hook_an_optimizer_step():
    """A method's per-step work is ``TrainingHook.after_step``, registered by the adapter."""
    hooking = {m for m, path in MODULES.items() if "register_step_" in path.read_text()}
    assert hooking == {"recbole_lth.engine.trainer", "recbole_lth.core.masking"}


# -------------------------------------------------------- the model adapter
# compat.py patches library classes and modules at import (scipy, pandas,
# RecBole's Dataset and Config), never an instance: RecBole compatibility, not a method's behaviour.
REBINDERS = {"recbole_lth.core.rebind", "recbole_lth.compat"}


def _function_values(tree) -> list[ast.AST]:
    """Assignments in ``tree`` that put a function onto an attribute: the value a
    lambda, ``types.MethodType(...)``, ``functools.partial(...)``, the name of a
    def (not shadowed by a parameter of the enclosing function), or a call of a
    def of the module that returns a nested def or a lambda (a forward factory);
    ``setattr(obj, name, <such a value>)`` counts too."""
    defs = {n.name for n in ast.walk(tree) if isinstance(n, (ast.FunctionDef, ast.AsyncFunctionDef))}
    factories = set()
    for function in ast.walk(tree):
        if isinstance(function, (ast.FunctionDef, ast.AsyncFunctionDef)):
            inner = {n.name for n in ast.walk(function)
                     if n is not function and isinstance(n, (ast.FunctionDef, ast.AsyncFunctionDef))}
            if any(isinstance(r, ast.Return) and (isinstance(r.value, ast.Lambda)
                                                  or isinstance(r.value, ast.Name) and r.value.id in inner)
                   for r in ast.walk(function)):
                factories.add(function.name)

    def is_function(value, shadowed) -> bool:
        if isinstance(value, ast.Lambda):
            return True
        if isinstance(value, ast.Name):
            return value.id in defs and value.id not in shadowed
        if isinstance(value, ast.Call):
            called = value.func
            name = called.id if isinstance(called, ast.Name) else getattr(called, "attr", None)
            return name in ("MethodType", "partial", "partialmethod") or (
                isinstance(called, ast.Name) and called.id in factories)
        return False

    found = []

    def visit(node, shadowed):
        if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef, ast.Lambda)):
            shadowed = shadowed | {a.arg for a in ast.walk(node.args) if isinstance(a, ast.arg)}
        if isinstance(node, ast.Assign):
            targets = [t for target in node.targets
                       for t in (target.elts if isinstance(target, ast.Tuple) else [target])]
            if any(isinstance(t, ast.Attribute) for t in targets) and is_function(node.value, shadowed):
                found.append(node)
        elif (isinstance(node, ast.Call) and isinstance(node.func, ast.Name) and node.func.id == "setattr"
              and len(node.args) == 3 and is_function(node.args[2], shadowed)):
            found.append(node)
        for child in ast.iter_child_nodes(node):
            visit(child, shadowed)

    visit(tree, frozenset())
    return found


def test_one_adapter_replaces_an_instances_methods():
    """A backbone's faster forward, PEP's gathered lookup, KD's frozen teacher and the
    like ask core/rebind.py to put a function on an instance; no other module
    assigns a function, lambda, bound method or partial onto an attribute."""
    assigning = {f"{m}:{node.lineno}: {ast.unparse(node)[:80]}" for m, path in MODULES.items() if m not in REBINDERS
                 for node in _function_values(ast.parse(path.read_text()))}
    assert sorted(assigning) == []


def test_the_rebinding_check_sees_each_way_of_assigning_a_method():
    code = '''
import types, functools
def _forward(model): pass
def factory(module):
    def forward(x): return x
    return forward
def f(model, optimizer):
    model.forward = types.MethodType(_forward, model)
    model.forward = lambda: 1
    model.forward = functools.partial(_forward, model)
    model.forward = _forward
    model.forward = factory(model)
    setattr(model, "forward", _forward)
    model.optimizer = optimizer
    model.weight = model.other
'''
    assert len(_function_values(ast.parse(code))) == 6
