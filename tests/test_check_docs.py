"""scripts/check_docs.py, the README's examples checker (`make docs-check`, CI): it must read a
block as a reader does and fail on an output that differs, or it proves nothing."""

from __future__ import annotations

import re
from pathlib import Path

from tests.scripts import load_script

ROOT = Path(__file__).resolve().parents[1]


docs = load_script("check_docs")


def _blocks(tmp_path: Path, text: str) -> list:  # type: ignore[type-arg]
    page = tmp_path / "PAGE.md"
    page.write_text(text)
    return list(docs.blocks_of(page))


def test_outputs_match_with_ellipses_and_close_numbers() -> None:
    match = docs.output_matches
    assert match(['{"scores":[0.0080801],"n":3}'], '{"scores":[0.00808011355],"n":3}') is None
    assert match(['{"outputs":[[1.5,2, ...]],"k":1}'], '{"outputs":[[1.5,2,7,8]],"k":1}') is None
    assert match(["x-seed: 0", "..."], "x-seed: 0\nx-request-id: abc\n") is None


def test_outputs_that_differ_fail() -> None:
    match = docs.output_matches
    assert match(['{"scores":[0.0113]}'], '{"scores":[0.0032]}') == "expected 0.0113, got 0.0032"
    assert match(['{"is_anomaly":[true]}'], '{"is_anomaly":[false]}') is not None
    assert match(['{"a":1}'], '{"a":1,"b":2}') is not None  # no ellipsis, nothing extra
    assert match(["x-seed: 0"], "x-seed: 0\nx-request-id: abc") is not None


def test_console_blocks_split_commands_continuations_and_outputs(tmp_path: Path) -> None:
    block = _blocks(
        tmp_path,
        "```console\n"
        "$ D='[1]'\n"
        "\n"
        "# a comment\n"
        "$ curl -s localhost:8000/x \\\n"
        '    -d "$D"\n'
        '{"ok":true}\n'
        '$ python -c "\n'
        'print(1)"\n'
        "1\n"
        "```\n",
    )[0]
    assert [example.command for example in block.examples] == [
        "D='[1]'",
        'curl -s localhost:8000/x \\\n    -d "$D"',
        'python -c "\nprint(1)"',
    ]
    assert [example.expected for example in block.examples] == [[], ['{"ok":true}'], ["1"]]


def test_blocks_marked_not_run_are_skipped_with_their_reason(tmp_path: Path) -> None:
    blocks = _blocks(
        tmp_path,
        "<!-- docs: not run (needs a cluster) -->\n```sh\nkubectl apply -k x\n```\n\n"
        "```sh\nmkdir -p data\n```\n```yaml\na: 1\n```\n",
    )
    assert [(b.kind, b.skipped, len(b.examples)) for b in blocks] == [
        ("sh", "needs a cluster", 0),
        ("sh", None, 1),
        ("yaml", None, 0),
    ]


def test_the_readme_and_the_pages_have_examples_to_run() -> None:
    files = docs.documentation_files()
    assert files[0].name == "README.md"
    assert {path.name for path in files[1:]} == {path.name for path in (ROOT / "docs").glob("*.md")}
    blocks = [block for path in files for block in docs.blocks_of(path)]
    examples = [example for block in blocks for example in block.examples]
    assert len(examples) >= 30
    assert len([e for e in examples if e.source.startswith("README.md")]) >= 20
    assert all(block.skipped for block in blocks if block.kind == "sh" and not block.examples)


def test_no_test_serves_the_checkouts_models_folder() -> None:
    """A reader trains bundles of their own into `models/` (the README's first example does):
    tests serve `tests.bundles.committed_repository()`, a copy of the committed bundle alone,
    so what a user put there never changes what a test sees (issue 19: 5 tests failed)."""
    served_whole = re.compile(
        r"""(--model-repository["'],\s*["']models["'])"""
        r"""|(model_repository=\s*(REPO_)?ROOT\s*/\s*["']models["']\s*[,)])"""
        r"""|(repository: str \| Path = ["']models["'])"""
    )
    offenders = [
        f"{path.relative_to(ROOT)}: {found.group(0)}"
        for path in sorted((ROOT / "tests").rglob("*.py"))
        if path.name != "test_check_docs.py"
        for found in served_whole.finditer(path.read_text())
    ]
    assert offenders == []
