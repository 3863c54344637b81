"""What a competent user writes instead of `sweep`: a function trainable, Lightning with
Ray's TuneReportCheckpointCallback (a report and a checkpoint every epoch, so ASHA can
stop it and Tune can resume it), ASHA, the fixed points. No Hydra, no MLflow.

`--reuse-actors` turns on TuneConfig(reuse_actors=True); Ray 2.60's default is False,
which is what a user gets without reading the performance guide. `--no-checkpoint`
reports with TuneReportCallback (no checkpoint): the leanest script, which gives up
resuming a trial after a crash.
"""

from __future__ import annotations

import argparse
import tempfile

import ray
from ray import tune
from ray.tune.integration.pytorch_lightning import TuneReportCallback, TuneReportCheckpointCallback
from ray.tune.schedulers import ASHAScheduler, FIFOScheduler
from ray.tune.search import BasicVariantGenerator

from bench.contenders.common import build, load_spec, trainer


def train_fn(config: dict, spec: dict, checkpoint: bool = True) -> None:
    model, data = build(spec, config)
    metrics = {"val_acc": "val_acc", "val_loss": "val_loss"}
    report = (
        TuneReportCheckpointCallback(metrics=metrics, on="validation_end")
        if checkpoint
        else TuneReportCallback(metrics=metrics, on="validation_end")
    )
    trainer(spec, [report]).fit(model, datamodule=data)


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("spec")
    parser.add_argument("--reuse-actors", action="store_true")
    parser.add_argument("--fifo", action="store_true")
    parser.add_argument("--no-checkpoint", action="store_true")
    args = parser.parse_args()
    spec = load_spec(args.spec)
    points = spec["points"]
    # "local": never join another cluster left running on this (shared) machine.
    ray.init(address="local")
    scheduler = (
        FIFOScheduler()
        if args.fifo
        else ASHAScheduler(
            max_t=spec["epochs"],
            grace_period=spec["grace_period"],
            reduction_factor=spec["reduction_factor"],
        )
    )
    trainable = tune.with_parameters(train_fn, spec=spec, checkpoint=not args.no_checkpoint)
    tuner = tune.Tuner(
        tune.with_resources(trainable, {"cpu": 1}),
        param_space={key: tune.choice([p[key] for p in points]) for key in points[0]},
        tune_config=tune.TuneConfig(
            metric="val_acc",
            mode="max",
            scheduler=scheduler,
            search_alg=BasicVariantGenerator(points_to_evaluate=points),
            num_samples=len(points),
            reuse_actors=args.reuse_actors,
        ),
        run_config=tune.RunConfig(storage_path=tempfile.mkdtemp(), verbose=0),
    )
    best = tuner.fit().get_best_result()
    print(f"best val_acc {best.metrics['val_acc']:.4f} with {best.config}")


if __name__ == "__main__":
    main()
