"""The engine never imports Qt: every engine module imports with PySide6 blocked."""

import pkgutil
import subprocess
import sys

import desklm.engine


def test_engine_imports_with_pyside6_blocked():
    mods = [m.name for m in pkgutil.walk_packages(desklm.engine.__path__, "desklm.engine.")]
    assert "desklm.engine.backends.local.engine" in mods and len(mods) >= 30
    code = (
        "import sys, importlib\n"
        "sys.modules['PySide6'] = None\n"  # any 'import PySide6...' now raises ImportError
        f"for m in {mods!r}: importlib.import_module(m)\n"
        "assert not any(k.startswith('PySide6') and sys.modules[k] for k in sys.modules)\n"
        "print('ok')\n"
    )
    r = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert r.returncode == 0, r.stderr
    assert r.stdout.strip() == "ok"


# --- imports: no cycles, nothing upward, ui/ and server/ only through the engine facade ---------
import ast  # noqa: E402
from pathlib import Path  # noqa: E402

PKG = Path(desklm.engine.__file__).resolve().parents[1]  # app/desklm

# Lower layers never import higher ones.
LAYERS = [
    ("desklm.errors", "desklm.paths", "desklm.logs", "desklm.resources", "desklm"),
    ("desklm.engine",),
    ("desklm.server",),
    ("desklm.ui",),
    ("desklm.bench",),
    ("desklm.cli", "desklm.__main__"),
]


def _module_name(path: Path) -> str:
    rel = path.relative_to(PKG.parent).with_suffix("")
    parts = list(rel.parts)
    if parts[-1] == "__init__":
        parts.pop()
    return ".".join(parts)


def _modules() -> dict[str, Path]:
    return {_module_name(p): p for p in PKG.rglob("*.py")}


def _imports(path: Path, mods: dict[str, Path]) -> list[tuple[str, int]]:
    """Every desklm module ``path`` imports (at any depth: function-level imports count),
    with the line. ``from pkg import name`` counts as pkg.name when that is a module."""
    out = []
    for node in ast.walk(ast.parse(path.read_text("utf-8"))):
        if isinstance(node, ast.Import):
            out += [(a.name, node.lineno) for a in node.names if a.name.startswith("desklm")]
        elif (
            isinstance(node, ast.ImportFrom)
            and node.module
            and node.level == 0
            and node.module.startswith("desklm")
        ):
            for a in node.names:
                sub = f"{node.module}.{a.name}"
                out.append((sub if sub in mods else node.module, node.lineno))
    return out


def _layer(mod: str) -> int:
    best = (0, -1)
    for i, names in enumerate(LAYERS):
        for n in names:
            if (mod == n or mod.startswith(n + ".")) and len(n) > best[0]:
                best = (len(n), i)
    return best[1]


def test_no_import_cycles_and_nothing_imports_upward() -> None:
    mods = _modules()
    graph = {m: {t for t, _ in _imports(p, mods) if t in mods and t != m} for m, p in mods.items()}
    upward = [f"{m} -> {t}" for m, ts in graph.items() for t in ts if _layer(t) > _layer(m)]
    assert not upward, "lower layers import higher ones: " + ", ".join(sorted(upward))
    # cycles: depth-first search for a back edge (engine modules import each other by path,
    # never through the facade, which imports them all)
    cycles: list[str] = []
    state: dict[str, int] = {}

    def visit(m: str, stack: list[str]) -> None:
        state[m] = 1
        for t in sorted(graph[m]):
            if state.get(t) == 1:
                cycles.append(" -> ".join([*stack[stack.index(t) :], t]))
            elif t not in state:
                visit(t, [*stack, t])
        state[m] = 2

    for m in sorted(graph):
        if m not in state:
            visit(m, [m])
    assert not cycles, "import cycles: " + "; ".join(cycles)


def _imported_names(node: ast.AST) -> list[str]:
    """The modules an ``import`` / ``from ... import`` statement names (none for others)."""
    if isinstance(node, ast.Import):
        return [a.name for a in node.names]
    if isinstance(node, ast.ImportFrom):
        return [node.module or ""]
    return []


def test_ui_and_server_reach_the_engine_only_through_its_facade() -> None:
    bad = []
    for m, p in _modules().items():
        if not m.startswith(("desklm.ui", "desklm.server")):
            continue
        for node in ast.walk(ast.parse(p.read_text("utf-8"))):
            names = _imported_names(node)
            bad += [
                f"{m}:{node.lineno} imports {n}" for n in names if n.startswith("desklm.engine.")
            ]
    assert not bad, "\n".join(bad)
    # and everything the facade names exists, imported by name (nvitop's way: types survive)
    for name in desklm.engine.__all__:
        assert getattr(desklm.engine, name) is not None, name


def test_the_facade_exports_names_never_modules() -> None:
    """``from desklm.engine import hub`` would hand a whole module (untyped to its callers'
    intent, and a way around the facade): nothing in the app does it, and the facade holds
    no module."""
    import types

    mods = _modules()
    bad = []
    for m, p in mods.items():
        for node in ast.walk(ast.parse(p.read_text("utf-8"))):
            if isinstance(node, ast.ImportFrom) and node.module == "desklm.engine":
                bad += [
                    f"{m}:{node.lineno} imports the module {a.name}"
                    for a in node.names
                    if f"desklm.engine.{a.name}" in mods
                ]
    assert not bad, "\n".join(bad)
    exported = {n: getattr(desklm.engine, n) for n in desklm.engine.__all__}
    assert not [n for n, v in exported.items() if isinstance(v, types.ModuleType)]
    assert sorted(desklm.engine.__all__) == sorted(set(desklm.engine.__all__))


def test_only_the_local_backend_imports_llama_cpp_at_module_level() -> None:
    """llama.cpp is the local backend's business: the shared backend types, the remote path,
    the chat and the prompt code import no ``llama_cpp`` when they load (a function may use it
    where it needs llama.cpp's own helpers)."""
    bad = []
    for m, p in _modules().items():
        if m.startswith("desklm.engine.backends.local") or m.startswith("desklm.bench"):
            continue
        for node in ast.parse(p.read_text("utf-8")).body:  # module level only
            names = _imported_names(node)
            bad += [
                f"{m}:{node.lineno} imports {n}"
                for n in names
                if n == "llama_cpp" or n.startswith("llama_cpp.")
            ]
    assert not bad, "\n".join(bad)


def test_commands_that_need_no_model_load_neither_llama_cpp_nor_openai() -> None:
    """The facade, the CLI's parser and the remote backend import without llama.cpp (a
    shared library, numpy, jinja2) or the openai client: ``desklm history`` or ``--help``
    start quickly, and a broken llama.cpp install cannot stop them."""
    code = (
        "import sys\n"
        "import desklm.engine, desklm.engine.backends.remote\n"
        "from desklm.cli import build_parser\n"
        "build_parser().parse_args(['history'])\n"
        "print(sorted(m for m in ('llama_cpp', 'openai') if m in sys.modules))\n"
        "from desklm.engine import Runtime\n"  # and the lazy names still resolve
        "print(Runtime.__name__, 'llama_cpp' in sys.modules)\n"
    )
    r = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert r.returncode == 0, r.stderr
    assert r.stdout.split("\n")[:2] == ["[]", "Runtime True"]
