"""``sweep --help``: Hydra's help page, written for this tool.

``conf/hydra/help/sweep.yaml`` is the page. Two resolvers fill it in from the config files
themselves: every config group with its options, each described by the first comment line of
its YAML file, and the main keys with their current value and inline comment. So the help and
the comments in ``conf/`` are the same words, and a user's own ``--config-dir`` groups show up.
"""

from __future__ import annotations

import itertools
import re
import textwrap
from importlib import resources
from pathlib import Path

from hydra.core.global_hydra import GlobalHydra
from omegaconf import DictConfig, OmegaConf

# A top-level `key: value  # comment` line (or `key:  # comment` opening a section).
_KEY_LINE = re.compile(r"^(?P<indent> *)(?P<key>[A-Za-z_]\w*):(?P<value>[^#]*)#\s*(?P<doc>.*)$")
_SKIPPED = ("defaults", "hydra")


def register() -> None:
    OmegaConf.register_new_resolver("sweep_groups", groups_help, replace=True)
    OmegaConf.register_new_resolver("sweep_keys", keys_help, replace=True)


def groups_help(*, _root_: DictConfig) -> str:
    """``model  mlp*  Multi-layer perceptron ...``, one line per option, default starred."""
    loader = GlobalHydra.instance().config_loader()
    choices = OmegaConf.select(_root_, "hydra.runtime.choices", default={}) or {}
    lines = []
    for group in sorted(g for g in loader.list_groups("") if g not in _SKIPPED):
        for i, option in enumerate(sorted(loader.get_group_options(group))):
            mark = "*" if choices.get(group) == option else ""
            doc = first_comment(_raw(f"{group}/{option}.yaml"))
            lines.append(_row(f"  {group if i == 0 else '':<14}{option + mark:<15}", doc))
    return "\n".join(lines)


def keys_help(*, _root_: DictConfig) -> str:
    """``num_samples=16  trials to run ...``: the primary config's commented keys."""
    name = OmegaConf.select(_root_, "hydra.job.config_name", default="config")
    lines = []
    section = ""
    for line in _raw(f"{name}.yaml").splitlines():
        if not (match := _KEY_LINE.match(line)):
            continue
        key, indent = match["key"], len(match["indent"])
        opens_section = not match["value"].strip()
        if indent == 0:
            section = key if opens_section and key not in _SKIPPED else ""
            if key in _SKIPPED or opens_section:
                continue
        elif indent != 2 or not section or opens_section:
            continue
        path = f"{section}.{key}" if indent else key
        setting = f"{path}={_current(_root_, path)}"
        lines.append(_row(f"  {setting:<28} ", match["doc"]))
    return "\n".join(lines)


def first_comment(text: str) -> str:
    """The first sentence of the file's opening comment."""
    runs = itertools.groupby(text.splitlines(), key=lambda line: line.startswith("#"))
    block = next((list(run) for is_comment, run in runs if is_comment), [])
    words = " ".join(line.lstrip("#").strip() for line in block)
    return re.split(r"(?<!e\.g\.)(?<!i\.e\.)(?<=[.!?])\s", words, maxsplit=1)[0]


def _row(left: str, doc: str) -> str:
    """``left`` then ``doc``, wrapped under itself to fit a 100-column terminal."""
    row = textwrap.fill(
        doc,
        width=100,
        initial_indent=left,
        subsequent_indent=" " * len(left),
        break_on_hyphens=False,
        break_long_words=False,
    )
    return row.replace("$", "$$")  # Hydra fills the page with string.Template: $ is written $$


def _current(cfg: DictConfig, path: str) -> str:
    try:
        value = OmegaConf.select(cfg, path, throw_on_missing=True)
    except Exception:  # a required ??? value, or an interpolation that cannot resolve yet
        return "???"
    if value is None or isinstance(value, bool):
        return OmegaConf.to_yaml({"v": value}).split(":", 1)[1].strip()  # null, true, false
    return str(value)


def _raw(relative: str) -> str:
    """The file's text from the first config source that has it (comments included)."""
    for source in GlobalHydra.instance().config_loader().get_sources():
        try:
            if source.scheme() == "pkg":
                file = resources.files(source.path.replace("/", ".")).joinpath(relative)
            elif source.scheme() == "file":
                file = Path(source.path, relative)
            else:
                continue
            if file.is_file():
                return file.read_text(encoding="utf-8")
        except (ImportError, OSError, ValueError):
            continue
    return ""
