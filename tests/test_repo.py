"""The repository keeps its promises: CI runs the README's test command, imports do no work, and
imports point one way (entry points -> gptsuite -> model.py / configurator.py)."""

import ast
import re
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
ENTRY_POINTS = ["prepare", "train", "sample", "eval", "export", "bench", "serve"] + [
    f"tools.{p.stem}" for p in sorted((ROOT / "tools").glob("*.py")) if p.stem != "__init__"
]
LIBRARY = [f"gptsuite.{p.stem}" for p in sorted((ROOT / "gptsuite").glob("*.py")) if p.stem != "__init__"]
BASE = ["model", "configurator"]
PLUGINS = sorted((ROOT / "data").glob("*/prepare.py"))


def readme_commands() -> list[str]:
    return re.findall(r"```\n(pip install[^\n]+)\n```", (ROOT / "README.md").read_text())


def test_ci_runs_the_readme_test_command():
    commands = readme_commands()
    assert len(commands) == 2, "the README has exactly two set-up commands"
    assert "pytest" in commands[1]
    assert commands[1] in (ROOT / ".ci" / "run").read_text()


@pytest.mark.slow  # a fresh interpreter importing everything: torch, gradio, ... (seconds)
def test_importing_any_module_does_no_work(tmp_path: Path):
    code = f"import sys; sys.path.insert(0, {str(ROOT)!r}); " + "; ".join(f"import {m}" for m in ENTRY_POINTS + LIBRARY + BASE)
    proc = subprocess.run([sys.executable, "-c", code], cwd=tmp_path, capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout == "" and list(tmp_path.iterdir()) == []


def test_the_scripted_voter_judges_without_torch():
    # a client of the page: each of its starts (tools.arena_loop runs two) would pay torch's import
    code = f"import sys; sys.path.insert(0, {str(ROOT)!r}); import tools.arena_voter as v; v.judge('4', ' 4', '5'); print('torch' in sys.modules)"
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60)
    assert proc.stdout == "False\n", proc.stdout + proc.stderr


def imports(path: Path) -> set[str]:
    """Top-level names of this project that a file imports (module names, dotted for packages)."""
    found = set()
    for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
        names = [a.name for a in node.names] if isinstance(node, ast.Import) else [node.module or ""] if isinstance(node, ast.ImportFrom) else []
        for name in names:
            if name.split(".")[0] in ("gptsuite", "tools", *BASE, *ENTRY_POINTS):
                found.add(name if name.startswith(("gptsuite.", "tools.")) or name in ("gptsuite", "tools") else name.split(".")[0])
    return found


def path_of(module: str) -> Path:
    return ROOT / (module.replace(".", "/") + ".py")


@pytest.mark.parametrize("module", ENTRY_POINTS)
def test_no_entry_point_imports_another(module: str):
    assert not imports(path_of(module)) & set(ENTRY_POINTS), f"{module} imports an entry point"


@pytest.mark.parametrize("module", LIBRARY + BASE)
def test_the_library_imports_no_entry_point_and_the_base_no_library(module: str):
    found = imports(path_of(module))
    assert not found & set(ENTRY_POINTS), f"{module} imports an entry point"
    if module in BASE:
        assert not {m for m in found if m.startswith("gptsuite")}, f"{module} imports the library"


@pytest.mark.parametrize("plugin", PLUGINS, ids=lambda p: p.parent.name)
def test_dataset_plugins_import_the_library_never_the_driver(plugin: Path):
    found = imports(plugin)
    assert found, f"{plugin} imports nothing of the project"
    assert found <= {m for m in found if m.startswith("gptsuite")} | {"configurator"}, f"{plugin} imports {found}"


def test_no_import_cycles_in_the_library():
    graph = {m: {i for i in imports(path_of(m)) if i in LIBRARY} for m in LIBRARY}
    done, active = set(), []

    def visit(m):
        assert m not in active, f"import cycle: {' -> '.join(active[active.index(m) :] + [m])}"
        if m in done:
            return
        active.append(m)
        for n in graph[m]:
            visit(n)
        active.pop()
        done.add(m)

    for m in LIBRARY:
        visit(m)


CONFIG_PARAM = re.compile(r"(^|_)(cfg|config|settings)$")


def test_library_functions_take_their_config_part_typed():
    """A library function names the settings it reads by type (build_optimizer(model, cfg: OptimConfig)),
    never the whole run's config untyped."""
    untyped = []
    for m in LIBRARY:
        for node in ast.walk(ast.parse(path_of(m).read_text(encoding="utf-8"))):
            if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef)):
                for a in [*node.args.posonlyargs, *node.args.args, *node.args.kwonlyargs]:
                    if CONFIG_PARAM.search(a.arg) and (a.annotation is None or ast.unparse(a.annotation) in ("Any", "object", "typing.Any")):
                        untyped.append(f"{m}.{node.name}({a.arg})")
    assert not untyped, untyped


def test_the_model_shape_is_declared_only_in_gptconfig():
    """n_layer, n_head, n_embd are fields of model.GPTConfig alone; every config that takes them takes that part."""
    shape = {"n_layer", "n_head", "n_embd", "arch"}
    elsewhere = []
    for path in [*ROOT.glob("*.py"), *(ROOT / "gptsuite").glob("*.py"), *(ROOT / "tools").glob("*.py"), *PLUGINS]:
        for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
            if isinstance(node, ast.ClassDef) and not (path.name == "model.py" and node.name == "GPTConfig"):
                fields = {s.target.id for s in node.body if isinstance(s, ast.AnnAssign) and isinstance(s.target, ast.Name)}
                if fields & shape:
                    elsewhere.append(f"{path.relative_to(ROOT)}:{node.name} declares {', '.join(sorted(fields & shape))}")
    assert not elsewhere, elsewhere
