"""The import graph is the architecture: no cycles, and the lower floors never import the higher."""

from __future__ import annotations

import ast
from pathlib import Path

PACKAGE = Path(__file__).resolve().parent.parent / "relay"


def module_name(path: Path) -> str:
    parts = path.relative_to(PACKAGE.parent).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def imports() -> dict[str, set[str]]:
    """Every relay module and the relay modules it imports, anywhere in it."""
    graph: dict[str, set[str]] = {}
    for path in PACKAGE.rglob("*.py"):
        name = module_name(path)
        found: set[str] = set()
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, ast.Import):
                found.update(alias.name for alias in node.names)
            elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
                # "from package import module" imports the module (the package
                # is only where it lives); "from module import name", the module.
                found.update(f"{node.module}.{alias.name}" for alias in node.names)
                found.add(f"{node.module}?")
        graph[name] = found
    modules = set(graph)

    def resolve(found: set[str]) -> set[str]:
        named = {m for m in found if m in modules}
        for entry in found:
            if entry.endswith("?"):
                module = entry[:-1]
                if module in modules and not any(n.startswith(module + ".") for n in named):
                    named.add(module)
        return named

    return {name: resolve(found) - {name} for name, found in graph.items()}


def third_party(name: str) -> set[str]:
    path = PACKAGE.parent / (name.replace(".", "/") + ".py")
    if not path.exists():
        path = PACKAGE.parent / name.replace(".", "/") / "__init__.py"
    roots = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.Import):
            roots.update(alias.name.split(".")[0] for alias in node.names)
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            roots.add(node.module.split(".")[0])
    return roots


def test_no_import_cycles() -> None:
    graph = imports()
    visiting: list[str] = []
    done: set[str] = set()
    cycles: list[list[str]] = []

    def visit(name: str) -> None:
        if name in done:
            return
        if name in visiting:
            cycles.append([*visiting[visiting.index(name) :], name])
            return
        visiting.append(name)
        for dependency in sorted(graph[name]):
            if dependency != "relay":
                visit(dependency)
        visiting.pop()
        done.add(name)

    for name in sorted(graph):
        visit(name)
    assert cycles == []


def test_the_lower_floors_import_nothing_of_redis_or_of_the_floors_above() -> None:
    graph = imports()
    pure = [
        "relay.signals",
        "relay._async",
        "relay.naming",
        "relay.wire",
        "relay.accounting",
        "relay.ops",
        "relay.presence",
        "relay.tracing",
    ]
    for name in pure:
        assert not {"redis", "fakeredis"} & third_party(name), name
        assert not {
            m
            for m in graph[name]
            if m.startswith(("relay.transport", "relay.core", "relay.bridge", "relay.aio"))
        }, name
    core = graph["relay.core"]
    assert not {
        m
        for m in core
        if m.startswith(
            (
                "relay.bridge",
                "relay.aio",
                "relay.cli",
                "relay.contrib",
                "relay.transport.redis",
                "relay.transport.sentinel",
            )
        )
    }
    for name, dependencies in graph.items():
        if name.startswith("relay.transport"):
            assert not {
                m
                for m in dependencies
                if m.startswith(("relay.core", "relay.bridge", "relay.aio", "relay.cli"))
            }, name
