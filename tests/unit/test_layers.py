"""The master's layers (docs/architecture.md): faces -> api -> service, no import back up.

Every import in titan/master/*.py counts: at the top, inside functions, and under
`if TYPE_CHECKING:` (a cycle a type checker walks is still a cycle a reader walks).
"""
from __future__ import annotations

import ast
import os
from typing import Optional

from twisted.trial.unittest import SynchronousTestCase

import titan.master

PACKAGE = "titan.master"
MASTER_DIR = os.path.dirname(titan.master.__file__)
# The faces: they call the API and never the service that composes them.
ADAPTERS = ("server", "legacy")
SERVICE = "service"


def _imported(node: ast.AST) -> list[str]:
    """The modules of titan.master an import statement names (short names)."""
    names = []
    if isinstance(node, ast.Import):
        for alias in node.names:
            if alias.name.startswith(PACKAGE + "."):
                names.append(alias.name[len(PACKAGE) + 1:].split(".")[0])
    elif isinstance(node, ast.ImportFrom):
        module = node.module or ""
        if node.level == 1:  # from . import x / from .x import y
            module = f"{PACKAGE}.{module}" if module else PACKAGE
        if module == PACKAGE:  # from titan.master import service
            names.extend(alias.name for alias in node.names)
        elif module.startswith(PACKAGE + "."):
            names.append(module[len(PACKAGE) + 1:].split(".")[0])
    return names


def master_imports(directory: str) -> dict[str, set[str]]:
    """Module (short name) -> the modules of titan.master it imports, anywhere in it."""
    graph: dict[str, set[str]] = {}
    for entry in sorted(os.listdir(directory)):
        if not entry.endswith(".py") or entry == "__init__.py":
            continue
        name = entry[:-3]
        with open(os.path.join(directory, entry), encoding="utf-8") as f:
            tree = ast.parse(f.read(), filename=entry)
        graph[name] = {m for node in ast.walk(tree) for m in _imported(node) if m != name}
    return graph


def find_cycle(graph: dict[str, set[str]]) -> Optional[list[str]]:
    """One import cycle (a -> b -> ... -> a), or None."""
    state: dict[str, int] = {}  # 1: on the current path, 2: done
    path: list[str] = []

    def visit(node: str) -> Optional[list[str]]:
        state[node] = 1
        path.append(node)
        for nxt in sorted(graph.get(node, ())):
            if state.get(nxt) == 1:
                return path[path.index(nxt):] + [nxt]
            if nxt not in state:
                found = visit(nxt)
                if found:
                    return found
        path.pop()
        state[node] = 2
        return None

    for node in sorted(graph):
        if node not in state:
            found = visit(node)
            if found:
                return found
    return None


def reaches(graph: dict[str, set[str]], start: str, target: str) -> Optional[list[str]]:
    """The import path from `start` to `target`, or None."""
    seen, stack = {start}, [[start]]
    while stack:
        path = stack.pop()
        for nxt in sorted(graph.get(path[-1], ())):
            if nxt == target:
                return path + [nxt]
            if nxt not in seen:
                seen.add(nxt)
                stack.append(path + [nxt])
    return None


def layer_problems(directory: str) -> list[str]:
    """What breaks the layering of the modules in `directory`, one line each."""
    graph = master_imports(directory)
    problems = []
    cycle = find_cycle(graph)
    if cycle:
        problems.append("import cycle: " + " -> ".join(cycle))
    for adapter in ADAPTERS:
        path = reaches(graph, adapter, SERVICE) if adapter in graph else None
        if path:
            problems.append(f"the {adapter} face imports the service: " + " -> ".join(path))
    return problems


class LayerTests(SynchronousTestCase):
    def test_titan_master_has_no_cycle_and_no_face_imports_the_service(self):
        self.assertEqual(layer_problems(MASTER_DIR), [])

    def test_the_faces_and_the_service_use_the_api(self):
        graph = master_imports(MASTER_DIR)
        for module in ADAPTERS + (SERVICE,):
            self.assertIn("api", graph[module], module)
        self.assertEqual(graph["api"], set())  # the API imports nothing of the master


# Faces that live in packages of their own: of titan.master they may import the API only.
FACE_PACKAGES = ("titan.web",)


def outside_face_problems(package: str) -> list[str]:
    """Imports of titan.master modules other than api in the modules of `package`."""
    import importlib
    directory = os.path.dirname(importlib.import_module(package).__file__)
    problems = []
    for entry in sorted(os.listdir(directory)):
        if not entry.endswith(".py"):
            continue
        with open(os.path.join(directory, entry), encoding="utf-8") as f:
            tree = ast.parse(f.read(), filename=entry)
        used = {m for node in ast.walk(tree) for m in _imported(node)}
        for module in sorted(used - {"api"}):
            problems.append(f"{package}.{entry[:-3]} imports titan.master.{module}")
    return problems


class FacePackageTests(SynchronousTestCase):
    def test_the_web_face_imports_the_api_only(self):
        for package in FACE_PACKAGES:
            self.assertEqual(outside_face_problems(package), [])


class CheckerTests(SynchronousTestCase):
    """The check above fails where it should (on small made-up packages)."""

    def tree(self, files: dict[str, str]) -> str:
        directory = self.mktemp()
        os.makedirs(directory)
        for name, text in dict({"__init__.py": ""}, **files).items():
            with open(os.path.join(directory, name), "w") as f:
                f.write(text)
        return directory

    def test_a_cycle_under_type_checking(self):
        directory = self.tree({
            "service.py": "from titan.master.api import MasterApi\n",
            "api.py": "from typing import TYPE_CHECKING\n"
                      "if TYPE_CHECKING:\n    from titan.master.autoscale import X\n",
            "autoscale.py": "def f():\n    from titan.master import api\n",
        })
        self.assertEqual(layer_problems(directory),
                         ["import cycle: api -> autoscale -> api"])

    def test_a_face_importing_the_service(self):
        for text in ("from titan.master.service import MasterService\n",
                     "from typing import TYPE_CHECKING\nif TYPE_CHECKING:\n"
                     "    from titan.master.service import MasterService\n",
                     "from . import service\n", "import titan.master.service\n"):
            directory = self.tree({"server.py": text, "service.py": ""})
            self.assertEqual(layer_problems(directory),
                             ["the server face imports the service: server -> service"],
                             text)

    def test_a_face_reaching_the_service_through_another_module(self):
        directory = self.tree({"legacy.py": "from .peer import x\n",
                               "peer.py": "from titan.master.service import y\n",
                               "service.py": ""})
        self.assertEqual(layer_problems(directory), [
            "the legacy face imports the service: legacy -> peer -> service"])
