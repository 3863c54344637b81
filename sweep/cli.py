"""The ``sweep`` command.

    sweep                                      # default: digits MLP, ASHA, embedded Ray
    sweep model=cnn num_samples=32 trainer.max_epochs=30
    sweep search_space.model.lr.high=0.1       # change a bound
    sweep '+search_space.model.weight_decay={type: loguniform, low: 1e-6, high: 1e-2}'
    sweep '~search_space.model.hidden' model.hidden=256   # fix a dimension instead
    sweep single_trial=true                    # one trial, no Ray: debug the model first
    sweep <same arguments> resume=true         # continue an interrupted or killed sweep

Exit codes: 0 done; 2 bad input (one ``error: <key>: ...`` line, nothing started or
written); 130 / 143 interrupted by SIGINT / SIGTERM (state saved, resume command printed).

This is the only module that touches Hydra's runtime.
"""

from __future__ import annotations

import gc
import importlib
import os
import re
import signal
import sys

import hydra
import yaml
from hydra.core.hydra_config import HydraConfig
from hydra.errors import HydraException, MissingConfigException
from omegaconf import DictConfig, OmegaConf
from omegaconf.errors import OmegaConfBaseException

from sweep import help as help_page
from sweep.config import optuna_sweeper
from sweep.errors import EXIT_BAD_INPUT, ConfigError


@hydra.main(version_base="1.3", config_path="pkg://conf", config_name="config")
def _main(cfg: DictConfig) -> None:
    from sweep import driver  # after composition: `sweep --help` needs neither Ray nor torch

    try:
        read_optuna_sweeper(cfg)
        code = driver.run(cfg)
    except ConfigError as exc:
        fail(str(exc))
    except (HydraException, OmegaConfBaseException, ValueError) as exc:
        # Raised inside the sweep these are bugs, not command-line mistakes: show all.
        raise RuntimeError(f"internal error: {exc}") from exc
    sys.exit(code)


def read_optuna_sweeper(cfg: DictConfig) -> None:
    """A Hydra Optuna sweeper file (``hparams_search=<name>``) becomes the sweep's space
    and settings; the plugin is not needed (sweep/config/optuna_sweeper.py)."""
    runtime = HydraConfig.get()
    sweeper = OmegaConf.to_container(runtime.sweeper, resolve=True)
    if not isinstance(sweeper, dict) or not optuna_sweeper.is_optuna_sweeper(sweeper):
        return
    given = {re.sub(r"^[+~]+", "", arg).split("=", 1)[0] for arg in runtime.overrides.task}
    for notice in optuna_sweeper.apply(cfg, sweeper, given):
        print(notice, flush=True)


def main() -> None:
    # No automatic garbage collection while the driver starts: its imports (Ray, MLflow,
    # pandas, matplotlib) allocate much and free little, and the collections they set off
    # took ~1 s from the first trial's start on 2 cores. The driver turns it back on when
    # the start-up is over (sweep/driver.py:start_up_over).
    gc.disable()
    # A stop before the sweep installs its handlers (imports, Hydra) ends it at once, in
    # one line: nothing has started yet. Set here for SIGINT too: a process started in the
    # background by a script inherits SIGINT ignored, and a bare `except:` in an import
    # would swallow the KeyboardInterrupt.
    for signum in (signal.SIGINT, signal.SIGTERM):
        signal.signal(signum, _stop_early)
    # Like `python -m`, let `_target_` name modules of the project `sweep` runs in. Our
    # config package is imported first: a user's own `conf/` folder must not hide it.
    importlib.import_module("conf")
    if os.getcwd() not in sys.path:
        sys.path.insert(0, os.getcwd())
    # Hydra prints its own composition errors over many lines and exits 1; let them
    # through instead so they become our one line and exit code 2.
    os.environ.setdefault("HYDRA_FULL_ERROR", "1")
    help_page.register()
    try:
        _main()
    except BrokenPipeError:  # `sweep --help | head`: the reader left; not an error
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
        sys.exit(0)
    except (HydraException, OmegaConfBaseException, ValueError) as exc:
        fail(hydra_error_line(exc, sys.argv[1:]))
    except yaml.MarkedYAMLError as exc:  # a config file of the user's that is not YAML
        fail(yaml_error_line(exc))
    finally:
        # Python's last garbage collection, as it exits, walks every object the driver
        # made (Ray, MLflow, pandas, matplotlib): ~1.4 s after the summary on 2 cores. The
        # process is ending and its memory goes back whole; atexit handlers still run.
        gc.freeze()


def _stop_early(signum: int, frame: object) -> None:
    sys.stdout.flush()
    print("\nInterrupted; nothing to resume.", file=sys.stderr, flush=True)
    os._exit(128 + signum)


def fail(line: str) -> None:
    print(f"error: {line}", file=sys.stderr)
    sys.exit(EXIT_BAD_INPUT)


def hydra_error_line(exc: Exception, args: list[str]) -> str:
    """Hydra's composition error as ``<key>: <what is wrong>; <fix>``."""
    text = str(exc)
    if isinstance(exc, MissingConfigException) and exc.missing_cfg_file:
        group, _, option = exc.missing_cfg_file.rpartition("/")
        options = ", ".join(exc.options or [])
        if group:
            return f"{group}: no option {option!r}; choose one of: {options}"
        return f"{option}: config not found; check --config-name / --config-dir"
    if match := re.match(r"Could not override '([^']+)'", text):
        key = match.group(1)
        value = next((a.split("=", 1)[1] for a in args if a.startswith(key + "=")), "...")
        return f"{key}: not a key of the config; fix the name, or add a new key with +{key}={value}"
    if match := re.match(r"Could not delete from config. '([^']+)' does not exist", text):
        return f"{match.group(1)}: cannot remove (~) a key the config does not have; fix the name"
    if match := re.match(r"Multiple values for (\S+?)\.", text):
        group = match.group(1)
        return f"{group}: the group already has an option; choose it with {group}=<option>, no +"
    if type(exc).__name__ == "OverrideParseException":
        bad = _unparsable(args) or "command line"
        return (
            f"{bad}: cannot parse this override ({text.splitlines()[0]}); "
            "quote values with spaces, brackets or braces, e.g. 'key=[1, 2]'"
        )
    return f"command line: {text.strip().splitlines()[0]}"


def yaml_error_line(exc: yaml.MarkedYAMLError) -> str:
    """``<file>:<line>: <problem>; fix the YAML there``."""
    mark = exc.problem_mark or exc.context_mark
    where = f"{mark.name}:{mark.line + 1}" if mark else "a config file"
    problem = " ".join(f"{exc.context or ''} {exc.problem or ''}".split())
    return f"{where}: {problem}; fix the YAML there (quote values with ':' or brackets)"


def _unparsable(args: list[str]) -> str | None:
    from hydra.core.override_parser.overrides_parser import OverridesParser

    parser = OverridesParser.create()
    for arg in args:
        try:
            if not arg.startswith("-"):
                parser.parse_overrides([arg])
        except Exception:
            return arg
    return None


if __name__ == "__main__":
    main()
