"""No code path of the library, recipes or scripts unpickles untrusted data: every `torch.load` passes
`weights_only=True`, and there is no builtin `eval`/`exec`, no `pickle.load(s)`, no `np.load(allow_pickle=True)`.
The scan parses each file with `ast`, so comments, docstrings and `model.eval()` do not count."""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[2]
SCANNED = ("sparse_core", "nanogpt", "deit", "cramming", "accelerate", "scripts")
PICKLE_MODULES = {"pickle", "cPickle", "_pickle", "dill", "cloudpickle", "joblib"}
PICKLE_CALLS = {"load", "loads", "Unpickler"}


def _is_true(node: ast.expr) -> bool:
    return isinstance(node, ast.Constant) and node.value is True


def find_unsafe(source: str, filename: str = "<src>") -> list[str]:
    """'file:line: what' for each unsafe call or import in `source`."""
    tree = ast.parse(source, filename)
    modules: dict[str, str] = {}  # local name -> module it is bound to (import torch as th -> th: torch)
    functions: dict[str, str] = {}  # local name -> 'module.function' (from torch import load)
    found = []
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            for a in node.names:
                modules[(a.asname or a.name).split(".")[0]] = a.name.split(".")[0] if not a.asname else a.name
        elif isinstance(node, ast.ImportFrom) and node.module:
            for a in node.names:
                functions[a.asname or a.name] = f"{node.module}.{a.name}"
                if node.module.split(".")[0] in PICKLE_MODULES and a.name in PICKLE_CALLS:
                    found.append(f"{filename}:{node.lineno}: from {node.module} import {a.name}")
    for node in ast.walk(tree):
        if not isinstance(node, ast.Call):
            continue
        f, where = node.func, f"{filename}:{node.lineno}"
        keywords = {k.arg: k.value for k in node.keywords}
        if isinstance(f, ast.Name):
            target = functions.get(f.id, f"builtins.{f.id}" if f.id in ("eval", "exec") else "")
        elif isinstance(f, ast.Attribute) and isinstance(f.value, ast.Name):
            target = f"{modules.get(f.value.id, f.value.id)}.{f.attr}"
        elif isinstance(f, ast.Attribute) and isinstance(f.value, ast.Attribute) and isinstance(f.value.value, ast.Name):
            target = f"{modules.get(f.value.value.id, f.value.value.id)}.{f.value.attr}.{f.attr}"
        else:
            continue
        if target in ("builtins.eval", "builtins.exec"):
            found.append(f"{where}: builtin {target.split('.')[1]}()")
        elif target in ("torch.load", "torch.serialization.load"):
            if None in keywords or not _is_true(keywords.get("weights_only", ast.Constant(None))):
                found.append(f"{where}: {target} without weights_only=True")
        elif target.split(".")[0] in PICKLE_MODULES and target.split(".")[-1] in PICKLE_CALLS:
            found.append(f"{where}: {target}()")
        elif target in ("numpy.load", "np.load") and _is_true(keywords.get("allow_pickle", ast.Constant(None))):
            found.append(f"{where}: {target}(allow_pickle=True)")
    return found


def _python_files() -> list[Path]:
    return sorted(p for top in SCANNED if (REPO / top).is_dir() for p in (REPO / top).rglob("*.py"))


def test_repo_has_no_unsafe_deserialization_or_eval():
    files = _python_files()
    assert any(p.parts[-3:] == ("sparse_core", "train", "checkpoint.py") for p in files)
    problems = [hit for p in files for hit in find_unsafe(p.read_text(encoding="utf-8"), str(p.relative_to(REPO)))]
    assert not problems, "unsafe calls (load with torch.load(..., weights_only=True); no eval/exec/pickle):\n  " + \
        "\n  ".join(problems)


@pytest.mark.parametrize("source, flagged", [
    ("import torch\ntorch.load(p)", True),
    ("import torch\ntorch.load(p, weights_only=False)", True),
    ("import torch\ntorch.load(p, **kw)", True),
    ("import torch as th\nth.load(p, map_location='cpu')", True),
    ("from torch import load\nload(p)", True),
    ("import torch\ntorch.serialization.load(p)", True),
    ("import torch\ntorch.load(p, map_location='cpu', weights_only=True)", False),
    ("eval('1 + 1')", True),
    ("exec(code)", True),
    ("import builtins\nbuiltins.eval(s)", True),
    ("model.eval()\nself.model.eval()\nnet.train().eval()", False),
    ("import pickle\npickle.loads(b)", True),
    ("import pickle as pk\npk.load(f)", True),
    ("from pickle import loads", True),
    ("import pickle\npickle.dumps(x)", False),
    ("import numpy as np\nnp.load(f, allow_pickle=True)", True),
    ("import numpy as np\nnp.load(f, allow_pickle=False)", False),
    ('"""Use torch.load(path) and eval(x) and pickle.loads(b)."""\n# torch.load(p); exec(c)', False),
    ("import torch\ntorch.hub.load('a', 'b')", False),
])
def test_scanner_catches_each_pattern(source, flagged):
    assert bool(find_unsafe(source)) is flagged, find_unsafe(source)
