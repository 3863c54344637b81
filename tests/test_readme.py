"""Every shell command in the README runs somewhere: in .ci/run, in another test, or here.

COVERED maps each command of the README's ```bash blocks to where it runs, and the
checks below keep the two in step: a README command missing from the map fails (add it,
with the test that runs it), and so does an entry that names a test which does not exist
or does not pass the command's arguments.
"""

from __future__ import annotations

import re
import shlex
from pathlib import Path

import pytest

from tests.conftest import REPO, run_sweep

README = REPO / "README.md"
CI_SCRIPT = REPO / ".ci" / "run"

CI = "ci"  # .ci/run runs it verbatim (each `&&` step appears in the script)
HERE = "here"  # test_readme_command_runs below runs it, with BUDGET appended
# Fewer trials and epochs than the README asks for; everything else as written.
BUDGET = ("num_samples=1", "trainer.max_epochs=2")

COVERED: dict[str, str] = {
    # Quickstart
    "python3 -m venv .venv && . .venv/bin/activate && pip install -e . && sweep": CI,
    'pip install -e ".[test]" && python -m pytest': CI,
    # Override anything
    "sweep --help": "tests/test_help.py::test_help_lists_every_group_and_option",
    "sweep model=cnn num_samples=32 trainer.max_epochs=30": HERE,
    "sweep searcher=quasi_random scheduler=fifo": HERE,
    "sweep search_space.model.lr.high=0.1": HERE,
    "sweep '+search_space.model.weight_decay={type: loguniform, low: 1e-6, high: 1e-2}'": HERE,
    "sweep '~search_space.model.hidden' model.hidden=256": HERE,
    "sweep single_trial=true model.lr=3e-3": HERE,
    # What a sweep leaves behind
    "sweep --config-dir sweeps/mlp_digits/<timestamp> --config-name best single_trial=true": (
        "tests/test_sweep_end_to_end.py::test_best_config_re_runs_as_a_single_trial"
    ),
    "sweep register_model=digits_mlp": (
        "tests/test_best_model.py::test_the_best_model_is_registered_and_predicts_like_its_checkpoint"
    ),
    # Compare in MLflow: the browser test serves a sweep with the command its summary
    # printed, which it checks is this one with the database's absolute path.
    "mlflow ui --backend-store-uri sqlite:///mlflow.db --port 5000": (
        "tests/test_browser.py::test_readme_ui_command_is_the_one_the_summary_prints"
    ),
    # Bring your own model
    "cd tests/examples/byo && sweep --config-dir my_conf model=softmax data=wine "
    "num_samples=2 trainer.max_epochs=3": (
        "tests/test_sweep_end_to_end.py::test_bring_your_own_model"
    ),
    "pip install -e tests/examples/lht && cd tests/examples/lht && sweep --config-dir configs "
    "model=digits data=digits search_space=digits metric=val/acc": (
        "tests/test_outside_models.py::test_a_lost_worker_and_a_killed_driver_resume_an_outside_model"
    ),
    # Grow a sweep
    "sweep resume=sweeps/mlp_digits/<timestamp> num_samples=48": (
        "tests/test_extend.py::test_a_finished_sweep_grows_from_4_to_8_trials"
    ),
    "sweep time_budget=30m": (
        "tests/test_extend.py::"
        "test_a_time_budget_ends_a_sweep_midway_and_the_printed_command_extends_it"
    ),
    "cd tests/examples/lht && sweep --config-dir configs model=digits data=digits "
    "hparams_search=digits_optuna": (
        "tests/test_outside_models.py::test_the_template_s_optuna_file_runs_unchanged_on_ray"
    ),
    # When things go wrong: the faulty example models
    "cd tests/examples/faulty && sweep --config-dir faulty_conf model=faulty num_samples=1 "
    "trainer.max_epochs=4 max_failures=1 model.marker_dir=$(mktemp -d)": (
        "tests/test_faults.py::test_the_sweep_goes_on_and_says_what_failed"
    ),
    # Tuning practice
    "sweep searcher=tpe searcher.warm_start=sweeps/mlp_digits/<timestamp>": (
        "tests/test_warm_start.py::test_a_sweep_warm_starts_from_another_sweeps_folder"
    ),
    'pip install -e ".[bohb]" && sweep searcher=bohb num_samples=6 trainer.max_epochs=9': (
        "tests/test_searcher.py::test_a_bohb_sweep_runs_with_real_ray_and_mlflow"
    ),
    "sweep refine_rounds=2": (
        "tests/test_tuning_practice.py::test_refinement_narrows_around_an_inside_optimum"
    ),
    "sweep '+search_space.model.optimizer={type: choice, values: [adam, sgd], role: scientific}'": (
        "tests/test_tuning_practice.py::test_comparison_finds_the_better_optimizer"
    ),
    "sweep search_space=mlp_size 'metric=[val_acc,param_count]' 'mode=[max,min]' searcher=tpe": (
        "tests/test_objectives.py::test_a_two_objective_sweep_shows_and_tags_its_front"
    ),
    "sweep '+search_space.model.optimizer={type: choice, values: [adam, sgd]}' "
    "'+search_space.model.beta1={type: one_minus_log, low: 0.8, high: 0.99, "
    "when: {model.optimizer: sgd}}'": (
        "tests/test_sweep_end_to_end.py::"
        "test_a_conditional_dimension_is_sampled_only_where_its_condition_holds"
    ),
    "sweep scheduler=pbt num_samples=8 trainer.max_epochs=20": (
        "tests/test_pbt.py::test_after_an_exploit_the_optimizer_uses_the_perturbed_learning_rate"
    ),
    'pip install -e ".[pb2]" && sweep scheduler=pb2 num_samples=8 trainer.max_epochs=20': (
        "tests/test_pbt.py::test_a_pb2_sweep_copies_with_values_from_its_bandit"
    ),
    # Run on a cluster: a real head + worker node and a real mlflow server on this machine
    "sweep cluster=remote cluster.address=HEAD_IP:6379 cluster.storage_path=/shared/sweeps "
    "tracking=server tracking.uri=http://HEAD_IP:5000": (
        "tests/test_cluster.py::test_trials_spread_over_both_nodes"
    ),
    'pip install -e ".[cluster]" && RAY_AUTH_MODE=token RAY_ADDRESS=http://127.0.0.1:8265 '
    "ray job submit -- sweep cluster=remote cluster.storage_path=s3://YOUR-BUCKET/sweeps "
    "tracking=server num_samples=64": (
        "tests/test_job_submit.py::test_the_readme_job_command_runs_a_sweep_on_the_cluster"
    ),
    'pip install -e ".[cluster]" && sweep cluster=remote cluster.address=HEAD_IP:6379 '
    "cluster.storage_path=/shared/sweeps resources.workers=2 resources.placement=SPREAD": (
        "tests/test_multi_worker.py::test_a_two_worker_trial_survives_losing_a_worker_s_node"
    ),
    # Tabular data of your own (the placeholder path becomes a real CSV)
    "sweep data=tabular data.path=/abs/path/table.csv data.target=label": HERE,
}


def readme_commands(text: str) -> list[str]:
    """The command lines of every ```bash block, trailing comments dropped."""
    commands = []
    for block in re.findall(r"^```bash\n(.*?)^```", text, re.DOTALL | re.MULTILINE):
        block = re.sub(r"\\[ \t]*\n", " ", block)  # join `\`-continued lines
        for line in block.splitlines():
            command = re.sub(r"\s+#\s.*$", "", line).strip()
            if command and not command.startswith("#"):
                commands.append(" ".join(command.split()))
    return commands


def test_every_readme_command_is_covered() -> None:
    commands = readme_commands(README.read_text())
    assert commands, "no ```bash blocks found in README.md"
    missing = [c for c in commands if c not in COVERED]
    assert not missing, (
        "README commands that no test runs; add each to COVERED in tests/test_readme.py "
        "with the test that runs it:\n" + "\n".join(missing)
    )
    stale = [c for c in COVERED if c not in commands]
    assert not stale, "COVERED lists commands the README no longer has:\n" + "\n".join(stale)


def test_ci_commands_are_in_the_ci_script() -> None:
    script = CI_SCRIPT.read_text()
    for command, where in COVERED.items():
        if where == CI:
            for step in command.split("&&"):
                assert step.strip() in script, f"{step.strip()!r} (from {command!r}) not in .ci/run"


@pytest.mark.parametrize(
    "command,test", [(c, t) for c, t in COVERED.items() if t not in (CI, HERE)]
)
def test_covering_test_exists_and_passes_the_arguments(command: str, test: str) -> None:
    path, name = test.split("::")
    source = (REPO / path).read_text()
    assert re.search(rf"^def {name}\(", source, re.MULTILINE), f"{test} does not exist"
    # The arguments the README passes appear in that test's file (test or fixture): flags
    # and values literally, key=value overrides by their key (the value may be a constant).
    for arg in arguments(command):
        if "<" in arg:  # placeholders: <timestamp>, $(mktemp -d)
            arg = arg.split("=", 1)[0] + "=" if "=" in arg else ""
        needle = arg.split("=", 1)[0] + "=" if "=" in arg and not arg.startswith("-") else arg
        assert needle in source, f"{path} never passes {needle!r} (README: {command})"


def arguments(command: str) -> list[str]:
    """The words after the program name of the command's last step (`cd x && sweep a b`)."""
    step = re.sub(r"\$\([^)]*\)", "<subshell-output>", command.split("&&")[-1])
    words = shlex.split(step)
    program = 2 if words[:2] == ["mlflow", "ui"] else 1
    return words[program:]


@pytest.mark.slow
@pytest.mark.parametrize("command", [c for c, t in COVERED.items() if t == HERE])
def test_readme_command_runs(command: str, tmp_path: Path) -> None:
    """The README's command as written, plus a small budget, in a fresh folder."""
    args = arguments(command)
    if "data.path=/abs/path/table.csv" in args:
        args[args.index("data.path=/abs/path/table.csv")] = f"data.path={table(tmp_path)}"
    proc = run_sweep(tmp_path, *args, *BUDGET)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert "Traceback" not in proc.stderr
    if "single_trial=true" in args:
        assert "best val_acc:" in proc.stdout
    else:
        assert "Best: trial 0" in proc.stdout
        assert "mlflow ui --backend-store-uri" in proc.stdout


def table(folder: Path) -> Path:
    """A real table: scikit-learn's breast cancer data, the class in a `label` column."""
    from sklearn.datasets import load_breast_cancer

    frame = load_breast_cancer(as_frame=True).frame.rename(columns={"target": "label"})
    path = folder / "table.csv"
    frame.to_csv(path, index=False)
    return path
