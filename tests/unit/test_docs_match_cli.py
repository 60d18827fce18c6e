"""The command lines README.rst and docs/*.rst show are ones the CLI accepts.

Every shell block (a reStructuredText literal block after ``::``, or a
``.. code-block::`` of console, sh, bash or shell) and every inline literal
that starts with the command is read; each line that runs
``undercloud-appliance`` (``.venv/bin/undercloud-appliance``, ``python -m
undercloud_appliance_cli``) is checked against the parser the CLI builds:

- the subcommand (and ``profiles``' action) exists, and every ``--option``
  it names exists at that level, inside ``[...]`` and ``a|b`` alternatives
  too; an option's value alternatives (``--network default|user``) are
  among its choices;
- a block line with no placeholder (``NAME``, ``[...]``, ``ID|LABEL``,
  ``$VAR``) is a real example, and ``parse_args`` must accept it whole.

Inline literals are read as synopses only: prose quotes fragments such as
``undercloud-appliance update --offline``.  All problems are collected and
reported as ``file:line: problem``.
"""

from __future__ import annotations

import argparse
import contextlib
import io
import re
import shlex
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

from undercloud_appliance_cli import build_parser

REPO_ROOT = Path(__file__).resolve().parents[2]
SHELL_LANGUAGES = {"console", "sh", "bash", "shell", "shell-session"}
CODE_DIRECTIVE = re.compile(r"^\s*\.\.\s+(?:code-block|code|sourcecode)::\s*(\S*)\s*$")
# Any other directive (``.. note::``) ends with ``::`` too but opens no literal block.
OTHER_DIRECTIVE = re.compile(r"^\s*\.\.\s+[\w:-]+::")
INLINE_LITERAL = re.compile(r"``(?!\s)(.+?)(?<!\s)``", re.DOTALL)
SHELL_OPERATORS = {"|", "||", "&&", ";", "&"}
# A redirection and its target are the shell's, not the command's arguments.
REDIRECTION = re.compile(r"^[0-9]*(?:>>|>|<)(.*)$")
PLACEHOLDER = re.compile(r"[A-Z][A-Z0-9_]*|<[^>]+>|\$\{?\w+\}?")
ENV_ASSIGNMENT = re.compile(r"[A-Za-z_]\w*=")


@dataclass(frozen=True)
class DocCommand:
    """One command line of a document that runs the CLI."""

    where: str  # "README.rst:123"
    text: str  # the line as written, continuations joined
    args: tuple[str, ...]  # what follows the program name
    block: bool  # in a shell block, not an inline literal of the prose
    example: bool  # a block line without placeholders: parse_args must accept it


def indent_of(line: str) -> int:
    return len(line) - len(line.lstrip())


def shell_blocks(text: str) -> Iterator[tuple[int, list[str]]]:
    """Yield ``(first line number, lines)`` of each literal or shell code block."""
    lines = text.splitlines()
    index = 0
    while index < len(lines):
        line = lines[index]
        directive = CODE_DIRECTIVE.match(line)
        if directive:
            opens_block = directive.group(1).lower() in SHELL_LANGUAGES
        else:
            opens_block = line.rstrip().endswith("::") and not OTHER_DIRECTIVE.match(line)
        index += 1
        if not opens_block:
            continue
        parent_indent = indent_of(line)
        if directive:  # skip the directive's options (``:linenos:``)
            while index < len(lines) and lines[index].strip().startswith(":"):
                index += 1
        start = index
        while index < len(lines) and (
            not lines[index].strip() or indent_of(lines[index]) > parent_indent
        ):
            index += 1
        block = lines[start:index]
        while block and not block[-1].strip():
            block.pop()
        first = next((n for n, text_line in enumerate(block) if text_line.strip()), None)
        if first is not None:
            yield start + first + 1, block[first:]


def logical_lines(first_line: int, block: list[str]) -> Iterator[tuple[int, str]]:
    """The block's command lines with their continuations joined: a trailing
    backslash, and (in blocks without ``$`` prompts, where a more indented
    line cannot be output) a more indented line, as synopses wrap.  In a
    block with prompts, a line without one is output and left out."""
    base_indent = min(indent_of(line) for line in block if line.strip())
    prompted = any(line.strip().startswith("$ ") for line in block)
    current: list[str] = []
    current_start = 0
    for offset, line in enumerate(block):
        stripped = line.strip()
        continues = bool(current) and (
            current[-1].endswith("\\")
            or (not prompted and stripped and indent_of(line) > base_indent)
        )
        if continues:
            current[-1] = current[-1].removesuffix("\\").rstrip()
            current.append(stripped)
            continue
        if current:
            yield current_start, " ".join(current)
        is_command = stripped and (not prompted or stripped.startswith("$ "))
        current = [stripped.removeprefix("$ ")] if is_command else []
        current_start = first_line + offset
    if current:
        yield current_start, " ".join(current)


def blank_out_blocks(text: str) -> str:
    """The text with every block's lines emptied (line numbers kept), for inline literals."""
    lines = text.splitlines()
    for first_line, block in shell_blocks(text):
        for number in range(first_line, first_line + len(block)):
            lines[number - 1] = ""
    return "\n".join(lines)


def split_segments(tokens: list[str]) -> Iterator[list[str]]:
    """Split at shell operators; a ``|`` inside ``[...]`` is a synopsis alternative."""
    depth = 0
    segment: list[str] = []
    redirected = False
    for token in tokens:
        if redirected:  # the target of a redirection written apart: "> FILE"
            redirected = False
            continue
        if depth == 0 and token in SHELL_OPERATORS:
            yield segment
            segment = []
            continue
        redirection = REDIRECTION.match(token) if depth == 0 else None
        if redirection:
            redirected = not redirection.group(1)
            continue
        depth += token.count("[") - token.count("]")
        segment.append(token)
    yield segment


def cli_arguments(segment: list[str]) -> list[str] | None:
    """What follows the program name when this segment runs the CLI, else None."""
    words = list(segment)
    while words and (ENV_ASSIGNMENT.match(words[0]) or words[0] == "sudo"):
        words.pop(0)
    if not words:
        return None
    program = words[0].rsplit("/", 1)[-1]
    if program == "undercloud-appliance":
        return words[1:]
    if program.startswith("python") and words[1:3] == ["-m", "undercloud_appliance_cli"]:
        return words[3:]
    return None


def bare(token: str) -> str:
    """A synopsis token without its brackets and ellipsis."""
    return token.strip("[]").removesuffix("...").strip("[]")


def is_placeholder(token: str) -> bool:
    return any(PLACEHOLDER.fullmatch(part) for part in bare(token).split("|") if part)


def is_synopsis(args: list[str]) -> bool:
    return any(
        "[" in token or "]" in token or "|" in token or "..." in token or is_placeholder(token)
        for token in args
    )


def commands_in(text: str, name: str) -> tuple[list[DocCommand], list[str]]:
    """The CLI command lines of one document, and the lines that could not be read."""
    found: list[DocCommand] = []
    unreadable: list[str] = []

    def add(line_number: int, line: str, from_block: bool) -> None:
        if "undercloud-appliance" not in line and "undercloud_appliance_cli" not in line:
            return
        where = f"{name}:{line_number}"
        try:
            tokens = shlex.split(line, comments=True)
        except ValueError as error:
            unreadable.append(f"{where}: cannot split as a shell line ({error}): {line}")
            return
        for segment in split_segments(tokens):
            args = cli_arguments(segment)
            if args is None or (not args and not from_block):
                continue  # prose naming the program, not running it
            example = from_block and not is_synopsis(args)
            found.append(DocCommand(where, line, tuple(args), from_block, example))

    for first_line, block in shell_blocks(text):
        for line_number, line in logical_lines(first_line, block):
            add(line_number, line, from_block=True)
    prose = blank_out_blocks(text)
    for literal in INLINE_LITERAL.finditer(prose):
        line_number = prose.count("\n", 0, literal.start()) + 1
        add(line_number, " ".join(literal.group(1).split()), from_block=False)
    return found, unreadable


def subcommands_of(parser: argparse.ArgumentParser) -> dict[str, argparse.ArgumentParser] | None:
    for action in parser._actions:
        if isinstance(action, argparse._SubParsersAction):
            return action.choices
    return None


def option_named(parsers: list[argparse.ArgumentParser], name: str) -> argparse.Action | None:
    """The action of ``name`` in any of ``parsers``; None when none has it."""
    for parser in parsers:
        action = parser._option_string_actions.get(name)
        if action is not None:
            return action
    return None


def synopsis_problems(command: DocCommand, parser: argparse.ArgumentParser) -> list[str]:
    """Subcommands, option names and literal choices of a command line; for a
    block line, also what its subcommand requires (options, positionals)."""
    problems = []
    levels = [parser]  # the parsers the next token belongs to (several after ``a|b``)
    path = "undercloud-appliance"
    pending_value: argparse.Action | None = None
    named: set[str] = set()
    positionals_shown = positionals_required = depth = 0
    for token in command.args:
        core = bare(token)
        optional = depth > 0 or token.startswith("[")
        depth += token.count("[") - token.count("]")
        if not core or core == "|":
            continue
        if pending_value is not None:
            action, pending_value = pending_value, None
            if action.choices is not None and not is_placeholder(token):
                for value in core.split("|"):
                    if value not in action.choices:
                        problems.append(
                            f"{path} {action.option_strings[-1]}: {value!r} is not one of "
                            f"{', '.join(map(str, action.choices))}"
                        )
            continue
        if core.startswith("-"):
            for alternative in core.split("|"):
                name = alternative.split("=", 1)[0]
                if not name.startswith("-"):
                    continue  # the other values of ``--option=a|b``
                action = option_named(levels, name)
                named.add(name)
                if action is None:
                    problems.append(f"{path} has no option {name}")
                elif action.nargs != 0 and "=" not in alternative and "|" not in core:
                    pending_value = action
            continue
        choices = [subcommands_of(level) for level in levels]
        if any(choice is not None for choice in choices):
            if is_placeholder(token):
                return problems  # ``COMMAND``: which options apply is unknown
            known = {name: sub for choice in choices if choice for name, sub in choice.items()}
            alternatives = core.split("|")
            unknown = [name for name in alternatives if name not in known]
            if unknown:
                problems.append(
                    f"{path} has no subcommand {', '.join(unknown)} "
                    f"(it has {', '.join(sorted(known))})"
                )
                return problems  # nothing below an unknown subcommand can be checked
            levels = [known[name] for name in alternatives]
            path = f"{path} {core}"
            continue
        positionals_shown += 1
        positionals_required += not optional
    # After an unknown option, whether the next token was its value is unknown.
    if not problems and command.block and len(levels) == 1 and not subcommands_of(levels[0]):
        problems.extend(
            leaf_problems(levels[0], path, named, positionals_shown, positionals_required)
        )
    return problems


def leaf_problems(
    leaf: argparse.ArgumentParser,
    path: str,
    named: set[str],
    positionals_shown: int,
    positionals_required: int,
) -> list[str]:
    """A synopsis shows every required option and as many positionals as ``leaf`` takes."""
    problems = [
        f"{path} requires {action.option_strings[-1]}, not shown"
        for action in leaf._actions
        if action.required and action.option_strings and named.isdisjoint(action.option_strings)
    ]
    positionals = [action for action in leaf._actions if not action.option_strings]
    needed = sum(action.nargs in (None, "+") for action in positionals)
    most = (
        float("inf")
        if any(action.nargs in ("*", "+") for action in positionals)
        else len(positionals)
    )
    if positionals_shown > most:
        problems.append(f"{path} takes {most} positional arguments, {positionals_shown} shown")
    if positionals_required < needed:
        problems.append(f"{path} needs {needed} positional arguments, {positionals_required} shown")
    return problems


def example_problems(command: DocCommand, parser: argparse.ArgumentParser) -> list[str]:
    """A real example must parse whole; argparse's complaint is the problem."""
    complaint = io.StringIO()
    try:
        with contextlib.redirect_stderr(complaint), contextlib.redirect_stdout(io.StringIO()):
            parser.parse_args(list(command.args))
    except SystemExit as exit_:
        if exit_.code not in (0, None):
            lines = complaint.getvalue().strip().splitlines() or ["(no message)"]
            return [f"argparse refuses it: {lines[-1]}"]
    return []


def problems_in(text: str, name: str, parser: argparse.ArgumentParser) -> list[str]:
    commands, problems = commands_in(text, name)
    for command in commands:
        found = synopsis_problems(command, parser)
        if not found and command.example:
            found = example_problems(command, parser)
        problems.extend(f"{command.where}: {problem}: {command.text}" for problem in found)
    return problems


@pytest.fixture(scope="module")
def cli_parser() -> argparse.ArgumentParser:
    return build_parser()


SYNTHETIC_RST = """\
Title
=====

Run it::

    undercloud-appliance build debian-zed [--puddle ID|LABEL|none]
        [--puddle-base URL] [--output DIR]
    ssh -F ssh.config undercloud   # not ours
    FOO=1 .venv/bin/undercloud-appliance list --json | jq .

.. code-block:: console

    $ undercloud-appliance update undercloud --puddle latest \\
          --puddle-base http://127.0.0.1:8080
    undercloud-appliance 0.1.0 (output: the version)

.. code-block:: yaml

    undercloud-appliance list --not-checked-in-yaml

Inline: ``undercloud-appliance fetch STORE_URL --release R [--label L | --build ID]
[--print-path]`` and ``undercloud-appliance`` alone, ``undercloud-appliance: error: x``.

.. note::

   python -m undercloud_appliance_cli status NAME
"""


def test_extractor_reads_blocks_continuations_and_inline_literals() -> None:
    commands, unreadable = commands_in(SYNTHETIC_RST, "t.rst")
    assert unreadable == []
    build = "build debian-zed [--puddle ID|LABEL|none] [--puddle-base URL] [--output DIR]"
    update = "update undercloud --puddle latest --puddle-base http://127.0.0.1:8080"
    fetch = "fetch STORE_URL --release R [--label L | --build ID] [--print-path]"
    assert [(c.where, " ".join(c.args), c.block, c.example) for c in commands] == [
        ("t.rst:6", build, True, False),
        ("t.rst:9", "list --json", True, True),
        ("t.rst:13", update, True, True),
        ("t.rst:21", fetch, False, False),
    ]


def test_correct_lines_give_no_problem(cli_parser: argparse.ArgumentParser) -> None:
    assert problems_in(SYNTHETIC_RST, "t.rst", cli_parser) == []


@pytest.mark.parametrize(
    ("line", "problem"),
    [
        ("undercloud-appliance biuld debian-zed", "has no subcommand biuld"),
        ("undercloud-appliance profiles lsit", "profiles has no subcommand lsit"),
        ("undercloud-appliance profiles list|shwo NAME", "profiles has no subcommand shwo"),
        ("undercloud-appliance build debian-zed [--pudle ID]", "build has no option --pudle"),
        ("undercloud-appliance fetch URL --release R [--label L | --bulid ID]", "--bulid"),
        ("undercloud-appliance import URL --release R --network nat|user", "'nat' is not one"),
        ("undercloud-appliance --quiet --debug -x list", "undercloud-appliance has no option -x"),
        ("undercloud-appliance import https://s --release r --label a --build b", "argparse"),
        ("undercloud-appliance prune debian-zed --keep many", "argparse refuses it"),
        ("undercloud-appliance promote RELEASE BUILD_ID [--force]", "requires --label, not shown"),
        ("undercloud-appliance status NAME BUILD_ID", "status takes 1 positional arguments, 2"),
        ("undercloud-appliance promote RELEASE --label L", "needs 2 positional arguments, 1"),
    ],
)
def test_a_wrong_line_is_reported_with_file_and_line(
    cli_parser: argparse.ArgumentParser, line: str, problem: str
) -> None:
    text = f"Intro\n\nExample::\n\n    ls\n    {line}\n"
    problems = problems_in(text, "docs/x.rst", cli_parser)
    assert len(problems) == 1, problems
    assert problems[0].startswith("docs/x.rst:6: ")
    assert problem in problems[0]
    assert problems[0].endswith(line)


def test_docs_command_lines_match_the_cli(cli_parser: argparse.ArgumentParser) -> None:
    documents = [REPO_ROOT / "README.rst", *sorted((REPO_ROOT / "docs").glob("*.rst"))]
    problems = []
    checked = 0
    for path in documents:
        name = str(path.relative_to(REPO_ROOT))
        text = path.read_text(encoding="utf-8")
        checked += len(commands_in(text, name)[0])
        problems.extend(problems_in(text, name, cli_parser))
    # The extractor must keep finding the docs' commands, or this test proves nothing.
    assert checked >= 20, f"only {checked} command lines found in {len(documents)} documents"
    assert not problems, "documented command lines the CLI does not accept:\n" + "\n".join(problems)
