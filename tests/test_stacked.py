"""Stacked training: K cells in one process give each cell its unstacked results."""

from __future__ import annotations

import copy
import hashlib
import os
import signal
from pathlib import Path

import pytest
import torch
from test_wandb import of_type, offline_runs, wandb_records

from runners.config import RunConfig
from runners.engine.run import Run
from runners.engine.train import Engine, train_run, train_runs
from runners.executors import cells
from runners.executors.cells import CellTask, execute_cells, plan_stacks
from runners.speed.grouped import (
    NotStackableError,
    StackedAutoencoder,
    member_losses,
    stack_optimizer_state,
    unstack_optimizer_state,
)
from runners.speed.stacking import check_stackable
from runners.store import format as st
from runners.store.format import read_json, read_jsonl
from runners.tracking.tracker import Tracker
from runners.tracking.wandb_tracker import WandbOptions, wandb_run_id
from runners.training.data import prepare_data
from runners.training.metrics import strip_timing
from runners.training.model import BinaryAutoencoder
from runners.training.stop import StopOnSignal

# Three different estimators (one stochastic), three seeds: 2 epochs x 2 steps of 64 images.
MEMBERS = (("hardtanh", 0), ("sigmoid(beta=4)", 1), ("bernoulli", 2))
SMALL = {
    "dataset": "mnist-mini",
    "train_subset": 128,
    "test_subset": 64,
    "epochs": 2,
    "device": "cpu",
    "num_threads": 1,
    "diagnostics": "off",  # at this size they cost more than training (tested on stacks in
    # tests/test_diagnostics_training.py)
}


def configs(**overrides) -> list[RunConfig]:
    return [
        RunConfig.from_dict({**SMALL, "estimator": e, "seed": s, **overrides}) for e, s in MEMBERS
    ]


def outputs(folder: Path) -> dict:
    """A run's results minus timing (what must be bit-identical), weights as one digest."""
    summary = strip_timing(read_json(folder / st.SUMMARY))
    summary.pop("files")
    weights = torch.load(folder / st.CHECKPOINT, weights_only=True)["model"]
    digest = hashlib.sha256()
    for key, value in weights.items():
        digest.update(key.encode())
        digest.update(value.contiguous().numpy().tobytes())
    return {
        "metrics": [strip_timing(r) for r in read_jsonl(folder / st.METRICS)],
        "steps": (folder / st.STEPS).read_bytes(),
        "summary": summary,
        "figure": (folder / st.FIGURE).read_bytes(),
        "weights": digest.hexdigest(),
    }


@pytest.fixture(scope="module")
def single_runs(tmp_path_factory) -> dict[str, Path]:
    """The three cells trained one by one with train_run: run_id -> folder."""
    store = tmp_path_factory.mktemp("single")
    for config in configs():
        assert train_run(config, store, progress=False, raise_errors=True)["status"] == "completed"
    return {c.run_id: st.run_dir(store, c.run_id) for c in configs()}


# --------------------------------------------------------------------------- the grouped model


pytestmark = pytest.mark.usefixtures("one_thread")


def _members(dtype=torch.float64) -> list[BinaryAutoencoder]:
    # Four members: the two "hardtanh" ones share one estimator call (adjacent, deterministic).
    specs = ("hardtanh", "hardtanh", "slope_annealed", "bernoulli")
    members = []
    for n, spec in enumerate(specs):
        torch.manual_seed(n)
        model = BinaryAutoencoder(spec, code_channels=32).to(dtype)
        model.binarize.generator = torch.Generator().manual_seed(100 + n)
        members.append(model)
    return members


@pytest.mark.slow
def test_grouped_model_trains_exactly_like_its_members_in_float64():
    members = _members()
    references = copy.deepcopy(members)  # deepcopy also copies the noise generators' states
    stacked = StackedAutoencoder(members)
    assert stacked.spans == [(0, 2), (2, 3), (3, 4)]
    optimizer = torch.optim.Adam(stacked.parameters(), lr=1e-3, betas=(0.5, 0.999))
    ref_optimizers = [
        torch.optim.Adam(m.parameters(), lr=1e-3, betas=(0.5, 0.999)) for m in references
    ]
    gen = torch.Generator().manual_seed(0)
    for step in range(6):  # float64 convolutions are slow on the CPU: a few steps of 4 images
        x = torch.rand(4, 4, 28, 28, generator=gen, dtype=torch.float64) * 2 - 1
        for m in [*members, *references]:
            m.binarize.set_progress(step / 6)
        optimizer.zero_grad()
        losses = member_losses(stacked(x), x)
        losses.sum().backward()  # the sum: member k's gradient is its own loss's gradient
        optimizer.step()
        for k, (model, opt) in enumerate(zip(references, ref_optimizers, strict=True)):
            opt.zero_grad()
            xk = x[:, k : k + 1]
            loss = torch.nn.functional.mse_loss(model(xk), xk)
            loss.backward()
            opt.step()
            torch.testing.assert_close(losses[k], loss.detach(), rtol=1e-9, atol=0)
            torch.testing.assert_close(  # both norms are taken in float32
                stacked.pre_grad_norms[k], model.pre_grad_norm, rtol=1e-6, atol=0
            )
    stacked.unload_members(members)
    for member, reference in zip(members, references, strict=True):
        for (name, a), b in zip(
            member.state_dict().items(), reference.state_dict().values(), strict=True
        ):
            torch.testing.assert_close(a, b, rtol=1e-7, atol=1e-10, msg=name)


def test_a_nan_member_leaves_the_others_untouched():
    members = _members(torch.float32)
    with torch.no_grad():
        members[1].decoder[0].weight.fill_(float("nan"))  # (the threshold stops NaN codes)
    stacked = StackedAutoencoder(members)
    optimizer = torch.optim.Adam(stacked.parameters(), lr=1e-3)
    x = torch.rand(8, 4, 28, 28) * 2 - 1
    for _ in range(2):
        optimizer.zero_grad()
        losses = member_losses(stacked(x), x)
        losses.sum().backward()
        optimizer.step()
    assert losses[1].isnan() and losses[[0, 2, 3]].isfinite().all()
    stacked.unload_members(members)
    for k in (0, 2, 3):
        assert all(t.isfinite().all() for t in members[k].state_dict().values())


def test_optimizer_state_stacks_and_unstacks():
    members = _members(torch.float32)
    stacked = StackedAutoencoder(members)
    optimizer = torch.optim.Adam(stacked.parameters(), lr=1e-3)
    x = torch.rand(4, 4, 28, 28) * 2 - 1
    member_losses(stacked(x), x).sum().backward()
    optimizer.step()
    member_opts = [torch.optim.Adam(m.parameters(), lr=1e-3) for m in members]
    unstack_optimizer_state(optimizer, member_opts)
    first = next(iter(stacked.parameters()))
    exp_avg = optimizer.state[first]["exp_avg"]
    member_avg = member_opts[2].state[next(iter(members[2].parameters()))]["exp_avg"]
    assert torch.equal(member_avg, exp_avg.chunk(4)[2])
    again = torch.optim.Adam(StackedAutoencoder(members).parameters(), lr=1e-3)
    stack_optimizer_state(again, member_opts)
    restacked, original = again.state_dict()["state"], optimizer.state_dict()["state"]
    assert restacked.keys() == original.keys()
    for a, b in zip(restacked.values(), original.values(), strict=True):
        assert all(torch.equal(a[key], b[key]) for key in a)


# --------------------------------------------------------------------------- whole runs


@pytest.mark.slow
def test_looped_stack_is_bit_identical_to_single_runs(single_runs, tmp_path):
    tasks = [CellTask(config=c, store=str(tmp_path)) for c in configs(stack=3)]
    summaries = execute_cells(tasks)  # the executors' unit of work; CPU default: "looped"
    assert [s["status"] for s in summaries] == ["completed"] * 3
    assert [s["run_id"] for s in summaries] == [t.run_id for t in tasks]
    for task in tasks:
        assert outputs(st.run_dir(tmp_path, task.run_id)) == outputs(single_runs[task.run_id])
    assert execute_cells(tasks) == summaries  # final cells are never retrained


@pytest.mark.slow
def test_grouped_stack_matches_single_runs(single_runs, tmp_path):
    summaries = train_runs(configs(), tmp_path, progress=False, raise_errors=True, mode="grouped")
    assert [s["status"] for s in summaries] == ["completed"] * 3
    for config in configs():
        folder = st.run_dir(tmp_path, config.run_id)
        steps = read_jsonl(folder / st.STEPS)
        reference = read_jsonl(single_runs[config.run_id] / st.STEPS)
        assert [s["step"] for s in steps] == [1, 2, 3, 4]
        # Grouped kernels round differently and training amplifies that (runners.training.kernels): the
        # first step agrees to float precision, later ones to a few parts in 10^4 or 10^5.
        for ours, theirs, rtol in zip(steps, reference, (1e-5, 2e-3, 2e-3, 2e-3), strict=True):
            assert ours["train_loss"] == pytest.approx(theirs["train_loss"], rel=rtol)
        ours_m, theirs_m = (
            read_jsonl(folder / st.METRICS),
            read_jsonl(single_runs[config.run_id] / st.METRICS),
        )
        for a, b in zip(ours_m, theirs_m, strict=True):
            assert a["test_mse"] == pytest.approx(b["test_mse"], rel=2e-2)
            assert a["grad_norm_pre"] == pytest.approx(b["grad_norm_pre"], rel=2e-2)
        assert (folder / st.FIGURE).is_file() and (folder / st.CHECKPOINT).is_file()


class SignalAt(Tracker):
    """Sends this process SIGINT when it logs step `at`."""

    def __init__(self, at: int) -> None:
        self.at, self.steps = at, []

    def log_step(self, step, metrics):
        self.steps.append(step)
        if step == self.at:
            os.kill(os.getpid(), signal.SIGINT)


@pytest.mark.slow
@pytest.mark.parametrize("mode", ["looped", "grouped"])
def test_an_interrupted_stack_resumes_stacked_or_alone(single_runs, tmp_path, mode):
    cells = configs()
    trackers = [SignalAt(3), None, None]
    summaries = train_runs(cells, tmp_path, trackers=trackers, progress=False, mode=mode)
    assert [s["status"] for s in summaries] == ["interrupted"] * 3
    assert trackers[0].steps == [1, 2, 3]
    for config in cells:
        ckpt = torch.load(st.run_dir(tmp_path, config.run_id) / st.CHECKPOINT, weights_only=True)
        assert (ckpt["epoch"], ckpt["step"], ckpt["step_in_epoch"]) == (1, 3, 1)
    # One cell resumes alone, the other two as a stack (the finished one is skipped).
    assert train_run(cells[2], tmp_path, progress=False)["status"] == "completed"
    summaries = train_runs(cells, tmp_path, progress=False, mode=mode)
    assert [s["status"] for s in summaries] == ["completed"] * 3
    if mode == "looped":
        for config in cells:
            assert outputs(st.run_dir(tmp_path, config.run_id)) == outputs(
                single_runs[config.run_id]
            )


@pytest.mark.slow
def test_diverging_members_are_recorded_and_the_rest_go_on(tmp_path):
    cells = configs()
    cpu = torch.device("cpu")
    data = prepare_data("mnist-mini", 128, 64, cpu)

    class NanDecoder(Run):  # prepared like the others, then its decoder's weights are NaN
        def prepare(self) -> None:
            super().prepare()
            with torch.no_grad():
                self.state.model.decoder[0].weight.fill_(float("nan"))

    runs = [
        (NanDecoder if n == 1 else Run)(c, st.run_dir(tmp_path, c.run_id), cpu, data, None, False)
        for n, c in enumerate(cells)
    ]
    engine = Engine(runs, StopOnSignal(), "grouped", stacked=True, progress=False)
    summaries = engine.train(raise_errors=True)
    assert [s["status"] for s in summaries] == ["completed", "diverged", "completed"]
    assert "train loss became nan at step 1" in summaries[1]["error"]
    assert len(read_jsonl(st.run_dir(tmp_path, cells[0].run_id) / st.METRICS)) == 2


def test_stacking_rules():
    check_stackable(configs())
    with pytest.raises(NotStackableError, match="these differ: lr"):
        check_stackable([*configs(), configs(lr=0.01)[0]])
    with pytest.raises(NotStackableError, match="twice"):
        check_stackable([configs()[0], configs()[0]])
    with pytest.raises(NotStackableError, match="unknown stack mode"):
        train_runs(configs(), "unused", mode="vmap")
    more = [c.replace(seed=c.seed + 10) for c in configs()]
    tasks = [CellTask(config=c, store="s") for c in [*configs(), *configs(lr=0.01), *more]]
    groups = plan_stacks(tasks, 2)
    # Equal settings stack together (in order, at most 2 per stack); lr=0.01 cells apart.
    assert [len(g) for g in groups] == [2, 2, 2, 1, 2]
    assert [len(g) for g in plan_stacks(tasks, 1)] == [1] * 9
    assert all(len({t.config.lr for t in g}) == 1 for g in groups)


@pytest.mark.slow
def test_each_member_gets_its_own_wandb_run(tmp_path, monkeypatch):
    import wandb  # heavy and optional: only this test needs it

    for name in ("WANDB_API_KEY", "WANDB_MODE", "WANDB_DIR", "WANDB_BASE_URL", "NETRC"):
        monkeypatch.delenv(name, raising=False)
    for name in ("HOME", "WANDB_DATA_DIR", "WANDB_CONFIG_DIR", "WANDB_CACHE_DIR"):
        monkeypatch.setenv(name, str(tmp_path / name.lower()))
    store = tmp_path / "store"
    cells = configs(epochs=1)[:2]
    options = WandbOptions(mode="offline", project="proj")
    tasks = [CellTask(config=c, store=str(store), wandb=options) for c in cells]
    try:
        assert [s["status"] for s in execute_cells(tasks)] == ["completed"] * 2
    finally:
        wandb.teardown()
    folders = offline_runs(store)
    assert len(folders) == 2  # one W&B run per member, not one shared run
    for config in cells:
        (folder,) = [f for f in folders if f.name.endswith("-" + wandb_run_id(config.run_id))]
        records = wandb_records(folder)
        (run,) = of_type(records, "run")
        assert run["job_type"] == config.estimator
        losses = [h["item"]["train/loss"] for h in of_type(records, "history")
                  if "train/loss" in h["item"]]  # fmt: skip
        steps = read_jsonl(st.run_dir(store, config.run_id) / st.STEPS)
        assert losses == pytest.approx([s["train_loss"] for s in steps])


@pytest.mark.slow
def test_members_keep_their_own_thread_counts(tmp_path):
    # X starts alone with 1 thread and is interrupted; stacked with a fresh Y in a 2-thread
    # process, X goes on with 1 thread (as it would alone) and Y trains and records 2.
    x, y = configs(num_threads=None)[:2]
    before = torch.get_num_threads()
    try:
        torch.set_num_threads(1)
        first = train_run(x, tmp_path / "stack", tracker=SignalAt(1), progress=False)
        assert first["status"] == "interrupted"
        x_alone = train_run(x, tmp_path / "alone", progress=False)
        torch.set_num_threads(2)
        summaries = train_runs([x, y], tmp_path / "stack", progress=False)
        y_alone = train_run(y, tmp_path / "alone", progress=False)
    finally:
        torch.set_num_threads(before)
    assert [s["status"] for s in (*summaries, x_alone, y_alone)] == ["completed"] * 4
    for config, threads in ((x, 1), (y, 2)):
        stacked, alone = (st.run_dir(tmp_path / s, config.run_id) for s in ("stack", "alone"))
        assert read_json(stacked / st.CONFIG)["runtime"]["torch_threads"] == threads
        assert outputs(stacked) == outputs(alone)


class InterruptAt(Tracker):
    """Raises KeyboardInterrupt (a signal outside the loop's own handling) at step `at`;
    records how it was finished."""

    def __init__(self, at: int | None = None) -> None:
        self.at, self.finished = at, None

    def log_step(self, step, metrics):
        if step == self.at:
            raise KeyboardInterrupt

    def finish(self, summary):
        self.finished = summary


def test_an_escaping_interrupt_finishes_every_members_tracker(tmp_path, monkeypatch):
    trackers = iter([InterruptAt(2), InterruptAt(), InterruptAt()])
    made = []

    def tracker(task):
        made.append(next(trackers))
        return made[-1]

    monkeypatch.setattr(cells, "cell_tracker", tracker)  # the trackers under test, no W&B
    tasks = [CellTask(config=c, store=str(tmp_path)) for c in configs()]
    with pytest.raises(KeyboardInterrupt):
        execute_cells(tasks)
    assert len(made) == 3
    assert [t.finished["status"] for t in made] == ["interrupted"] * 3
