"""Preflight reads a ``_target_``'s source instead of importing it: the driver of a sweep
never imports torch or Lightning (the trials do), and a typo is still one clear line."""

from __future__ import annotations

import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

from sweep.errors import ConfigError
from sweep.preflight import binding, check_data, check_targets, has_check

REPO = Path(__file__).resolve().parents[1]


@pytest.fixture
def user_code(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """A package written elsewhere, importable like a user's own folder."""
    pkg = tmp_path / "theirs"
    pkg.mkdir()
    (pkg / "__init__.py").write_text("")
    (pkg / "base.py").write_text(
        textwrap.dedent("""
        import lightning as L

        class Checked(L.LightningDataModule):
            def check(self):
                raise ValueError("column 'y' is not in the file")
        """)
    )
    (pkg / "data.py").write_text(
        textwrap.dedent("""
        from lightning import LightningDataModule
        from theirs.base import Checked

        class Plain(LightningDataModule):
            pass

        class Inherited(Checked):
            pass

        def make_base():
            return Checked

        class Odd(make_base()):
            pass
        """)
    )
    (pkg / "broken.py").write_text("class Model(:\n")
    monkeypatch.syspath_prepend(str(tmp_path))
    return pkg


def test_a_target_is_found_in_its_source() -> None:
    assert binding("models.mlp.MLPClassifier") is not None
    assert binding("torch.optim.Adam") is not None  # re-exported by torch.optim's __init__
    assert binding("models.mlp.NoSuchModel") is None  # not in the source: imported to tell
    assert binding("no_such_package.Model") is None


def test_a_datamodule_check_is_found_through_its_bases(user_code: Path) -> None:
    assert has_check("models.tabular.TabularDataModule") is True
    assert has_check("models.digits.DigitsDataModule") is False  # via models.data
    assert has_check("theirs.data.Plain") is False
    assert has_check("theirs.data.Inherited") is True
    assert has_check("theirs.data.Odd") is None  # a base the source cannot name


def test_an_inherited_check_still_runs(user_code: Path) -> None:
    with pytest.raises(ConfigError, match="column 'y' is not in the file"):
        check_data({"_target_": "theirs.data.Inherited"})
    check_data({"_target_": "theirs.data.Plain"})


@pytest.mark.parametrize(
    ("target", "words"),
    [
        ("models.mlp.MLPClassifer", "Are you sure that 'MLPClassifer' is importable"),
        ("theirs.broken.Model", "invalid syntax"),
        ("theirs.nosuch.Model", "Are you sure that 'nosuch' is importable"),
    ],
)
def test_a_target_that_does_not_import_is_one_clear_error(
    user_code: Path, target: str, words: str
) -> None:
    node = {"_target_": "theirs.data.Plain", "net": {"_target_": target}}
    with pytest.raises(ConfigError) as raised:
        check_targets(node, "model")
    assert raised.value.key == "model.net._target_"
    assert words in str(raised.value)


def test_the_driver_imports_neither_torch_nor_lightning() -> None:
    """~5 s of the start of every sweep: the trials import them, in their own processes."""
    code = (
        "import sys, sweep.driver, sweep.preflight as p; "
        "p.check_targets({'_target_': 'models.mlp.MLPClassifier', "
        "'optimizer': {'_target_': 'torch.optim.Adam', '_partial_': True}}, 'model'); "
        "p.check_data({'_target_': 'models.digits.DigitsDataModule'}); "
        "print(sorted(m for m in ('torch', 'lightning') if m in sys.modules))"
    )
    out = subprocess.run(
        [sys.executable, "-c", code], cwd=REPO, capture_output=True, text=True, check=True
    )
    assert out.stdout.strip() == "[]"


def test_a_trial_s_worker_imports_the_trial_and_not_the_tuner() -> None:
    """What Tune sends the workers is the trial's function by value: unpickled, it names
    no module of the driver's (the tuner's optuna and pyarrow, ~1 s of every worker's
    start), and called it imports sweep/run/trial.py there."""
    code = (
        "import sys, pickle; f = pickle.loads(sys.stdin.buffer.read()); "
        "print(sorted(m for m in ('sweep.run.tuner', 'optuna', 'pyarrow.fs', 'torch') "
        "if m in sys.modules)); print(f.__code__.co_names)"
    )
    from ray import cloudpickle

    from sweep.run.tuner import trial_function

    out = subprocess.run(
        [sys.executable, "-c", code],
        cwd=REPO,
        input=cloudpickle.dumps(trial_function()),
        capture_output=True,
        check=True,
    )
    imported, names = out.stdout.decode().splitlines()
    assert imported == "[]"
    assert names == "('sweep.run', 'trial', 'train')"
