"""The ``sweep`` command.

    sweep                                      # default: digits MLP, ASHA, embedded Ray
    sweep model=cnn num_samples=32 trainer.max_epochs=30
    sweep search_space.model.lr.high=0.1       # change a bound
    sweep '+search_space.model.weight_decay={type: loguniform, low: 1e-6, high: 1e-2}'
    sweep '~search_space.model.hidden' model.hidden=256   # fix a dimension instead
    sweep single_trial=true                    # one trial, no Ray: debug the model first

This is the only module that touches Hydra's runtime.
"""

from __future__ import annotations

import os
import sys

import hydra
from omegaconf import DictConfig

from sweep.errors import ConfigError

EXIT_BAD_INPUT = 2


@hydra.main(version_base="1.3", config_path="pkg://conf", config_name="config")
def _main(cfg: DictConfig) -> None:
    from sweep import driver

    try:
        code = driver.run(cfg)
    except ConfigError as exc:
        print(f"error: {exc}", file=sys.stderr)
        sys.exit(EXIT_BAD_INPUT)
    sys.exit(code)


def main() -> None:
    # Like `python -m`, let `_target_` name modules of the project `sweep` runs in.
    if os.getcwd() not in sys.path:
        sys.path.insert(0, os.getcwd())
    _main()


if __name__ == "__main__":
    main()
