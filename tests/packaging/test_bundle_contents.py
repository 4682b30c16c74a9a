"""What the PyInstaller bundle holds, checked without building it (seconds).

A bundle once opened no window: `desklm --self-test` in it died with "No module named
'desklm.engine.curated'", because the engine's facade imported that module by name, which
PyInstaller's import analysis cannot see, and the spec listed hidden imports by hand. These
tests run the spec's own collection code (packaging/bundle.py) against the source tree as it
is on disk, so they hold whatever the package's layout becomes:

- every .py file under app/desklm is a module the bundle collects;
- every module named by a string (importlib.import_module, __import__) is collected;
- nothing DeskLM imports, anywhere, is on the spec's exclude list;
- the spec takes its hidden imports, data and binaries from bundle.py, not from a hand list;
- the model, the icons, the metadata and llama.cpp's libraries go where the frozen app
  looks for them.
The full build, and the bundle and .deb actually starting, is packaging/check_linux.sh.
"""

from __future__ import annotations

import ast
import importlib.util
import os
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
PKG = ROOT / "app" / "desklm"


def _load_bundle():
    spec = importlib.util.spec_from_file_location("desklm_bundle", ROOT / "packaging" / "bundle.py")
    assert spec and spec.loader
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod


bundle = _load_bundle()


def _source_modules() -> dict[str, Path]:
    """Module name -> file, for every .py file under app/desklm (found on disk, not by import,
    so a folder without __init__.py, or a module nothing imports, is still found)."""
    out = {}
    for path in sorted(PKG.rglob("*.py")):
        rel = path.relative_to(PKG.parent).with_suffix("")
        parts = list(rel.parts)
        if parts[-1] == "__init__":
            parts.pop()
        out[".".join(parts)] = path
    return out


@pytest.fixture(scope="module")
def hidden() -> set[str]:
    return set(bundle.hidden_imports())


def test_every_desklm_module_is_in_the_bundle(hidden):
    modules = _source_modules()
    assert len(modules) > 20  # the walk found the package
    missing = sorted(set(modules) - hidden)
    assert not missing, (
        f"modules the bundle would leave out: {missing}. A folder needs an __init__.py, and "
        "every subpackage must import on its own (PyInstaller imports each one to list it)"
    )


def _imports(tree: ast.AST, modname: str) -> list[tuple[str, int]]:
    """(module, line) for every import in a file: top level, inside functions, and a relative
    import resolved against the module's package."""
    pkg = modname.rsplit(".", 1)[0] if not modname.endswith("__init__") else modname
    out = []
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            out += [(a.name, node.lineno) for a in node.names]
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                base = pkg.split(".")
                base = base[: len(base) - node.level + 1]
                mod = ".".join([*base, node.module] if node.module else base)
            else:
                mod = node.module or ""
            out.append((mod, node.lineno))
            out += [(f"{mod}.{a.name}", node.lineno) for a in node.names]
    return out


def _named_by_string(tree: ast.AST) -> list[tuple[ast.expr, int]]:
    """The argument of every importlib.import_module(...) / __import__(...) call."""
    out = []
    for node in ast.walk(tree):
        if isinstance(node, ast.Call) and node.args:
            f = node.func
            name = f.attr if isinstance(f, ast.Attribute) else getattr(f, "id", "")
            if name in ("import_module", "__import__"):
                out.append((node.args[0], node.lineno))
    return out


def _string_table(tree: ast.AST, name: str) -> list[str] | None:
    """The values of a module-level ``name = {key: "module", ...}`` table, or None."""
    for node in getattr(tree, "body", []):
        targets = (
            node.targets
            if isinstance(node, ast.Assign)
            else ([node.target] if isinstance(node, ast.AnnAssign) else [])
        )
        if any(isinstance(t, ast.Name) and t.id == name for t in targets):
            value = node.value
            if isinstance(value, ast.Dict) and all(
                isinstance(v, ast.Constant) and isinstance(v.value, str) for v in value.values
            ):
                return [v.value for v in value.values]  # type: ignore[union-attr]
    return None


def _possible_modules(arg: ast.expr, tree: ast.AST) -> list[str] | None:
    """Every module name an import-by-name call can receive, when the code says it: a string,
    a variable only ever set to strings or to entries of a module-level table of strings
    (``_LAZY = {"Name": "desklm.x.y"}``; ``module = _LAZY.get(name)``). ``["desklm."]`` for an
    f-string under desklm (every desklm module is collected). None: nothing can tell."""
    if isinstance(arg, ast.Constant) and isinstance(arg.value, str):
        return [arg.value]
    if isinstance(arg, ast.JoinedStr) and arg.values and isinstance(arg.values[0], ast.Constant):
        if str(arg.values[0].value).startswith("desklm."):
            return ["desklm."]
        return None
    if not isinstance(arg, ast.Name):
        return None
    found: list[str] = []
    assigned = False
    for node in ast.walk(tree):
        if isinstance(node, ast.arg) and node.arg == arg.id:
            return None  # a function's parameter: any caller's string
        if not (isinstance(node, ast.Assign | ast.AnnAssign) and node.value is not None):
            continue
        targets = node.targets if isinstance(node, ast.Assign) else [node.target]
        if not any(isinstance(t, ast.Name) and t.id == arg.id for t in targets):
            continue
        assigned = True
        value = node.value
        if isinstance(value, ast.Constant) and isinstance(value.value, str):
            found.append(value.value)
            continue
        table = None
        if (
            isinstance(value, ast.Call)
            and isinstance(value.func, ast.Attribute)
            and value.func.attr == "get"
            and isinstance(value.func.value, ast.Name)
        ):
            table = _string_table(tree, value.func.value.id)
        elif isinstance(value, ast.Subscript) and isinstance(value.value, ast.Name):
            table = _string_table(tree, value.value.id)
        if table is None:
            return None
        found += table
    return found if assigned else None


def _parsed():
    for name, path in _source_modules().items():
        is_pkg = path.name == "__init__.py"
        yield (name + ".__init__" if is_pkg else name), path, ast.parse(path.read_text("utf-8"))


def test_modules_named_by_a_string_are_collected(hidden):
    problems = []
    for _modname, path, tree in _parsed():
        for arg, line in _named_by_string(tree):
            where = f"{path.relative_to(ROOT)}:{line}"
            names = _possible_modules(arg, tree)
            if names is None:
                problems.append(
                    f"{where}: imports a module named at run time; nothing can tell whether "
                    "the bundle holds it (name it in a string, or a table of strings)"
                )
                continue
            for name in names:
                if name != "desklm." and name not in hidden:
                    problems.append(
                        f"{where}: imports {name!r} by name; the bundle does not collect it"
                    )
    assert not problems, "\n".join(problems)


def test_the_string_import_check_reads_tables_and_refuses_what_it_cannot_read():
    code = (
        "import importlib\n"
        "_LAZY = {'ChatEngine': 'desklm.engine.backends.local.engine', 'X': 'nosuch.module'}\n"
        "def __getattr__(name):\n"
        "    module = _LAZY.get(name)\n"
        "    return importlib.import_module(module)\n"
        "def load(plugin):\n"
        "    return importlib.import_module(plugin)\n"
    )
    tree = ast.parse(code)
    (table_arg, _), (param_arg, _) = _named_by_string(tree)
    assert _possible_modules(table_arg, tree) == [
        "desklm.engine.backends.local.engine",
        "nosuch.module",
    ]
    assert _possible_modules(param_arg, tree) is None


def test_nothing_desklm_imports_is_excluded_from_the_bundle():
    excluded = bundle.EXCLUDES
    problems = []
    for modname, path, tree in _parsed():
        for mod, line in _imports(tree, modname):
            for ex in excluded:
                if mod == ex or mod.startswith(ex + "."):
                    problems.append(
                        f"{path.relative_to(ROOT)}:{line} imports {mod}, which "
                        f"packaging/bundle.py excludes ({ex})"
                    )
    assert not problems, "\n".join(problems)


def test_the_exclusion_check_sees_imports_inside_functions():
    # the check above must see a lazy import in a function body, and a relative import
    tree = ast.parse(
        "def f():\n    import uvicorn\n    from PySide6 import QtNetwork\n"
        "from .fit import estimate\n"
    )
    mods = {m for m, _ in _imports(tree, "desklm.engine.models")}
    assert {"uvicorn", "PySide6.QtNetwork", "desklm.engine.fit.estimate"} <= mods


def test_the_spec_takes_its_contents_from_bundle_py():
    tree = ast.parse((ROOT / "packaging" / "desklm.spec").read_text("utf-8"))
    calls = [
        n
        for n in ast.walk(tree)
        if isinstance(n, ast.Call) and getattr(n.func, "id", "") == "Analysis"
    ]
    assert len(calls) == 1
    kw = {k.arg: ast.unparse(k.value) for k in calls[0].keywords}
    assert kw["hiddenimports"] == "bundle.hidden_imports()"
    assert kw["binaries"] == "bundle.binaries()"
    assert "bundle.data_files()" in kw["datas"] and "bundle.embedded_model()" in kw["datas"]
    assert kw["excludes"] == "list(bundle.EXCLUDES)"


def test_data_files_go_where_the_frozen_app_looks(hidden):
    datas = {(Path(src).resolve(), dest.replace(os.sep, "/")) for src, dest in bundle.data_files()}
    # every non-Python file in the package, at its place under desklm/
    for path in PKG.rglob("*"):
        if (
            path.is_file()
            and path.suffix not in (".py", ".pyc")
            and "__pycache__" not in path.parts
        ):
            dest = path.parent.relative_to(PKG.parent).as_posix()
            assert (path.resolve(), dest) in datas, f"{path} is not in the bundle"
    # desklm.resources looks in <bundle>/desklm/resources
    assert any(dest == "desklm/resources" and src.name == "desklm-256.png" for src, dest in datas)
    # DeskLM's own metadata, so `desklm --version` in the bundle is the release's version
    assert any(dest.startswith("desklm-") and dest.endswith(".dist-info") for _, dest in datas)


def test_llama_cpp_libraries_are_bundled_where_llama_cpp_loads_them():
    import llama_cpp

    # llama-cpp-python opens lib<name>.so / .dylib / <name>.dll by name; the versioned
    # sonames they link to (libggml.so.0) follow from the bundle's binary analysis
    lib_dir = Path(llama_cpp.__file__).parent / "lib"
    on_disk = {p.name for p in lib_dir.iterdir() if p.suffix in (".so", ".dll", ".dylib")}
    libs = bundle.binaries()
    assert {Path(src).name for src, _ in libs} >= on_disk
    assert {dest.replace(os.sep, "/") for _, dest in libs} == {"llama_cpp/lib"}
    assert any(name.startswith("libllama") or name == "llama.dll" for name in on_disk)


def test_the_bundled_model_is_the_one_the_frozen_app_finds(tmp_path, monkeypatch, cache_dir):
    # the build assembles the model into its cache; here, the tests' shared one
    monkeypatch.setenv("DESKLM_BUILD_CACHE", str(cache_dir / "models"))
    src, dest = bundle.embedded_model()
    assert Path(src).stat().st_size > 200 * 2**20 and dest == "models"
    # lay it out as the bundle does and ask the app, frozen, where its model is
    (tmp_path / dest).mkdir()
    (tmp_path / dest / Path(src).name).symlink_to(src)
    monkeypatch.setattr(sys, "_MEIPASS", str(tmp_path), raising=False)
    from desklm.engine import embedded_model_path

    assert embedded_model_path() == tmp_path / dest / Path(src).name
