"""No orchestration at all: train every point to the last epoch, one after another, in
this process (one torch thread, like one trial). The floor for the work itself."""

from __future__ import annotations

import sys

from bench.contenders.common import build, load_spec, trainer


def main(spec_path: str) -> None:
    spec = load_spec(spec_path)
    for point in spec["points"]:
        model, data = build(spec, point)
        trainer(spec, []).fit(model, datamodule=data)


if __name__ == "__main__":
    main(sys.argv[1])
