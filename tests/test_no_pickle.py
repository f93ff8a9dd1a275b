"""No pickle anywhere: unpickling runs code chosen by whoever wrote the bytes.

A static check over every Python file the project ships or runs: no pickle-family import, and
every numpy/torch load or save call names its pickle-free mode explicitly.
"""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
PACKAGES = ("bundle", "training", "service", "batch_scoring", "bench", "scripts", "docker")
PICKLE_MODULES = {"pickle", "cPickle", "_pickle", "dill", "cloudpickle", "joblib", "shelve"}
# call -> the keyword (and value) that keeps it pickle-free
REQUIRED = {
    ("np", "load"): ("allow_pickle", False),
    ("numpy", "load"): ("allow_pickle", False),
    ("np", "save"): ("allow_pickle", False),
    ("numpy", "save"): ("allow_pickle", False),
    ("torch", "load"): ("weights_only", True),
}
# bench/out holds what make bench builds: the peers' venvs (their packages are theirs) and results.
BUILT = ROOT / "bench" / "out"
SOURCES = sorted(
    p for package in PACKAGES for p in (ROOT / package).rglob("*.py") if not p.is_relative_to(BUILT)
)


def _problems(path: Path) -> list[str]:
    tree = ast.parse(path.read_text(), filename=str(path))
    found: list[str] = []
    for node in ast.walk(tree):
        if isinstance(node, ast.Import | ast.ImportFrom):
            names = [a.name for a in node.names] if isinstance(node, ast.Import) else [
                node.module or ""]  # fmt: skip
            for name in names:
                if name.split(".")[0] in PICKLE_MODULES:
                    found.append(f"line {node.lineno}: imports {name}")
        if isinstance(node, ast.Call) and isinstance(node.func, ast.Attribute):
            owner = node.func.value
            if isinstance(owner, ast.Name) and (owner.id, node.func.attr) in REQUIRED:
                keyword, value = REQUIRED[(owner.id, node.func.attr)]
                given = {k.arg: k.value for k in node.keywords}
                constant = given.get(keyword)
                if not (isinstance(constant, ast.Constant) and constant.value is value):
                    found.append(
                        f"line {node.lineno}: {owner.id}.{node.func.attr} without {keyword}={value}"
                    )
    return found


def test_the_scan_covers_the_code() -> None:
    assert any(p.relative_to(ROOT).as_posix() == "service/codecs/npy.py" for p in SOURCES)
    assert len(SOURCES) > 40


@pytest.mark.parametrize("path", SOURCES, ids=lambda p: str(p.relative_to(ROOT)))
def test_no_pickle(path: Path) -> None:
    assert _problems(path) == []


def test_the_scan_catches_what_it_should(tmp_path: Path) -> None:
    sample = tmp_path / "sample.py"
    sample.write_text(
        "import pickle\nimport numpy as np\nimport torch\n"
        "np.load('a.npy')\nnp.load('b.npy', allow_pickle=True)\nnp.save('c.npy', x)\n"
        "torch.load('d.pt')\nnp.load('ok.npy', allow_pickle=False)\n"
        "torch.load('ok.pt', weights_only=True)\n"
    )
    assert len(_problems(sample)) == 5
