"""The package's modules import each other without a circle.

An import that runs when a module is imported (module level, outside `if TYPE_CHECKING:`)
must never close a circle. The sinks, read by the proxy, the worker, replay and the
reports, keep no circle even through late imports inside functions: a sink scheme is
found through the registry in `sinks.uri`, never by `uri` importing a sink.
"""

from __future__ import annotations

import ast
from pathlib import Path

import shadowproxy

ROOT = Path(shadowproxy.__file__).parent


def _modules() -> dict[str, Path]:
    out = {}
    for path in sorted(ROOT.rglob("*.py")):
        parts = path.relative_to(ROOT.parent).with_suffix("").parts
        out[".".join(parts[:-1] if parts[-1] == "__init__" else parts)] = path
    return out


def _imports(name: str, path: Path, known: set[str], *, late: bool) -> set[str]:
    """The package modules `name` imports: while it is imported, or (late) anywhere in it."""
    tree = ast.parse(path.read_text("utf-8"))
    package = name if path.name == "__init__.py" else name.rpartition(".")[0]
    found: set[str] = set()

    def add(node: ast.Import | ast.ImportFrom) -> None:
        if isinstance(node, ast.Import):
            found.update(a.name for a in node.names)
            return
        base = node.module or ""
        if node.level:
            up = package.split(".")[: len(package.split(".")) - node.level + 1]
            base = ".".join([*up, base] if base else up)
        # `from pkg import mod` needs only pkg.mod (pkg, its parent, is always under way);
        # `from pkg import name` needs pkg's __init__ to have run
        for a in node.names:
            found.add(f"{base}.{a.name}" if f"{base}.{a.name}" in known else base)

    def visit(body: list[ast.stmt]) -> None:
        for node in body:
            if isinstance(node, ast.If) and "TYPE_CHECKING" in ast.unparse(node.test):
                visit(node.orelse)
            elif isinstance(node, ast.Import | ast.ImportFrom):
                add(node)
            elif isinstance(node, ast.If | ast.Try | ast.With):
                for field in ("body", "orelse", "finalbody"):
                    visit(getattr(node, field, []))
                for handler in getattr(node, "handlers", []):
                    visit(handler.body)

    if late:
        for node in ast.walk(tree):
            if isinstance(node, ast.Import | ast.ImportFrom):
                add(node)
    else:
        visit(tree.body)
    return {m for m in found if m in known and m != name}


def _circles(graph: dict[str, set[str]]) -> list[str]:
    state: dict[str, int] = {}
    stack: list[str] = []
    circles: list[str] = []

    def walk(node: str) -> None:
        state[node] = 1
        stack.append(node)
        for nxt in sorted(graph[node]):
            if state.get(nxt) == 1:
                circles.append(" -> ".join([*stack[stack.index(nxt):], nxt]))
            elif nxt not in state:
                walk(nxt)
        stack.pop()
        state[node] = 2

    for name in sorted(graph):
        if name not in state:
            walk(name)
    return circles


def test_no_module_level_import_circle_in_the_package() -> None:
    modules = _modules()
    graph = {n: _imports(n, p, set(modules), late=False) for n, p in modules.items()}
    assert _circles(graph) == []


def test_the_sinks_have_no_import_circle_even_through_late_imports() -> None:
    modules = {n: p for n, p in _modules().items() if n.startswith("shadowproxy.sinks")}
    graph = {n: _imports(n, p, set(modules), late=True) for n, p in modules.items()}
    assert "shadowproxy.sinks.kafka" in graph
    assert _circles(graph) == []


LOWER_LAYERS = ("shadowproxy.engine", "shadowproxy.rules", "shadowproxy.sinks", "shadowproxy.shadow")


def test_the_lower_layers_never_import_the_proxy_nor_mitmproxy_even_late() -> None:
    """engine, rules, sinks and shadow run in the worker and in replay: mitmproxy stays in
    proxy/, and an upper layer hands a lower one what it needs (the worker's egress listener
    arrives as a class in its picklable config), never the other way round."""
    modules = _modules()
    offenders = []
    for name, path in modules.items():
        if not name.startswith(LOWER_LAYERS):
            continue
        tree = ast.parse(path.read_text("utf-8"))
        for node in ast.walk(tree):
            if isinstance(node, ast.Import):
                targets = [a.name for a in node.names]
            elif isinstance(node, ast.ImportFrom) and not node.level:
                targets = [node.module or ""]
            else:
                continue
            offenders += [f"{name} imports {t}" for t in targets
                          if t.split(".")[0] == "mitmproxy" or t.startswith("shadowproxy.proxy")]
    assert offenders == []
