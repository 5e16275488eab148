"""`ste-ablate gradcheck --exact`: stochastic estimators against the exact gradient on a run."""

from __future__ import annotations

import json

import pytest
from conftest import TINY

from runners.cli import main
from runners.config import RunConfig
from runners.engine.train import train_run
from runners.store import format as st
from runners.store.format import run_dir

pytestmark = pytest.mark.usefixtures("one_thread")


@pytest.fixture(scope="module")
def vae_run(tmp_path_factory):
    """A tiny Bernoulli VAE run with 5 latents (enumerable), trained with `disarm`."""
    config = RunConfig.from_dict(
        {
            "task": "bernoulli_vae",
            "dataset": "mnist-mini",
            "train_subset": 100,
            "test_subset": 20,
            "epochs": 1,
            "vae_latents": 5,
            "vae_eval_samples": 2,
            "vae_train_eval": 20,
            "device": "cpu",
            "num_threads": 1,
        }
    )
    store = tmp_path_factory.mktemp("vae")
    assert train_run(config, store, progress=False, raise_errors=True)["status"] == "completed"
    return run_dir(store, config.run_id)


def test_gradcheck_on_a_vae_run_measures_against_the_exact_gradient(vae_run, capsys):
    args = ["gradcheck", str(vae_run), "--probe", "4", "--estimates", "64", "--layer", "logits"]
    assert main([*args, "--estimators", "disarm,reinforce_loo,bernoulli,gumbel_rao"]) == 0
    printed = capsys.readouterr().out
    assert "layer logits" in printed and "reference exact (enumeration)" in printed
    doc = json.loads((vae_run / st.GRADCHECK_EXACT).read_text())
    assert doc["task"] == "bernoulli_vae" and doc["latents"] == 5
    rows = {row["estimator"]: row for row in doc["estimators"]}
    assert list(rows) == ["disarm", "reinforce_loo", "bernoulli", "gumbel_rao"]
    assert set(rows["disarm"]["layers"]) == {"logits", "encoder.0", "total"}
    assert rows["bernoulli"]["layers"]["total"]["bias_p"] < 0.01
    assert (vae_run / st.GRADCHECK_EXACT).with_suffix(".png").is_file()
    assert st.verify_summary(vae_run)[1] is None
    # The reference for many latents: --max-bits below the latents.
    assert main([*args, "--estimators", "disarm", "--max-bits", "3", "--json"]) == 0
    doc = json.loads(capsys.readouterr().out)
    assert doc["reference"]["method"] == "local_expectation"
    assert 0 < doc["reference"]["rel_stderr"] < 0.2


@pytest.fixture(scope="module")
def small_code_run(tmp_path_factory):
    """A tiny autoencoder run with a 4-bit code trained with `bernoulli` (enumerable)."""
    config = RunConfig.from_dict(
        {**TINY, "estimator": "bernoulli", "code_channels": 4, "train_subset": 128}
    )
    store = tmp_path_factory.mktemp("small-code")
    assert train_run(config, store, progress=False, raise_errors=True)["status"] == "completed"
    return run_dir(store, config.run_id)


@pytest.mark.slow
def test_gradcheck_exact_on_the_article_model_writes_json_and_figure(
    small_code_run, tmp_path, capsys
):
    out = tmp_path / "exact.json"
    args = ["gradcheck", str(small_code_run), "--exact", "--probe", "2", "--estimates", "32"]
    args += ["--estimators", "bernoulli,disarm", "--out", str(out)]
    assert main(args) == 0
    printed = capsys.readouterr().out
    assert "reference exact (enumeration)" in printed and f"written: {out}" in printed
    doc = json.loads(out.read_text())
    assert doc["latents"] == 4 and doc["probe"] == 2 and doc["reference"]["rel_stderr"] == 0
    rows = {row["estimator"]: row for row in doc["estimators"]}
    assert set(rows) == {"bernoulli", "disarm"}
    assert rows["disarm"]["evaluations"] == 2 and rows["bernoulli"]["evaluations"] == 1
    layers = rows["disarm"]["layers"]
    assert {"logits", "total", "encoder.0"} <= set(layers)
    assert [r["m"] for r in layers["total"]["by_m"]][:3] == [1.0, 2.0, 4.0]
    assert out.with_suffix(".png").stat().st_size > 5000
    # The run itself stays trusted: the file is outside summary.json's hashes.
    assert st.verify_summary(small_code_run)[1] is None


def test_gradcheck_exact_refuses_bad_input_in_one_line(vae_run, tmp_path, capsys):
    assert main(["gradcheck", str(vae_run), "--estimators", "hardtanh"]) == 2
    assert "does not sample" in capsys.readouterr().err
    assert main(["gradcheck", str(vae_run), "--max-bits", "30"]) == 2
    assert "--max-bits must be at most 24" in capsys.readouterr().err
    assert (
        main(["gradcheck", str(vae_run), "--max-bits", "3", "--reference-draws", "10000000"]) == 2
    )
    assert "lower --probe or --reference-draws" in capsys.readouterr().err
    assert main(["gradcheck", str(tmp_path), "--exact"]) == 2
    assert "holds no run" in capsys.readouterr().err
