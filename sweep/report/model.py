"""After the sweep: the best trial's model, as an MLflow model on the parent run.

Rebuilt here from the trial's config and its best checkpoint, then logged by
sweep/track/model.py with ``mlflow.pytorch`` (an input example from the validation data,
and the signature it implies), and registered in the Model Registry under
``register_model=<name>`` with the parent run as its source. Loading it back:
``mlflow.pytorch.load_model(<models:/... URI>)``.

It runs in a Ray actor, beside the checkpoints and where torch is imported anyway, so the
driver stays light (sweep/run/tuner.py:trial_function says why). The actor starts with the first
trial result (:class:`WarmLogger`) and, at the lowest CPU priority, while the trials
train, pays what the logging would otherwise pay after them: importing torch,
Lightning, ``mlflow.pytorch`` and the config's model and data modules (4-5 s of CPU),
MLflow's first ``torch.export`` of a model (~1 s: a tiny one is saved and thrown away)
and opening the tracking store (~1.3 s for SQLite: MLflow imports SQLAlchemy and its
store). When the sweep ends only the logging itself is left (~0.5 s for the default
MLP). A model that cannot be logged (not picklable, an input example the model cannot
take) costs a warning, not the sweep.

Where it can, a copy of a trial's own worker logs it instead of the actor: the first
trial that starts on the driver's machine forks its worker (:func:`fork_logger`), before
it trains, and the copy waits for the driver's request with torch, Lightning and the
model's code already imported; it warms up only MLflow. That saves the actor's new
Python and its imports (~5 s of CPU, on cores the trials need). The actor stays for
trials on other machines, and takes over when the copy is gone.
"""

from __future__ import annotations

import functools
import json
import os
import pickle
import socket
import struct
import sys
import threading
import uuid
from collections.abc import Callable
from pathlib import Path
from typing import Any, NoReturn

import ray

# Long enough for a big model's upload to a server; a stuck one must not hold the summary.
TIMEOUT_S = 600


class ModelLogger:
    """The Ray actor that logs the best model; started by :class:`WarmLogger`."""

    def __init__(self, targets: list[str], uri: str | None) -> None:
        _lowest_priority()
        import lightning  # noqa: F401
        import torch  # noqa: F401

        import sweep.run.trial  # noqa: F401  (the model's build)

        _warm_up(targets, uri)

    def log(
        self, cfg: dict[str, Any], checkpoint: str, uri: str, run_id: str, register_as: str | None
    ) -> str:
        return _log_model(cfg, checkpoint, uri, run_id, register_as)


class WarmLogger:
    """The sweep's model logger: a fork of the first local trial's worker that asks for it
    (:meth:`at_trial_start`), or else the :class:`ModelLogger` actor, started by
    :meth:`warm` once the trials hold their workers (sweep/run/callbacks.py:WhenTrialsRun).
    Not before: on an embedded Ray the trials start in the workers Ray prestarted, and an
    actor started first would take one of them, leaving a trial to wait for a new Python
    (~4 s)."""

    def __init__(self, base: dict[str, Any], uri: str | None = None) -> None:
        self.handle: Any = None
        self.uri = uri  # the tracking store the model goes to, opened as it warms up
        # The classes the best model's build imports: those of the sweep's config.
        self.targets = [
            str(section["_target_"])
            for section in (base.get("model"), base.get("data"))
            if isinstance(section, dict) and "_target_" in section
        ]
        self.fork: socket.socket | None = None  # the connection to the forked copy
        self.address: str | None = None
        try:  # Linux's abstract socket names: nothing on disk, gone with this process
            listener = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
            address = f"\0sweep-model-logger-{uuid.uuid4().hex}"
            listener.bind(address)
            listener.listen(8)
        except OSError:  # not Linux: the actor logs the model
            return
        self.address = address
        threading.Thread(target=self._accept, args=(listener,), daemon=True).start()

    def _accept(self, listener: socket.socket) -> None:
        """Say yes to the first trial that asks, from this user; closing the listener
        refuses the others."""
        with listener:
            while True:
                try:
                    conn, _ = listener.accept()
                    creds = conn.getsockopt(socket.SOL_SOCKET, socket.SO_PEERCRED, 12)
                    if struct.unpack("3i", creds)[1] != os.getuid():
                        conn.close()
                        continue
                    conn.sendall(b"1")
                except OSError:
                    return
                self.fork = conn
                return

    def at_trial_start(self) -> Callable[[], None] | None:
        """What a trial calls as it starts (sweep/run/trial.py), or None without a listener."""
        if self.address is None:
            return None
        return functools.partial(fork_logger, self.address, self.targets, self.uri)

    def close(self) -> None:
        """A copy still waiting ends: the sweep ended without a model to log."""
        if self.fork is not None:
            self.fork.close()

    def warm(self) -> None:
        """Start the actor now, unless a trial's copy waits already."""
        if self.fork is None:
            self.actor()

    def actor(self) -> Any:
        # It asks for no CPU, so it never holds a trial back from starting.
        if self.handle is None:
            actor = ray.remote(num_cpus=0, max_restarts=0)(ModelLogger)
            self.handle = actor.remote(self.targets, self.uri)
        return self.handle


def publish(
    cfg: dict[str, Any],
    checkpoint: str,
    uri: str,
    run_id: str,
    register_as: str | None,
    logger: WarmLogger | None = None,
) -> Callable[[], tuple[str, str | None]]:
    """Start logging the model on the parent run ``run_id`` (in ``logger``'s fork or
    actor, warm by now, or a new actor), beside the driver's own report; the returned call
    waits for (where it is, for the summary, None), or ("", the warning that says why
    not)."""
    request = (cfg, checkpoint, uri, run_id, register_as)
    fork = logger.fork if logger is not None else None
    if fork is not None:
        try:
            fork.sendall(pickle.dumps(request))
            fork.shutdown(socket.SHUT_WR)  # the request is whole
        except OSError:
            fork = None

    def in_actor() -> Any:
        return (logger or WarmLogger(cfg, uri)).actor().log.remote(*request)

    ref = None if fork is not None else in_actor()

    def wait() -> tuple[str, str | None]:
        if fork is not None:
            reply = _reply(fork)
            if reply is not None:
                error = reply.get("error")
                return reply.get("model", ""), error and _warning(error)
        # Without a copy, or the copy is gone (killed, out of memory): the actor logs it.
        pending = ref if ref is not None else in_actor()
        try:
            return str(ray.get(pending, timeout=TIMEOUT_S)), None
        except Exception as exc:  # any failure is the model's, never the sweep's
            cause = exc.cause if isinstance(exc, ray.exceptions.RayTaskError) else exc
            return "", _warning(f"{type(cause).__name__}: {cause}")

    return wait


def _warning(error: str) -> str:
    text = " ".join(error.split())[:300]
    return f"the best model was not logged to MLflow ({text})"


def _reply(fork: socket.socket) -> dict[str, str] | None:
    """The copy's answer, or None when it ended without one. JSON, never a pickle: the
    driver loads nothing another process could make it run."""
    fork.settimeout(TIMEOUT_S)
    chunks = []
    try:
        with fork:
            while chunk := fork.recv(65536):
                chunks.append(chunk)
        reply = json.loads(b"".join(chunks) or b"null")
    except (OSError, ValueError):
        return None
    return reply if isinstance(reply, dict) else None


def fork_logger(address: str, targets: list[str], uri: str | None) -> None:
    """In a trial's worker, as the trial starts: ask the driver listening at ``address``
    whether this worker is to be the model logger, and if it is (the first to ask from
    the driver's machine), fork a copy of it that waits for the request. A worker on
    another machine cannot reach the name, and one whose CUDA is set up cannot be forked
    usefully; either trains on without asking."""
    torch = sys.modules.get("torch")
    if torch is not None and torch.cuda.is_initialized():
        return
    try:
        conn = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    except OSError:
        return
    with conn:
        try:
            conn.settimeout(2)
            conn.connect(address)
            chosen = conn.recv(1) == b"1"
        except OSError:
            chosen = False
        if not chosen:
            return
        child = os.fork()
        if child == 0:
            # Forked once more, so that the copy is nobody's child: Ray ends a worker's
            # children with it, and Tune ends this worker when its trials end.
            try:
                if os.fork() == 0:
                    _serve(conn, targets, uri)
            finally:
                os._exit(0)
    os.waitpid(child, 0)


def _serve(conn: socket.socket, targets: list[str], uri: str | None) -> NoReturn:
    """The forked copy: drop the worker's connections (Ray must see the worker's own end
    when it ends), warm up MLflow, log the model the driver asks for, and answer. It ends
    after one request, or as soon as the driver has ended without one."""
    import gc
    import signal

    # A session of its own: Ray ends a worker's process group with it (SIGTERM), and this
    # copy outlives the worker it came from; the driver's end of ``conn`` ends it.
    os.setsid()
    signal.signal(signal.SIGTERM, signal.SIG_DFL)  # not the Ray worker's handler
    gc.freeze()  # the worker's objects (Ray's among them) are never finalised here
    keep = conn.fileno()
    os.closerange(3, keep)
    os.closerange(keep + 1, os.sysconf("SC_OPEN_MAX"))
    try:
        _lowest_priority()  # for the warm-up's thread too, which inherits it
        # In a thread, so that a driver that ends without a request ends the copy at once,
        # not after a warm-up the trials of the next sweep may leave no CPU for.
        warming = threading.Thread(target=_warm_up, args=(targets, uri), daemon=True)
        warming.start()
        conn.settimeout(None)
        chunks = []
        while chunk := conn.recv(65536):
            chunks.append(chunk)
        if chunks:
            warming.join()
            try:
                reply = {"model": _log_model(*pickle.loads(b"".join(chunks)))}
            except Exception as exc:  # any failure is the model's, said in the summary
                reply = {"error": f"{type(exc).__name__}: {exc}"}
            conn.sendall(json.dumps(reply).encode())
    finally:
        os._exit(0)


def _lowest_priority() -> None:
    """The lowest CPU priority there is, so the logger takes only CPU no trial wants. Not
    nice: Ray runs every worker (the trials too) at nice 15, and 19 would still take a
    third of a core from them; SCHED_IDLE takes the least (on 2 busy cores the trials'
    epochs still run ~30 % slower while it imports: bench/BENCHMARKS.md)."""
    if hasattr(os, "sched_setscheduler"):
        os.sched_setscheduler(0, os.SCHED_IDLE, os.sched_param(0))
    else:
        os.nice(19)


def _warm_up(targets: list[str], uri: str | None) -> None:
    """Import the config's model and data classes, then warm up MLflow's side of the
    logging (sweep/track/model.py:warm_up). Only a warm-up: anything that fails here
    fails again, with its message, in the logging itself."""
    import contextlib

    from hydra.utils import get_class

    from sweep.quiet import silence
    from sweep.track import model as tracked

    silence()
    for target in targets:
        with contextlib.suppress(Exception):  # the build reports it
            get_class(target)
    tracked.warm_up(uri)


def _log_model(
    cfg: dict[str, Any], checkpoint: str, uri: str, run_id: str, register_as: str | None
) -> str:
    # In the copy of a trial's worker, or the Ray actor: what the driver never imports.
    import torch

    from sweep.quiet import silence
    from sweep.run.trial import CHECKPOINT_FILE, build, written_by_sweep
    from sweep.track import model as tracked

    silence()
    model, datamodule = build(cfg)
    folder = Path(checkpoint)
    state = torch.load(
        folder / CHECKPOINT_FILE, map_location="cpu", weights_only=not written_by_sweep(folder)
    )
    model.load_state_dict(state["state_dict"])
    model.eval()
    return tracked.log(model, input_example(datamodule), uri, run_id, register_as)


def input_example(datamodule: Any) -> Any:
    """The first inputs of a validation batch (numpy, at most 5 rows), or None when the
    batch is not a tensor or an (inputs, targets) pair."""
    import torch

    batch = next(iter(datamodule.val_dataloader()))
    inputs = batch[0] if isinstance(batch, (list, tuple)) else batch
    if not isinstance(inputs, torch.Tensor):
        return None
    return inputs[:5].cpu().numpy()
