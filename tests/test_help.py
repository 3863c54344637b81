"""`sweep --help` answers: every config group with its options, the main keys with their
current values; and every key in conf/ carries a comment, which is where that help comes from."""

from __future__ import annotations

from pathlib import Path

import pytest
import yaml

from tests.conftest import REPO, run_sweep

CONF = REPO / "conf"
YAML_FILES = sorted(CONF.rglob("*.yaml"))


def key_lines(text: str) -> set[int]:
    """0-based line numbers of every mapping key in a YAML document."""
    lines: set[int] = set()

    def walk(node: yaml.Node) -> None:
        if isinstance(node, yaml.MappingNode):
            for key, value in node.value:
                lines.add(key.start_mark.line)
                walk(value)
        elif isinstance(node, yaml.SequenceNode):
            for item in node.value:
                walk(item)

    root = yaml.compose(text)
    if root is not None:
        walk(root)
    return lines


@pytest.mark.parametrize("path", YAML_FILES, ids=lambda p: str(p.relative_to(CONF)))
def test_every_config_key_has_a_comment(path: Path) -> None:
    lines = path.read_text().splitlines()
    bare = [
        f"{path.relative_to(REPO)}:{n + 1}: {lines[n].strip()}"
        for n in sorted(key_lines(path.read_text()))
        if " #" not in lines[n] and not (n and lines[n - 1].lstrip().startswith("#"))
    ]
    assert not bare, "keys without a comment (inline, or on the line above):\n" + "\n".join(bare)


@pytest.fixture(scope="module")
def help_text(tmp_path_factory) -> str:
    proc = run_sweep(tmp_path_factory.mktemp("help"), "--help")
    assert proc.returncode == 0, proc.stderr
    assert proc.stderr == ""
    return proc.stdout


def test_help_lists_every_group_and_option(help_text: str) -> None:
    groups = [p for p in sorted(CONF.iterdir()) if p.is_dir() and p.name not in ("hydra",)]
    groups = [g for g in groups if not g.name.startswith("__")]
    section = help_text.split("== Config groups", 1)[1].split("== Main options", 1)[0]
    rows = [line.split() for line in section.splitlines() if line.strip()]
    listed: dict[str, list[str]] = {}
    group = ""
    for row in rows[1:]:
        if not row[0].startswith("(") and row[0] in {g.name for g in groups}:
            group, row = row[0], row[1:]
        if row and (CONF / group / f"{row[0].rstrip('*')}.yaml").is_file():
            listed.setdefault(group, []).append(row[0])
    for path in groups:
        options = sorted(p.stem for p in path.glob("*.yaml"))
        assert [o.rstrip("*") for o in listed.get(path.name, [])] == options, path.name
    # The defaults are starred, and each option shows the first line of its file's comment.
    assert "mlp*" in listed["model"] and "asha*" in listed["scheduler"]
    assert "Asynchronous Successive Halving (ASHA): stops the worst trials early." in section


def test_help_shows_main_keys_with_current_values(help_text: str, tmp_path: Path) -> None:
    assert "num_samples=16" in help_text
    assert "trials in the sweep" in help_text
    assert "time_budget=null" in help_text  # keys added since are listed too
    assert "sweep resume=<folder> num_samples=48" in help_text
    assert "resources.cpu=1" in help_text
    assert "verbose=0" in help_text
    assert max(len(line) for line in help_text.splitlines()) <= 100
    overridden = run_sweep(tmp_path, "num_samples=3", "model=cnn", "--help")
    assert "num_samples=3" in overridden.stdout
    assert "name=cnn_digits" in overridden.stdout
    assert "cnn*" in overridden.stdout
