"""README.md and docs/*.md say only what is true.

- Every fenced ``bash``/``sh``/``shell``/``console`` block is run, in order, in a fresh copy of
  the repository (the files ``git ls-files -co --exclude-standard`` lists: tracked and
  untracked, as a fresh checkout of this working tree would hold them), with this test's
  environment (its ``python`` and ``edgekd`` first on ``PATH``). Or it says why not in an HTML
  comment right before it: ``<!-- readme-test: skip (the reason) -->``. A block marked
  ``<!-- readme-test: slow -->`` (a whole build) and every later block of that file run in
  the slow test only. ``<!-- readme-test: file PATH -->`` before any other block writes it to
  PATH in the copy (the README's ``models.py`` and ``edgekd.toml``).
- Each block runs in its own ``bash -euo pipefail`` from the copy's root, so a block that
  needs a folder ``cd``s into it itself. Setting up an environment is the test's own: a
  ``python3 -m venv`` or ``activate`` line is not run, a ``pip install`` line is not run but
  must name extras that pyproject.toml defines (and the torch version it pins), and a
  ``pytest`` line is not run (it would run this test again) but must be the command
  ``.ci/run`` runs, alone or with ``-m "not slow"``. ``.ci/run``'s install, lint and test
  lines must all be in the README.
- Every ``edgekd <command> --option`` the documents name exists in the CLI, every ``--set``
  key is a setting, every relative link points at a file and heading that exist, and the
  option tables of docs/options.md are the ones ``tools/options_table.py`` generates.
"""

from __future__ import annotations

import os
import re
import shlex
import shutil
import signal
import subprocess
import sys
import textwrap
import tomllib
from dataclasses import dataclass
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
DOCS = [ROOT / "README.md", *sorted((ROOT / "docs").glob("*.md"))]
SHELL = {"bash", "sh", "shell", "console"}
MARK = re.compile(r"<!--\s*readme-test:\s*(.*?)\s*-->", re.S)
COMMENT = re.compile(r"<!--.*?-->", re.S)
# Options of other programs that the documents name on their own (`--nnodes`): torchrun's
# and pip's. Anything else that looks like an option must be edgekd's.
FOREIGN = {"--nnodes", "--node-rank", "--rdzv-endpoint", "--nproc-per-node", "--standalone",
           "--index-url"}
# The options of the run_<runtime>.py scripts a build writes (their template's argparse).
RUN_SCRIPT = (ROOT / "edgekd" / "report" / "templates" / "run_script.py.tmpl").read_text()
FOREIGN |= set(re.findall(r'add_argument\("(--[a-z-]+)"', RUN_SCRIPT))
# `--set` keys that belong to the project file rather than BuildConfig.
PROJECT_KEYS = {"target", "out", "runtimes", "model", "data", "inputs", "outputs"}


@dataclass(frozen=True)
class Block:
    doc: Path
    line: int  # of the opening fence, 1-based
    lang: str
    text: str
    mark: str  # what the readme-test comment right before it says; "" without one

    @property
    def where(self) -> str:
        return f"{_name(self.doc)}:{self.line}"

    @property
    def shell(self) -> bool:
        return self.lang in SHELL


def _name(doc: Path) -> str:
    return str(doc.relative_to(ROOT)) if doc.is_relative_to(ROOT) else str(doc)


def blocks(doc: Path) -> list[Block]:
    lines = doc.read_text(encoding="utf-8").splitlines()
    found, i = [], 0
    while i < len(lines):
        fence = re.fullmatch(r"\s*```(\S*)\s*", lines[i])
        if not fence:
            i += 1
            continue
        end = i + 1
        while end < len(lines) and lines[end].strip() != "```":
            end += 1
        before = i - 1
        while before >= 0 and not lines[before].strip():
            before -= 1
        mark = MARK.fullmatch(lines[before].strip()) if before >= 0 else None
        found.append(Block(doc, i + 1, fence.group(1), "\n".join(lines[i + 1:end]),
                           mark.group(1) if mark else ""))
        i = end + 1
    return found


def commands(block: Block) -> list[str]:
    """The block's command lines: continuations joined, comments and blank lines dropped; a
    ``console`` block's lines that start with ``$ `` (the rest is output)."""
    lines = block.text.splitlines()
    if block.lang == "console":
        lines = [ln.strip()[2:] for ln in lines if ln.strip().startswith("$ ")]
    joined: list[str] = []
    for line in lines:
        if joined and joined[-1].endswith("\\"):
            joined[-1] = joined[-1][:-1] + " " + line.strip()
        else:
            joined.append(line.strip())
    return [ln for ln in joined if ln and not ln.startswith("#")]


def parts(command: str) -> list[list[str]]:
    """A command line's tokens, split at ``&&`` (none for a line shlex cannot read, such as
    the shell syntax of .ci/run)."""
    lexer = shlex.shlex(command, posix=True, punctuation_chars=True)
    lexer.whitespace_split = True
    out: list[list[str]] = [[]]
    try:
        for token in lexer:
            if token == "&&":
                out.append([])
            else:
                out[-1].append(token)
    except ValueError:
        return []
    return [p for p in out if p]


def kind(tokens: list[str]) -> str:
    """``env`` (making or activating an environment), ``pip``, ``suite`` (the test suite)
    or ``run``."""
    words = tokens[2:] if tokens[:2] in (["python", "-m"], ["python3", "-m"]) else tokens
    if words[:1] == ["venv"] or (tokens[0] in (".", "source") and len(tokens) == 2
                                 and tokens[1].endswith("bin/activate")):
        return "env"
    if words[:2] == ["pip", "install"]:
        return "pip"
    if words[:1] == ["pytest"]:
        return "suite"
    return "run"


def script(block: Block) -> str:
    """What runs of the block: its commands without the environment, pip and suite parts."""
    lines = []
    for command in commands(block):
        split = parts(command)
        runs = [p for p in split if kind(p) == "run"]
        if len(runs) == len(split):
            lines.append(command)  # as written, quoting and all
        elif runs:
            lines.append(" && ".join(shlex.join(p) for p in runs))
    return "\n".join(lines)


def ci_commands() -> list[str]:
    text = (ROOT / ".ci" / "run").read_text(encoding="utf-8")
    return [ln.strip() for ln in text.splitlines() if ln.strip() and not ln.strip()
            .startswith("#")]


def shell_commands(docs: list[Path]) -> list[tuple[Block, list[str]]]:
    return [(b, p) for d in docs for b in blocks(d) if b.shell for c in commands(b)
            for p in parts(c)]


# --- the marks -------------------------------------------------------------------------------


def mark_problems(docs: list[Path]) -> list[str]:
    problems = []
    for b in (b for d in docs for b in blocks(d)):
        if b.shell:
            skip = re.fullmatch(r"skip \((.+)\)", b.mark, re.S)
            if b.mark not in ("", "slow") and not skip:
                problems.append(f"{b.where}: a command block takes `<!-- readme-test: slow -->`"
                                f" or `<!-- readme-test: skip (why) -->`, not {b.mark!r}")
            if not commands(b):
                problems.append(f"{b.where}: a command block without commands")
        elif b.mark:
            target = re.fullmatch(r"file (\S+)", b.mark)
            if not target or Path(target.group(1)).is_absolute() or ".." in target.group(1):
                problems.append(f"{b.where}: a {b.lang or 'plain'} block takes only "
                                f"`<!-- readme-test: file relative/path -->`, not {b.mark!r}")
    return problems


def test_every_command_block_is_run_or_says_why_not() -> None:
    assert not mark_problems(DOCS), "\n".join(mark_problems(DOCS))
    assert [b for b in blocks(ROOT / "README.md") if b.shell and not b.mark.startswith("skip")]


# --- running them ----------------------------------------------------------------------------


def fresh_copy(dest: Path) -> Path:
    """The tracked and untracked (not ignored) files of this working tree, as a fresh
    checkout would have them: no build/, no .venv, no generated example data."""
    if not (ROOT / ".git").exists() or shutil.which("git") is None:
        pytest.skip("not a git working tree (or no git): cannot tell which files a checkout "
                    "holds")
    listed = subprocess.run(["git", "ls-files", "-co", "--exclude-standard", "-z"], cwd=ROOT,
                            capture_output=True, check=True).stdout.decode().split("\0")
    for name in filter(None, listed):
        source = ROOT / name
        if not source.exists() and not source.is_symlink():
            continue  # deleted in the working tree, not yet in git
        (dest / name).parent.mkdir(parents=True, exist_ok=True)
        shutil.copy2(source, dest / name, follow_symlinks=False)
    return dest


def run_blocks(doc: Path, copy: Path, *, slow: bool) -> int:
    """Run the doc's blocks in order in ``copy``: up to the first slow one, or (``slow``)
    all of them. Returns how many command blocks ran."""
    bindir = Path(sys.executable).parent  # this environment's, not resolved
    env = {**os.environ, "PATH": f"{bindir}{os.pathsep}{os.environ.get('PATH', '')}",
           "VIRTUAL_ENV": str(bindir.parent), "PYTHONDONTWRITEBYTECODE": "1"}
    env.pop("PYTHONPATH", None)
    ran = 0
    for b in blocks(doc):
        if b.mark.startswith("file "):
            path = copy / b.mark.split(" ", 1)[1]
            path.parent.mkdir(parents=True, exist_ok=True)
            path.write_text(b.text + "\n", encoding="utf-8")
            continue
        if not b.shell or b.mark.startswith("skip"):
            continue
        if b.mark == "slow" and not slow:
            break
        if not script(b):
            continue  # only environment, pip and test-suite lines: checked, not run
        code, output = _bash(script(b), copy, env)
        assert code == 0, (f"{b.where} failed (exit {code}):\n{script(b)}\n--- output:\n"
                           f"{output[-4000:]}")
        ran += 1
    return ran


def _bash(text: str, cwd: Path, env: dict[str, str], timeout: float = 3600) -> tuple[int, str]:
    """Run ``text`` in its own process group, which is killed whole if it outlives
    ``timeout`` or the test is interrupted: no build or benchmark worker stays behind."""
    with subprocess.Popen(["bash", "-euo", "pipefail", "-c", text], cwd=cwd, env=env,
                          stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
                          start_new_session=True) as proc:
        try:
            output, _ = proc.communicate(timeout=timeout)
        except BaseException:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.communicate()
            raise
    return proc.returncode, output


def _with_slow_blocks() -> list[Path]:
    return [d for d in DOCS if any(b.mark == "slow" for b in blocks(d))]


@pytest.mark.parametrize("doc", DOCS, ids=lambda d: d.name)
def test_the_quick_command_blocks_run(doc: Path, tmp_path: Path) -> None:
    quick = []
    for b in blocks(doc):
        if b.mark == "slow":
            break
        quick += [b] if b.shell and not b.mark.startswith("skip") and script(b) else []
    if quick:  # else nothing to run before the first slow block
        assert run_blocks(doc, fresh_copy(tmp_path), slow=False) == len(quick)


@pytest.mark.slow
@pytest.mark.parametrize("doc", _with_slow_blocks(), ids=lambda d: d.name)
def test_every_command_block_runs(doc: Path, tmp_path: Path) -> None:
    assert run_blocks(doc, fresh_copy(tmp_path), slow=True) > 0


def install_problems(docs: list[Path]) -> list[str]:
    project = tomllib.loads((ROOT / "pyproject.toml").read_text(encoding="utf-8"))["project"]
    extras = project["optional-dependencies"]
    pins = {re.split(r"[=<>!~\[ ]", r)[0]: r for reqs in extras.values() for r in reqs}
    problems = []
    for b, tokens in shell_commands(docs):
        if kind(tokens) != "pip":
            continue
        args = tokens[tokens.index("install") + 1:]
        for i, arg in enumerate(args):
            if arg.startswith("-") or (i and args[i - 1] in ("--index-url", "-r")):
                continue
            name, _, extra = arg.partition("[")
            wanted = extra.rstrip("]")
            if name in (".", ROOT.name, project["name"]):
                unknown = [e for e in (wanted or "").split(",") if e and e not in extras]
                if unknown:
                    problems.append(f"{b.where}: {arg}: pyproject.toml has no extra "
                                    f"{', '.join(unknown)} (it has {', '.join(extras)})")
            else:
                base = re.split(r"[=<>!~\[ ]", name)[0]
                if base in pins and pins[base] != name:
                    problems.append(f"{b.where}: {name}, but pyproject.toml pins {pins[base]}")
    return problems


def test_the_install_lines_name_what_pyproject_defines() -> None:
    assert [t for _, t in shell_commands(DOCS) if kind(t) == "pip"], "no pip install line"
    assert not install_problems(DOCS), "\n".join(install_problems(DOCS))


def suite_problems(docs: list[Path]) -> list[str]:
    ci = [parts(c)[0] for c in ci_commands() if parts(c) and kind(parts(c)[0]) == "suite"]
    assert ci, ".ci/run runs no pytest"
    problems = []
    for b, tokens in shell_commands(docs):
        if kind(tokens) == "suite" and not any(tokens in (c, [*c, "-m", "not slow"])
                                               for c in ci):
            problems.append(f"{b.where}: {shlex.join(tokens)} is not what .ci/run runs "
                            f"({' or '.join(shlex.join(c) for c in ci)}), alone or with "
                            "-m 'not slow'")
    return problems


def test_the_test_commands_are_the_ones_ci_runs() -> None:
    assert [t for _, t in shell_commands(DOCS) if kind(t) == "suite"], "no test command"
    assert not suite_problems(DOCS), "\n".join(suite_problems(DOCS))


def test_ci_runs_what_the_readme_says() -> None:
    """.ci/run's install, checks, tests and build are the README's lines, word for word."""
    readme = {shlex.join(p) for b in blocks(ROOT / "README.md") if b.shell
              for c in commands(b) for p in parts(c)}
    wanted = [shlex.join(p) for c in ci_commands() for p in parts(c)
              if kind(p) in ("pip", "suite") or p[0] in ("ruff", "mypy", "lint-imports")
              or p[:2] == ["edgekd", "build"]]
    assert wanted and not [w for w in wanted if w not in readme], (
        f"in .ci/run but not in README.md: {[w for w in wanted if w not in readme]}")


# --- options, settings, links ----------------------------------------------------------------


def _options() -> dict[str, list[str]]:
    sys.path.insert(0, str(ROOT / "tools"))
    try:
        from options_table import options_by_command  # type: ignore[import-not-found]
    finally:
        sys.path.remove(str(ROOT / "tools"))
    return options_by_command()


def command_texts(docs: list[Path]) -> list[tuple[str, str]]:
    """(where, text) of every command the documents show: the lines of command and text
    blocks, and inline code spans (HTML comments, where TODOs live, left out)."""
    found = []
    for doc in docs:
        for b in blocks(doc):
            if b.shell or b.lang in ("text", ""):
                found += [(b.where, c) for c in commands(Block(b.doc, b.line, "bash", b.text,
                                                               ""))]
        prose = re.sub(r"(?ms)^\s*```.*?^\s*```", "", COMMENT.sub("", doc.read_text("utf-8")))
        found += [(_name(doc), span) for span in
                  re.findall(r"`([^`\n]+)`", prose)]
    return found


def option_problems(docs: list[Path]) -> list[str]:
    options = _options()
    every = {o for opts in options.values() for o in opts}
    problems = []
    for where, text in command_texts(docs):
        for part in re.split(r"&&|;", text):
            for verb, rest in re.findall(r"(?:^|[\s/])edgekd\s+([a-z][\w-]*)(.*)", part):
                if verb not in options:
                    problems.append(f"{where}: `edgekd {verb}`: no such command "
                                    f"(commands: {', '.join(sorted(k for k in options if k))})")
                    continue
                for opt in re.findall(r"(?<![\w.=/-])(--?[a-zA-Z][\w-]*)", rest):
                    if opt not in options[verb]:
                        problems.append(f"{where}: `edgekd {verb} {opt}`: {verb} has no {opt}")
        if text.startswith("-"):
            for opt in re.findall(r"(?<![\w.=/-])(--[a-zA-Z][\w-]*)", text):
                if opt not in every and opt not in FOREIGN:
                    problems.append(f"{where}: `{text}`: no edgekd command has {opt}")
    return sorted(set(problems))


def test_every_option_named_exists_in_the_cli() -> None:
    assert not option_problems(DOCS), "\n".join(option_problems(DOCS))


def set_problems(docs: list[Path]) -> list[str]:
    """The keys only: docs/errors.md shows values that are refused on purpose."""
    from edgekd.settings.config import config_schema, set_items

    problems = []
    for where, text in command_texts(docs):
        for item in re.findall(r"--set\s+('[^']*'|\"[^\"]*\"|\S+)", text):
            item = item.strip("'\"")
            if "=" not in item or item.startswith("section.key="):
                continue  # the syntax itself
            if item.split("=")[0].split(".")[0] in PROJECT_KEYS:
                continue
            try:
                set_items({}, [item], config_schema())
            except ValueError as exc:
                problems.append(f"{where}: {exc}")
    return problems


def test_every_set_key_is_a_setting() -> None:
    assert re.search(r"--set\s+\S+=", "\n".join(t for _, t in command_texts(DOCS)))
    assert not set_problems(DOCS), "\n".join(set_problems(DOCS))


def _anchor(heading: str) -> str:
    """GitHub's anchor of a heading."""
    text = re.sub(r"[^\w\- ]", "", heading.strip().lower().replace("`", ""))
    return text.replace(" ", "-")


def link_problems(docs: list[Path]) -> list[str]:
    problems = []
    for doc in docs:
        text = COMMENT.sub("", doc.read_text(encoding="utf-8"))
        prose = re.sub(r"(?ms)^\s*```.*?^\s*```", "", text)
        for target in re.findall(r"\]\(([^)\s]+)\)", prose):
            if re.match(r"[a-z]+:", target):
                continue  # https: and the like
            path, _, anchor = target.partition("#")
            file = (doc.parent / path).resolve() if path else doc
            if not file.exists():
                problems.append(f"{_name(doc)}: ({target}): no such file")
            elif anchor and file.suffix == ".md":
                body = re.sub(r"(?ms)^\s*```.*?^\s*```", "", file.read_text(encoding="utf-8"))
                anchors = {_anchor(h) for h in re.findall(r"(?m)^#+ (.+)$", body)}
                if anchor not in anchors:
                    problems.append(f"{_name(doc)}: ({target}): no heading "
                                    f"#{anchor} in {file.name}")
    return problems


def test_every_relative_link_resolves() -> None:
    assert not link_problems(DOCS), "\n".join(link_problems(DOCS))


def test_the_option_tables_are_generated_from_the_cli() -> None:
    done = subprocess.run([sys.executable, str(ROOT / "tools" / "options_table.py"), "--check"],
                          capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr


def test_the_checks_find_what_is_wrong(tmp_path: Path) -> None:
    """Each check above, on a document with one mistake of each kind: none may pass it."""
    doc = tmp_path / "wrong.md"
    doc.write_text(textwrap.dedent("""\
        # Wrong
        `edgekd build --frsh`, `edgekd quantise m.onnx`, `--no-such`, [a](nope.md), [b](#y).

        <!-- readme-test: skipp -->
        ```bash
        edgekd check r.json --budgt b.toml
        edgekd build --set prune.sparsty=0.5
        pip install -e ".[build,nope]" torch==2.12.0
        python -m pytest -x
        ```
        """), encoding="utf-8")
    found = "\n".join(mark_problems([doc]) + install_problems([doc]) + suite_problems([doc])
                      + option_problems([doc]) + set_problems([doc]) + link_problems([doc]))
    for wrong in ["'skipp'", "no extra nope", "pins torch==", "python -m pytest -x", "--frsh",
                  "`edgekd quantise`", "--no-such", "--budgt", "sparsty", "nope.md", "#y"]:
        assert wrong in found, f"{wrong} not found in:\n{found}"
