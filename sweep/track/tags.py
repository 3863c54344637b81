"""Every tag the sweep writes on its MLflow runs, named once (tests and users filter on them)."""

PARENT = "mlflow.parentRunId"  # MLflow's own: nests a run under another
NOTE = "mlflow.note.content"  # MLflow's own: the run description on the run page
GIT_COMMIT = "mlflow.source.git.commit"  # MLflow's own, with the two below: the Source column
SOURCE_NAME = "mlflow.source.name"
SOURCE_TYPE = "mlflow.source.type"

SWEEP_DIR = "sweep.dir"  # parent: the output folder
SEARCHER = "sweep.searcher"
SCHEDULER = "sweep.scheduler"
SEED = "sweep.seed"
BEST_TRIAL = "sweep.best_trial"
FRONT_TRIALS = "sweep.front_trials"  # parent, several objectives: the Pareto front's trial numbers
PARETO_FRONT = "sweep.pareto_front"  # child runs, several objectives: "true" on the front
BOUNDARY = "sweep.boundary"  # prefix: one tag per boundary warning

STAGE = "sweep.stage"  # stage runs and their trials: the stage's slug
ROUND = "sweep.round"

TRIAL_ID = "sweep.trial_id"  # child runs
END_REASON = "sweep.end_reason"
ERROR = "sweep.error"
RETRIES = "sweep.retries"
LAST_ERROR = "sweep.last_error"
NODE = "sweep.node"
NODE_ID = "sweep.node_id"
DEVICE = "sweep.device"  # child runs: the torch device the trial trained on (cuda:0, cpu)
CONFIG_CHANGE = "sweep.config_at_epoch"  # prefix: pbt gave the trial new values from this epoch
