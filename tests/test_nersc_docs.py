"""docs/nersc.md: every ``swiftlib`` command in its shell blocks parses with the real command
line (a renamed flag or subcommand fails here), the page is linked from the README, and
the environment and make targets it names exist."""

from __future__ import annotations

import argparse
import re
import shlex
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
DOC = ROOT / "docs" / "nersc.md"
EXAMPLE_ENV = {
    "PROJECT": "m1234",
    "HOME": "/global/homes/u/user",
    "SCRATCH": "/pscratch/sd/u/user",
    "CFS": "/global/cfs/cdirs",
    "USER": "user",
    "SWIFTLIB_SRC": "/global/homes/u/user/swiftlib",
    "SWIFTLIB_ENV": "/global/common/software/m1234/user/swiftlib-env",
    "SWIFTLIB_DATA": "/pscratch/sd/u/user/swiftlib",
    "REPO_URL": "https://example.org/swiftlib.git",
}


def _shell_commands() -> list[str]:
    """Each command of the page's bash blocks, continuation lines joined, heredocs dropped."""
    commands = []
    for block in re.findall(r"```bash\n(.*?)```", DOC.read_text(), re.S):
        text = re.sub(r"<<'EOF'\n.*?\nEOF\n", "\n", block, flags=re.S).replace("\\\n", " ")
        commands += [line.strip() for line in text.splitlines() if line.strip()]
    return commands


def _parser(argv: list[str]) -> argparse.ArgumentParser:
    """swiftlib's parser; ``swiftlib kernel`` through swiftlib.kernel's own (the same
    subparser, whether or not cli.py adds it)."""
    from swiftlib import cli, kernel

    return kernel.build_parser() if argv[:1] == ["kernel"] else cli.build_parser()


SWIFTLIB_COMMANDS = [c for c in _shell_commands() if c.startswith("swiftlib ")]


def test_the_page_has_the_quick_start_commands():
    joined = "\n".join(_shell_commands())
    for needle in (
        "module load conda",
        "conda env create -f environment.yml",
        "swiftlib kernel install",
        "swiftlib slurm submit",
        "swiftlib run --kernel swiftlib",
        "salloc",
        "git clone",
    ):
        assert needle in joined, needle
    assert len(SWIFTLIB_COMMANDS) >= 6


_INIT = argparse.ArgumentParser.__init__


def _exact_init(self, *args, **kwargs):
    """No abbreviated flags: ``--gpus`` must not pass for ``--gpus-per-node``."""
    kwargs["allow_abbrev"] = False
    _INIT(self, *args, **kwargs)


@pytest.mark.parametrize("command", SWIFTLIB_COMMANDS)
def test_every_swiftlib_command_parses(command, monkeypatch):
    for k, v in EXAMPLE_ENV.items():
        monkeypatch.setenv(k, v)
    monkeypatch.setattr(argparse.ArgumentParser, "__init__", _exact_init)  # subparsers too
    words = shlex.split(command.split(" #", 1)[0], comments=True)
    argv = [re.sub(r"\$(\w+)", lambda m: EXAMPLE_ENV.get(m[1], m[0]), w) for w in words[1:]]
    try:
        args = _parser(argv).parse_args(argv)
    except SystemExit as e:  # argparse: unknown flag, bad choice, missing argument
        pytest.fail(f"docs/nersc.md: `{command}` does not parse (exit {e.code})")
    assert callable(args.func)


def test_readme_links_the_page_and_the_targets_exist():
    assert "docs/nersc.md" in (ROOT / "README.md").read_text()
    makefile = (ROOT / "Makefile").read_text()
    assert re.search(r"^kernel:", makefile, re.M) and re.search(r"^lab: kernel", makefile, re.M)
    assert "-e .[dev]" in (ROOT / "environment.yml").read_text()
