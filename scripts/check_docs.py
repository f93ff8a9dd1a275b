"""Run the shell examples of README.md and docs/ against a real server, the way a reader would.

README.md comes first, then the documentation site's pages in the order of mkdocs.yml's `nav`
(a reader goes on from the README's tour to the pages). Every fenced `console` and `sh` block
is run, in order, by one bash session in a scratch folder
that holds a copy of the committed model repository (`models/digits-vae/1`), with the project's
virtual environment activated, as the README tells a reader to do once. A server started like
`make serve` (vae-serve on 127.0.0.1:8000 with gRPC on 8001, or on free ports written into the
commands where those are taken) answers them.

- `console` blocks: `$ ` starts a command (a line ending in `\\` or an open quote goes on to
  the next); the lines after it, up to a blank line, a `# ` comment or the next `$ `, are its
  output. A command must exit 0, and its output must match: `...` stands for anything, and
  numbers may differ by 1e-3 relative (scores move in the last digits across CPUs).
- `sh` blocks: every line is a command; each must exit 0.
- A block whose fence follows a line `<!-- docs: not run (why) -->` is skipped, with the why
  printed: blocks that start servers, containers or clusters of their own.

Usage: `python scripts/check_docs.py [FILE.md ...]` (no files: README.md and every page); exit 1
on any failure (CI runs it).
"""

from __future__ import annotations

import argparse
import contextlib
import math
import os
import re
import shlex
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path

import httpx
import yaml

ROOT = Path(__file__).resolve().parents[1]
VENV_BIN = Path(sys.executable).parent
NOT_RUN = re.compile(r"<!--\s*docs:\s*not run\s*\((.+)\)\s*-->")
NUMBER = re.compile(r"-?\d+(?:\.\d+)?(?:[eE][-+]?\d+)?")
ELLIPSIS = "..."
RELATIVE_TOLERANCE = 1e-3
ABSOLUTE_TOLERANCE = 1e-6
COMMAND_SECONDS = 600


@dataclass
class Example:
    source: str  # file:line
    command: str
    expected: list[str] | None  # None: only the exit status counts


@dataclass
class Block:
    source: str
    kind: str
    lines: list[str]
    skipped: str | None = None
    examples: list[Example] = field(default_factory=list)


def blocks_of(path: Path) -> list[Block]:
    lines = path.read_text().splitlines()
    found: list[Block] = []
    index = 0
    while index < len(lines):
        fence = re.fullmatch(r"```(\w*)\s*", lines[index])
        if fence is None:
            index += 1
            continue
        end = index + 1
        while end < len(lines) and not lines[end].startswith("```"):
            end += 1
        kind = fence.group(1)
        previous = lines[index - 1] if index else ""
        skipped = NOT_RUN.search(previous)
        block = Block(
            f"{path.name}:{index + 1}",
            kind,
            lines[index + 1 : end],
            skipped.group(1) if skipped else None,
        )
        if kind in ("console", "sh") and block.skipped is None:
            block.examples = examples_of(block, path.name, index + 2)
        found.append(block)
        index = end + 1
    return found


def complete(command: str) -> bool:
    """Whether bash would run `command` as it stands: no trailing backslash, no open quote."""
    if command.endswith("\\"):
        return False
    try:
        shlex.split(command, comments=True)
    except ValueError:
        return False
    return True


def examples_of(block: Block, name: str, first_line: int) -> list[Example]:
    examples: list[Example] = []
    lines = block.lines
    index = 0
    while index < len(lines):
        line = lines[index]
        stripped = line.strip()
        if not stripped or stripped.startswith("#"):
            index += 1
            continue
        if block.kind == "console":
            if not line.startswith("$ "):
                raise SystemExit(f"{name}:{first_line + index}: output without a command: {line}")
            line = line[2:]
        start = index
        command = line
        while not complete(command) and index + 1 < len(lines):
            index += 1
            command += "\n" + lines[index]
        index += 1
        expected: list[str] | None = None
        if block.kind == "console":
            expected = []
            while index < len(lines):
                following = lines[index]
                if not following.strip() or following.startswith(("$ ", "# ")):
                    break
                expected.append(following)
                index += 1
        examples.append(Example(f"{name}:{first_line + start}", command, expected))
    return examples


def output_matches(expected: list[str], actual: str) -> str | None:
    """None when `actual` is what `expected` shows, else what differs."""
    text = "\n".join(expected).strip()
    pattern_parts: list[str] = []
    numbers: list[str] = []
    pieces = text.split(ELLIPSIS)
    for piece_index, piece in enumerate(pieces):
        # `[1, 2, ...]` stands for `[1,2,3]` too: the spaces beside an ellipsis are the
        # reader's, not the output's
        if piece_index:
            pattern_parts.append(".*?")
            piece = piece.lstrip()
        if piece_index < len(pieces) - 1:
            piece = piece.rstrip()
        position = 0
        for found in NUMBER.finditer(piece):
            pattern_parts.append(re.escape(piece[position : found.start()]))
            pattern_parts.append(f"({NUMBER.pattern})")
            numbers.append(found.group())
            position = found.end()
        pattern_parts.append(re.escape(piece[position:]))
    matched = re.fullmatch("".join(pattern_parts), actual.strip(), flags=re.DOTALL)
    if matched is None:
        return "the output differs in its text"
    for want, got in zip(numbers, matched.groups(), strict=True):
        if want == got:
            continue
        if not math.isclose(
            float(want), float(got), rel_tol=RELATIVE_TOLERANCE, abs_tol=ABSOLUTE_TOLERANCE
        ):
            return f"expected {want}, got {got}"
    return None


def free_port(preferred: int) -> int:
    for port in (preferred, 0):
        with socket.socket() as probe:
            try:
                probe.bind(("127.0.0.1", port))
            except OSError:
                continue
            chosen: int = probe.getsockname()[1]
            return chosen
    raise RuntimeError("no free port")


def start_server(workdir: Path, port: int, grpc_port: int) -> subprocess.Popen[bytes]:
    environment = {k: v for k, v in os.environ.items() if not k.startswith("VAE_")}
    environment["VAE_GRPC_PORT"] = str(grpc_port)
    process = subprocess.Popen(
        [str(VENV_BIN / "vae-serve"), "--model-repository", "models", "--port", str(port)],
        cwd=workdir,
        env=environment,
        stdout=(workdir / "server.log").open("wb"),
        stderr=subprocess.STDOUT,
        start_new_session=True,
    )
    deadline = time.monotonic() + 90
    while time.monotonic() < deadline:
        if process.poll() is not None:
            raise RuntimeError((workdir / "server.log").read_text()[-2000:])
        try:
            if httpx.get(f"http://127.0.0.1:{port}/readyz", timeout=1).status_code == 200:
                return process
        except httpx.TransportError:
            pass
        time.sleep(0.2)
    raise RuntimeError("the server did not become ready in 90 s")


def run_examples(examples: list[Example], workdir: Path, port: int, grpc_port: int) -> list[str]:
    """One bash session runs them all, in order (variables and files carry over, as in a
    reader's terminal); each one's output and status land in files beside it."""
    results = workdir / ".docs-results"
    results.mkdir()
    script = [
        "set -u",
        f"source {shlex.quote(str(VENV_BIN / 'activate'))}",
        f"cd {shlex.quote(str(workdir))}",
    ]
    for number, example in enumerate(examples):
        command = example.command.replace("localhost:8000", f"localhost:{port}")
        command = command.replace("localhost:8001", f"localhost:{grpc_port}")
        script.append(
            f"{{\n{command}\n}} > {results}/{number}.out 2>&1 < /dev/null; "
            f"echo $? > {results}/{number}.rc"
        )
    (workdir / ".docs-script.sh").write_text("\n".join(script) + "\n")
    # Past the time limit, the examples that did not finish are reported as not run, below.
    with contextlib.suppress(subprocess.TimeoutExpired):
        subprocess.run(
            ["bash", str(workdir / ".docs-script.sh")],
            cwd=workdir,
            timeout=COMMAND_SECONDS * 3,
            check=False,
        )
    failures: list[str] = []
    for number, example in enumerate(examples):
        rc_file, out_file = results / f"{number}.rc", results / f"{number}.out"
        if not rc_file.exists():
            failures.append(f"{example.source}: did not run\n  $ {example.command}")
            continue
        output = out_file.read_text(errors="replace")
        status = rc_file.read_text().strip()
        if status != "0":
            failures.append(
                f"{example.source}: exit {status}\n  $ {example.command}\n{_indent(output)}"
            )
            continue
        if example.expected is not None:
            problem = output_matches(example.expected, output)
            if problem is not None:
                failures.append(
                    f"{example.source}: {problem}\n  $ {example.command}\n  expected:\n"
                    f"{_indent(chr(10).join(example.expected))}\n  got:\n{_indent(output)}"
                )
    return failures


def _indent(text: str) -> str:
    return "\n".join("    " + line for line in text.strip().splitlines()[-20:])


def documentation_files() -> list[Path]:
    """README.md, then every page of the site in the order of mkdocs.yml's `nav`."""
    config = yaml.safe_load((ROOT / "mkdocs.yml").read_text())
    pages = [page for entry in config["nav"] for page in entry.values()]
    return [ROOT / "README.md", *(ROOT / config["docs_dir"] / page for page in pages)]


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("files", nargs="*", type=Path)
    options = parser.parse_args()
    files = options.files or documentation_files()
    blocks = [block for path in files for block in blocks_of(path)]
    examples = [example for block in blocks for example in block.examples]
    for block in blocks:
        if block.skipped is not None:
            print(f"skip {block.source}: {block.skipped}")
    workdir = Path(tempfile.mkdtemp(prefix="vae-docs-"))
    shutil.copytree(ROOT / "models" / "digits-vae" / "1", workdir / "models" / "digits-vae" / "1")
    port, grpc_port = free_port(8000), free_port(8001)
    server = start_server(workdir, port, grpc_port)
    began = time.perf_counter()
    try:
        failures = run_examples(examples, workdir, port, grpc_port)
    finally:
        os.killpg(server.pid, signal.SIGTERM)
        server.wait(timeout=30)
    seconds = time.perf_counter() - began
    for failure in failures:
        print(f"FAIL {failure}")
    print(
        f"{len(examples) - len(failures)} of {len(examples)} examples ran as written "
        f"({seconds:.0f} s; server on 127.0.0.1:{port}; scratch folder {workdir})"
    )
    if failures:
        return 1
    shutil.rmtree(workdir, ignore_errors=True)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
