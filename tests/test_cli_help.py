"""What a newcomer reads first: every command's --help and the config reference hold no broken example."""
from __future__ import annotations

import re
from pathlib import Path

import pytest

from harness.cli.main import build_parser
from harness.config import RunConfig, flatten

REPO = Path(__file__).resolve().parent.parent


def _helps() -> dict[str, str]:
    parser = build_parser()
    sub = next(a for a in parser._subparsers._group_actions if hasattr(a, "choices"))
    return {"asciitune": parser.format_help(), **{name: p.format_help() for name, p in sub.choices.items()}}


@pytest.mark.parametrize(("command", "text"), list(_helps().items()))
def test_help_examples_are_whole_commands_naming_files_that_exist(command: str, text: str) -> None:
    for line in text.splitlines():
        if not line.strip().startswith("asciitune "):
            continue
        cmd = line.split("  #")[0].rstrip()
        # a line continued with a backslash in a docstring prints as one line with a gap where the break was
        assert not cmd.endswith("\\") and not re.search(r"\S {3,}\S", cmd), f"{command}: broken example: {line}"
        for word in cmd.split():
            if re.fullmatch(r"[\w./-]+\.py", word):
                assert (REPO / word).is_file(), f"{command}: its help names {word}, which is not in the repository"


def test_every_config_key_is_in_the_config_reference() -> None:
    doc = (REPO / "docs" / "configs.md").read_text(encoding="utf-8")
    missing = [key for key in flatten(RunConfig().to_dict())
               if f"`{key.split('.', 1)[1]}`" not in doc and f"`{key}`" not in doc]
    assert not missing, f"docs/configs.md does not document {missing}"
