"""The layering of docs/DESIGN.md: the library never imports the application,
and needs none of the application's dependencies."""

import ast
import subprocess
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]
APP_ONLY = ("charrnn_fast.charrnn", "tqdm", "matplotlib", "numpy")


def _library_files() -> list[Path]:
    lib = REPO / "charrnn_fast"
    files = [p for p in lib.rglob("*.py") if "charrnn" not in p.relative_to(lib).parts[:-1]]
    files += list((REPO / "kernels").glob("*.py"))
    return [p for p in files if p.parent.name != "charrnn"]


def test_library_sources_do_not_import_the_application():
    offenders = []
    files = _library_files()
    assert any(p.name == "functional.py" for p in files)
    for path in files:
        for node in ast.walk(ast.parse(path.read_text())):
            names = []
            if isinstance(node, ast.Import):
                names = [a.name for a in node.names]
            elif isinstance(node, ast.ImportFrom) and node.module:
                names = [node.module] + [f"{node.module}.{a.name}" for a in node.names]
            for n in names:
                if any(n == m or n.startswith(m + ".") for m in APP_ONLY):
                    offenders.append(f"{path.relative_to(REPO)}:{node.lineno} imports {n}")
    assert not offenders, offenders


def test_bench_depends_on_the_library_only():
    offenders = []
    for path in sorted((REPO / "bench").glob("*.py")):
        for node in ast.walk(ast.parse(path.read_text())):
            mod = getattr(node, "module", None) if isinstance(node, ast.ImportFrom) else None
            names = [a.name for a in node.names] if isinstance(node, ast.Import) else [mod or ""]
            offenders += [
                f"{path.name}:{node.lineno}" for n in names if "charrnn_fast.charrnn" in n
            ]
    assert not offenders, offenders


def test_using_the_lstm_loads_no_application_module():
    # torch itself may import tqdm: count only what charrnn_fast adds.
    code = (
        "import sys, torch\n"
        "before = set(sys.modules)\n"
        "import charrnn_fast\n"
        "m = charrnn_fast.LSTM(3, 4, 2)\n"
        "m(torch.randn(5, 2, 3))[0].sum().backward()\n"
        "added = set(sys.modules) - before\n"
        f"bad = [n for n in added if n.split('.')[0] in {('tqdm', 'matplotlib')!r}"
        " or n.startswith('charrnn_fast.charrnn')]\n"
        "print(bad)\n"
        "sys.exit(1 if bad else 0)\n"
    )
    r = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, cwd=REPO)
    assert r.returncode == 0, r.stdout + r.stderr


def _package_imports() -> dict[str, set[str]]:
    """module -> the charrnn_fast modules it imports (anywhere in its body)."""
    import ast

    root = Path(__file__).resolve().parents[2]
    mods: dict[str, set[str]] = {}
    for p in (root / "charrnn_fast").rglob("*.py"):
        name = ".".join(p.relative_to(root).with_suffix("").parts).removesuffix(".__init__")
        deps = set()
        for node in ast.walk(ast.parse(p.read_text())):
            if isinstance(node, ast.ImportFrom) and (node.module or "").startswith("charrnn_fast"):
                deps.add(node.module)
                deps.update(f"{node.module}.{a.name}" for a in node.names)
            elif isinstance(node, ast.Import):
                deps.update(a.name for a in node.names if a.name.startswith("charrnn_fast"))
        mods[name] = deps
    return {k: {d for d in v if d in mods and d != k} for k, v in mods.items()}


def test_no_import_circle_between_modules():
    """A package importing its own submodules aside, no module reaches itself."""
    graph = _package_imports()

    def nested(a: str, b: str) -> bool:
        return a.startswith(b + ".") or b.startswith(a + ".")

    for start in graph:
        stack, seen = [(start, [start])], set()
        while stack:
            node, path = stack.pop()
            for dep in graph[node]:
                if nested(node, dep):
                    continue
                assert dep != start, " -> ".join([*path, dep])
                if dep not in seen:
                    seen.add(dep)
                    stack.append((dep, [*path, dep]))


def test_backends_do_not_import_their_registry():
    graph = _package_imports()
    registry = "charrnn_fast.backends"
    for name, deps in graph.items():
        if name.startswith(registry + "."):
            bad = {d for d in deps if d.startswith(registry + ".") and d.split(".")[-1] in
                   ("Backend", "register", "select", "get", "names", "report", "requested")}  # fmt: skip
            assert not bad, f"{name} imports {bad} from the registry"
