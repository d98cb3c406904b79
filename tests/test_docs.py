"""Every command a user can type is in the README."""

import re
from pathlib import Path

from tui import cli

README = (Path(__file__).resolve().parent.parent / "README.md").read_text()


def subcommands() -> list[str]:
    cli._load_extensions()
    parser = cli.build_parser()
    sub = next(a for a in parser._actions if a.dest == "command")
    return sorted(sub.choices)


def test_every_command_is_documented():
    missing = [c for c in subcommands() if not re.search(rf"`heard {re.escape(c)}\b", README)]
    assert missing == []


def test_readme_shows_the_two_commands():
    assert "make demo" in README and "make test" in README
