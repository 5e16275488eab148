"""The Bernoulli VAE task: config, data, model, and training through the one engine.

Sizes are tiny (a few hundred mnist-mini images, 2 epochs of a few steps): what is tested is
the protocol's wiring (identity, refusals, paired data and noise, resume, stacks), not results.
"""

from __future__ import annotations

import math
from pathlib import Path

import pytest
import torch

from runners.config import DATASET_SIZES, ConfigError, RunConfig
from runners.config_tasks import TASK_DEFAULTS, VAE_ONLY, VAE_TRAIN_SIZES
from runners.engine.train import train_run, train_runs
from runners.store import format as st
from runners.store.checkpoint import load_checkpoint, save_checkpoint
from runners.store.format import read_json, read_jsonl
from runners.tasks.lookup import get_task
from runners.tasks.vae import binarize
from runners.tasks.vae_model import BernoulliVAE, bias_from_mean
from runners.training.metrics import strip_timing
from runners.training.state import RunState

TINY = {
    "task": "bernoulli_vae",
    "dataset": "mnist-mini",
    "train_subset": 150,
    "test_subset": 40,
    "epochs": 2,
    "vae_eval_samples": 4,
    "vae_train_eval": 60,
    "device": "cpu",
    "num_threads": 1,
}
TASK = get_task("bernoulli_vae")


def vae(**overrides) -> RunConfig:
    return RunConfig.from_dict({**TINY, **overrides})


def test_the_article_task_keeps_its_run_ids():
    # The ids of the article's default run and of a spec cell, as before the task field existed.
    assert RunConfig().run_id == "hardtanh-s0-7e0678f686"
    assert RunConfig(seed=3, estimator="sigmoid(beta=4)", determinism="machine").run_id == (
        "sigmoid-beta-4-s3-32f50a47fa"
    )
    assert "task" not in RunConfig().identity()


def test_vae_identity_has_its_fields_and_its_defaults():
    config = vae()
    assert {"task", *VAE_ONLY} <= set(config.identity())
    assert set(config.identity()) - {"task", *VAE_ONLY} == set(RunConfig().identity())
    defaults = TASK_DEFAULTS["bernoulli_vae"]
    assert (config.estimator, config.lr, config.batch_size) == ("disarm", 1e-4, 50)
    assert (config.beta1, config.beta2) == (defaults["beta1"], defaults["beta2"])
    assert vae(vae_arch="nonlinear").run_id != config.run_id
    assert {n: s * 5 // 6 for n, (s, _) in DATASET_SIZES.items()} == VAE_TRAIN_SIZES


@pytest.mark.parametrize(
    ("fields", "message"),
    [
        ({"estimator": "hardtanh"}, "'hardtanh' cannot train task 'bernoulli_vae': it does not"),
        ({"estimator": "binarynet_stochastic"}, "samples from the hard sigmoid"),
        ({"code_channels": 8}, "code_channels is not used by task 'bernoulli_vae'"),
        ({"train_subset": 5001}, "exceeds the 5000 training images of mnist-mini"),
        ({"vae_latents": 0}, "vae_latents must be in [1, 4096]"),
        ({"task": "vae"}, "task must be one of 'autoencoder', 'bernoulli_vae'"),
    ],
)
def test_bad_vae_configs_are_one_line_errors(fields, message):
    with pytest.raises(ConfigError) as info:
        vae(**fields)
    assert message in str(info.value) and "\n" not in str(info.value)


def test_the_article_refuses_the_unbiased_family_and_vae_fields():
    with pytest.raises(ConfigError, match="'disarm' is unbiased"):
        RunConfig(estimator="disarm")
    with pytest.raises(ConfigError, match="vae_latents is not used by task 'autoencoder'"):
        RunConfig(vae_latents=10)


def test_data_split_mean_and_dynamic_binarisation():
    config = vae()
    data = TASK.prepare_data(config, torch.device("cpu"))
    assert (len(data.train), len(data.valid), len(data.test)) == (150, 1000, 40)
    mean = data.train.images.reshape(150, -1).double().mean(0) / 255
    assert torch.allclose(data.pixel_mean, mean)
    # The batch of a step depends on the seed and the step only, never on the estimator.
    states = [RunState(vae(estimator=e), torch.device("cpu"), TASK) for e in ("arm", "gumbel")]
    index = torch.arange(50)
    assert states[1].model.estimator.paired_noise  # gumbel samples the others' bits here
    first, second = (TASK.batch(s, data.train.images, index) for s in states)
    assert torch.equal(first, second) and set(first.unique().tolist()) <= {0.0, 1.0}
    states[0].step = 1
    assert not torch.equal(TASK.batch(states[0], data.train.images, index), first)
    # Each pixel is on with its intensity / 255.
    images = torch.full((20000, 1, 28, 28), 51, dtype=torch.uint8)
    on = binarize(images, torch.Generator().manual_seed(0)).mean()
    assert abs(float(on) - 0.2) < 0.003


def test_model_shapes_initialisation_and_bounds():
    mean = torch.linspace(0.0, 1.0, 784, dtype=torch.float64)
    torch.manual_seed(0)
    model = BernoulliVAE("linear", 200, "disarm", mean)
    assert sum(p.numel() for p in model.parameters()) == 784 * 200 + 200 + 200 * 784 + 784 + 200
    assert torch.equal(model.decoder[-1].bias, bias_from_mean(mean))
    assert float(model.decoder[-1].bias[0].detach()) == pytest.approx(
        math.log(0.001 / 0.999), rel=1e-6
    )
    deep = BernoulliVAE("nonlinear", 16, "disarm")
    assert [m.out_features for m in deep.encoder if hasattr(m, "out_features")] == [200, 200, 16]
    x = (torch.rand(6, 784, generator=torch.Generator().manual_seed(1)) < 0.3).float()
    logits = model.logits(x)
    b = (torch.rand(5, 6, 200, generator=torch.Generator().manual_seed(2)) < 0.5).float()
    log_w = -model.neg_elbo(x, b, logits).double()
    bound = -(torch.logsumexp(log_w, 0) - math.log(5))
    assert torch.all(bound <= -log_w.mean(0) + 1e-9)  # Jensen: the K-sample bound is tighter


def outputs(folder: Path) -> tuple:
    summary = strip_timing(read_json(folder / st.SUMMARY))
    summary.pop("files")
    summary.pop("run_id")
    metrics = [strip_timing(r) for r in read_jsonl(folder / st.METRICS)]
    return summary, metrics, (folder / st.STEPS).read_text()


def test_training_records_the_metrics_and_a_stack_equals_separate_runs(tmp_path):
    specs = ("disarm", "gumbel")
    alone = [train_run(vae(estimator=e), tmp_path / "alone", progress=False) for e in specs]
    assert all(s["status"] == "completed" for s in alone)
    together = train_runs([vae(estimator=e) for e in specs], tmp_path / "stack", progress=False)
    for spec, summary in zip(specs, together, strict=True):
        run_id = vae(estimator=spec).run_id
        assert summary["status"] == "completed"
        first = outputs(st.run_dir(tmp_path / "alone", run_id))
        assert first == outputs(st.run_dir(tmp_path / "stack", run_id))
    summary, metrics, _ = first
    assert [r["epoch"] for r in metrics] == [1, 2]
    for key in ("train_loss", "train_neg_elbo", "test_iwae_bound", "grad_var"):
        assert all(math.isfinite(r[key]) and r[key] > 0 for r in metrics), key
    assert summary["evaluations"] == 1 and metrics[0]["evaluations"] == 1  # gumbel: one sample
    assert outputs(st.run_dir(tmp_path / "alone", vae().run_id))[0]["evaluations"] == 2


def test_a_resumed_run_continues_bit_for_bit(tmp_path):
    config, cpu = vae(estimator="reinforce_loo"), torch.device("cpu")
    data = TASK.prepare_data(config, cpu)
    index = torch.randperm(150, generator=torch.Generator().manual_seed(0))

    def train(state: RunState, steps: range) -> list[float]:
        step = TASK.step(state)
        losses = []
        for n in steps:
            x = TASK.batch(state, data.train.images, index[n * 50 : n * 50 + 50])
            losses.append(float(step(x)[0]))
            state.step += 1
            # what the engine records of each step (the checkpoint is checked against it)
            state.steps.append({"step": state.step, "epoch": 1, "train_loss": losses[-1]})
        return losses

    straight = RunState(config, cpu, TASK)
    expected = train(straight, range(3))
    first = RunState(config, cpu, TASK)
    losses = train(first, range(1))
    save_checkpoint(tmp_path, first.to_checkpoint(final=False))
    resumed = RunState.from_checkpoint(config, cpu, load_checkpoint(tmp_path, config.run_id), TASK)
    resumed.step = first.step
    assert losses + train(resumed, range(1, 3)) == expected
    assert torch.equal(resumed.extra["grad_sq"], straight.extra["grad_sq"])


@pytest.mark.slow  # three engine runs and the reference loop: ~10 s
def test_bench_alternates_the_reference_loop_and_ours(tmp_path):
    from runners.bench.vae import format_vae_report, run_vae_bench

    result = run_vae_bench(device="cpu", steps=3, rounds=1, stack=2)
    assert set(result["loops"]) == {"reference loop", "ours (1 run)", "ours (stack of 2)"}
    assert all(row["steps_per_s"] > 0 for row in result["loops"].values())
    assert result["loops"]["reference loop"]["vs_reference"] == 1.0
    assert "steps/s" in format_vae_report(result)


def test_cli_trains_the_vae_and_refuses_a_threshold(tmp_path, capsys):
    from runners.cli import main

    args = ["train", "--task", "bernoulli_vae", "--estimator", "arm", "--dataset", "mnist-mini"]
    args += ["--train-subset", "100", "--test-subset", "20", "--epochs", "1"]
    args += ["--vae-eval-samples", "2", "--vae-train-eval", "20", "--quiet", "--out", str(tmp_path)]
    assert main(args) == 0
    out = capsys.readouterr().out
    assert "test bound:" in out and "evaluations:    2 per example" in out
    assert main(["train", "--task", "bernoulli_vae", "--estimator", "sigmoid"]) == 2
    assert "'sigmoid' cannot train task 'bernoulli_vae'" in capsys.readouterr().err


def test_shipped_vae_specs():
    from runners.grids.spec import load_spec

    root = Path(__file__).resolve().parents[1] / "ablations"
    cpu, full = load_spec(root / "vae_cpu.yaml"), load_spec(root / "vae_disarm.yaml")
    needed = {"disarm", "arm", "reinforce_loo", "bernoulli", "gumbel", "reinmax"}
    for spec in (cpu, full):
        assert needed <= {c.config.estimator for c in spec.cells}
        assert {c.config.task for c in spec.cells} == {"bernoulli_vae"}
    assert {c.config.epochs for c in full.cells} == {1000}  # 1M steps of 1000 a epoch
    assert {c.config.vae_arch for c in full.cells} == {"linear", "nonlinear"}
    assert len({c.config.seed for c in full.cells}) == 5
