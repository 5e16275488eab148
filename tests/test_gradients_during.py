"""The exact-gradient checkpoints of a run: where they fall, what they record, what they leave."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch

from runners.config import RunConfig
from runners.engine.train import train_run
from runners.gradients.during import MAX_BITS, applies, checkpoint_epochs, gradient_error_record
from runners.grids.spec import load_spec
from runners.store.format import read_jsonl, run_dir
from runners.store.records import (
    GRADIENT_ERROR_METRICS,
    GRADIENT_ERROR_PREFIX,
    GRADIENT_ERROR_TIME,
    TIMING_KEYS,
    direction,
)
from runners.tasks.vae_model import BernoulliVAE
from runners.training.metrics import strip_timing
from ste_variants import get_estimator

pytestmark = pytest.mark.usefixtures("one_thread")


def test_checkpoints_are_the_epochs_nearest_the_fractions():
    assert checkpoint_epochs(20) == {1, 2, 10, 20}
    assert checkpoint_epochs(1) == {1}
    assert checkpoint_epochs(3) == {1, 2, 3}


def test_the_keys_have_directions_and_the_time_is_a_timing():
    assert direction("gerr_bias") == "lower" and direction("gerr_cosine_m16") == "higher"
    assert GRADIENT_ERROR_TIME in TIMING_KEYS


def test_only_bernoulli_samplers_apply():
    assert applies(get_estimator("disarm")) and applies(get_estimator("gumbel"))
    assert not applies(get_estimator("hardtanh"))
    assert not applies(get_estimator("binarynet_stochastic"))


def test_a_checkpoint_records_every_key_and_touches_nothing():
    torch.manual_seed(0)
    model = BernoulliVAE("linear", latents=5, estimator="bernoulli")
    model.train()
    x = (torch.rand(6, 784, generator=torch.Generator().manual_seed(1)) < 0.3).float()
    before = {k: v.clone() for k, v in model.state_dict().items()}
    rng = torch.get_rng_state()
    record = gradient_error_record(model, x, model.estimator, epoch=3, estimates=64)
    assert set(record) == {*GRADIENT_ERROR_METRICS, GRADIENT_ERROR_TIME}
    assert record["gerr_bias"] > 0.5 and record["gerr_bias_p"] < 0.01  # ST: biased
    assert 0 < record["gerr_rmse_m16"] < record["gerr_rmse_m1"]
    assert -1 <= record["gerr_cosine_m1"] <= record["gerr_cosine_m16"] <= 1
    assert record["gerr_rmse_e16"] == record["gerr_rmse_m16"]  # one evaluation per estimate
    assert model.training and torch.equal(torch.get_rng_state(), rng)
    assert all(torch.equal(before[k], v) for k, v in model.state_dict().items())
    assert all(p.grad is None for p in model.parameters())
    assert model.estimator.paired_noise is False  # the run's estimator object is not used
    # Deterministic given the epoch: the same record again.
    again = gradient_error_record(model, x, model.estimator, epoch=3, estimates=64)
    assert {k: v for k, v in again.items() if k != GRADIENT_ERROR_TIME} == {
        k: v for k, v in record.items() if k != GRADIENT_ERROR_TIME
    }


TINY_VAE = {
    "task": "bernoulli_vae",
    "dataset": "mnist-mini",
    "train_subset": 120,
    "test_subset": 40,
    "epochs": 3,
    "vae_latents": 6,
    "vae_eval_samples": 2,
    "vae_train_eval": 40,
    "device": "cpu",
    "num_threads": 1,
}


def _without_gerr(records):
    return [
        {k: v for k, v in strip_timing(r).items() if not k.startswith(GRADIENT_ERROR_PREFIX)}
        for r in records
    ]


@pytest.mark.parametrize("estimator", ["disarm", pytest.param("gumbel", marks=pytest.mark.slow)])
def test_checkpoints_during_training_change_nothing_and_land_in_the_records(tmp_path, estimator):
    plain = RunConfig.from_dict({**TINY_VAE, "estimator": estimator})
    checked = RunConfig.from_dict(
        {**TINY_VAE, "estimator": estimator, "gradient_error": "checkpoints",
         "gradient_error_probe": 4}
    )  # fmt: skip
    assert plain.run_id == checked.run_id  # an execution setting
    runs = {}
    for name, config in (("plain", plain), ("checked", checked)):
        assert train_run(config, tmp_path / name, progress=False)["status"] == "completed"
        runs[name] = read_jsonl(run_dir(tmp_path / name, config.run_id) / "metrics.jsonl")
    assert _without_gerr(runs["plain"]) == _without_gerr(runs["checked"])
    with_keys = [r["epoch"] for r in runs["checked"] if GRADIENT_ERROR_PREFIX + "bias" in r]
    assert with_keys == sorted(checkpoint_epochs(3)) == [1, 2, 3]
    assert not any(k.startswith(GRADIENT_ERROR_PREFIX) for r in runs["plain"] for k in r)
    last = runs["checked"][-1]
    assert last["gerr_variance"] > 0 and 0 < last["gerr_rmse_m1"]
    if estimator == "disarm":
        assert last["gerr_bias_p"] > 0.001  # unbiased


def test_the_shipped_exact_gradient_study_enumerates_and_records():
    spec = load_spec(Path(__file__).resolve().parents[1] / "ablations" / "vae_exact.yaml")
    configs = [c.config for c in spec.cells]
    assert {c.task for c in configs} == {"bernoulli_vae"}
    assert {c.gradient_error for c in configs} == {"checkpoints"}
    assert max(c.vae_latents for c in configs) <= MAX_BITS  # the reference is exact
    needed = {"disarm", "arm", "reinforce_loo", "bernoulli", "gumbel", "reinmax", "gumbel_rao"}
    assert needed <= {c.estimator for c in configs}
    assert all(applies(get_estimator(c.estimator)) for c in configs)
