"""docs/deployment.md read as a script: its paths, their ```sh steps and the `twinledger` commands in them.

The page's convention (stated at its top): a block fenced ```sh is a step the reader runs, in order; a block
fenced ```shell is an example or an alternative the walk does not run; output is fenced ```text. Path (a) is
the section whose heading starts "## (a)", path (b) "## (b)".
"""

from __future__ import annotations

import re
import shlex
from pathlib import Path

PAGE = Path(__file__).resolve().parents[2] / "docs" / "deployment.md"
RUN_FENCE = "sh"
EXAMPLE_FENCE = "shell"
_FENCE = re.compile(r"^```(\w*)\n(.*?)^```\s*$", re.S | re.M)
_VARIABLE = re.compile(r"\$\{?[A-Za-z_][A-Za-z0-9_]*\}?")
_SHELL_BREAKS = {";", "&", "&&", "|", "||", ">", ">>", "<", "2>&1", "(", ")", "$(", "`"}


def page_text() -> str:
    return PAGE.read_text()


def path_section(text: str, letter: str) -> str:
    """The text of path (a) or (b): from its "## (x)" heading to the next level-2 heading."""
    match = re.search(rf"^## \({letter}\).*?(?=^## |\Z)", text, re.S | re.M)
    if match is None:
        raise AssertionError(f"docs/deployment.md has no '## ({letter}) ...' section")
    return match.group(0)


def blocks(text: str, fence: str = RUN_FENCE) -> list[str]:
    """The code blocks fenced ```<fence>, in page order."""
    return [body for kind, body in _FENCE.findall(text) if kind == fence]


def command_lines(block: str) -> list[str]:
    """The block's logical lines: continuations joined, comments and blank lines dropped."""
    joined = re.sub(r"\\\n\s*", " ", block)
    lines = []
    for line in joined.splitlines():
        stripped = line.strip()
        if stripped and not stripped.startswith("#"):
            lines.append(stripped)
    return lines


def twinledger_commands(block: str) -> list[list[str]]:
    """Every `twinledger ...` command of a block as its arguments after `twinledger`, shell variables replaced by a
    placeholder ("1": a string to argparse, and a number where one is expected) and cut at the first shell
    operator (pipe, redirection, `&`, `;`, `)`)."""
    commands = []
    for line in command_lines(block):
        lexer = shlex.shlex(line.replace("$(", " ( "), posix=True, punctuation_chars=";&|<>()`")
        lexer.whitespace_split = True
        lexer.commenters = "#"
        tokens = list(lexer)
        for index, token in enumerate(tokens):
            if token != "twinledger":
                continue
            words = []
            for word in tokens[index + 1:]:
                if word in _SHELL_BREAKS or set(word) <= set(";&|<>()`"):
                    break
                words.append(_VARIABLE.sub("1", word))
            commands.append(words)
    return commands
