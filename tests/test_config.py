"""RunConfig: the article's defaults, validation with one-line errors, run ids, overrides."""

from __future__ import annotations

import dataclasses
import json
import re

import pytest

from runners.config import ConfigError, RunConfig, apply_overrides, validate_dict
from runners.store.format import slug


def test_defaults_are_the_article_recipe():
    cfg = RunConfig()
    assert (cfg.estimator, cfg.lr, cfg.beta1, cfg.beta2) == ("hardtanh", 1e-3, 0.5, 0.999)
    assert (cfg.batch_size, cfg.epochs, cfg.code_channels) == (64, 5, 512)
    assert cfg.pre_threshold_relu is True and cfg.precision == "fp32"
    assert cfg.dataset == "mnist" and cfg.train_subset is None


def test_fields_match_the_architecture_contract():
    assert RunConfig.field_names() == (
        "estimator", "seed", "dataset", "train_subset", "test_subset", "epochs", "batch_size",
        "lr", "beta1", "beta2", "code_channels", "pre_threshold_relu", "precision", "probe",
        "determinism", "task", "vae_arch", "vae_latents", "vae_eval_samples", "vae_prior_lr",
        "vae_train_eval",
        "device", "data_root", "stack", "compile", "cuda_graph", "num_threads",
        "diagnostics", "diagnostics_probe", "gradient_error", "gradient_error_probe",
        "keep_checkpoint",
    )  # fmt: skip
    assert set(RunConfig(determinism="machine").identity()) == set(RunConfig.IDENTITY_FIELDS)
    assert set(RunConfig().identity()) == {*RunConfig.IDENTITY_FIELDS, "determinism"}
    execution = {"device", "data_root", "stack", "compile", "cuda_graph", "num_threads"}
    execution |= {"diagnostics", "diagnostics_probe", "keep_checkpoint"}
    execution |= {"gradient_error", "gradient_error_probe"}
    assert not execution & set(RunConfig.IDENTITY_FIELDS)


def test_gradient_error_settings_are_validated():
    assert RunConfig(task="bernoulli_vae", gradient_error="checkpoints").gradient_error_probe == 16
    with pytest.raises(ConfigError, match="gradient_error must be one of"):
        RunConfig(gradient_error="epoch")
    with pytest.raises(ConfigError, match=r"gradient_error_probe must be in \[1, 10000\]"):
        RunConfig(gradient_error_probe=0)
    with pytest.raises(ConfigError, match="needs code_channels at most 16"):
        RunConfig(gradient_error="checkpoints")  # the article's 512-bit code
    assert RunConfig(gradient_error="checkpoints", code_channels=16).code_channels == 16


def test_diagnostics_settings_are_validated():
    assert RunConfig(diagnostics="off", diagnostics_probe=3).diagnostics_probe == 3
    with pytest.raises(ConfigError, match="diagnostics must be one of"):
        RunConfig(diagnostics="always")
    with pytest.raises(ConfigError, match=r"diagnostics_probe must be in \[1, 10000\]"):
        RunConfig(diagnostics_probe=0)


def test_config_is_frozen_and_revalidated_on_replace():
    cfg = RunConfig()
    with pytest.raises(dataclasses.FrozenInstanceError):
        cfg.seed = 3  # type: ignore[misc]
    with pytest.raises(ConfigError):
        cfg.replace(epochs=0)
    assert cfg.replace(seed=4).seed == 4


def test_run_id_format_and_canonical_estimator():
    cfg = RunConfig(estimator="sigmoid(beta=4.0)", seed=3)
    assert cfg.estimator == "sigmoid(beta=4)"
    assert re.fullmatch(r"sigmoid-beta-4-s3-[0-9a-f]{10}", cfg.run_id)
    same = RunConfig.from_dict({"estimator": {"name": "sigmoid", "beta": 4}, "seed": 3})
    assert same.run_id == cfg.run_id
    assert RunConfig(estimator="sigmoid(beta=1)").estimator == "sigmoid"  # default dropped


def test_run_id_depends_on_identity_fields_only():
    base = RunConfig()
    assert base.replace(device="cpu", num_threads=2, stack=3, data_root="/x").run_id == base.run_id
    assert base.replace(keep_checkpoint="none").run_id == base.run_id
    ids = {base.replace(**{k: v}).run_id for k, v in [
        ("seed", 1), ("lr", 2e-3), ("epochs", 2), ("pre_threshold_relu", False),
        ("train_subset", 100), ("precision", "bf16"), ("probe", "knn"), ("code_channels", 64),
    ]}  # fmt: skip
    assert len(ids) == 8 and base.run_id not in ids


def test_int_lr_and_float_lr_give_one_id():
    assert RunConfig(lr=1).run_id == RunConfig(lr=1.0).run_id
    assert isinstance(RunConfig(lr=1).lr, float)


def test_unknown_key_suggests_close_matches():
    with pytest.raises(ConfigError, match=r"unknown config key 'lrr' \(did you mean 'lr'\?\)"):
        RunConfig.from_dict({"lrr": 0.1})
    with pytest.raises(ConfigError, match="'train_subset'"):
        RunConfig.from_dict({"train_subst": 10})


@pytest.mark.parametrize(
    ("data", "message"),
    [
        ({"epochs": 0}, r"epochs must be in \[1, 10000\], got 0"),
        ({"epochs": 2.5}, "epochs must be an integer"),
        ({"seed": True}, "seed must be an integer"),
        ({"seed": -1}, r"seed must be in \[0, 4294967295\]"),
        ({"batch_size": 1}, r"batch_size must be in \[2, 65536\]"),
        ({"lr": 0}, r"lr must be in \(0, 1e\+30\]"),
        ({"lr": float("inf")}, "lr must be in"),
        ({"lr": "0.1"}, "lr must be a number"),
        ({"beta1": 1.0}, r"beta1 must be in \[0, 1\)"),
        ({"pre_threshold_relu": 1}, "pre_threshold_relu must be true or false"),
        ({"dataset": "cifar"}, "dataset must be one of 'mnist', 'mnist-mini'"),
        ({"precision": "fp16"}, "precision must be one of"),
        ({"probe": "svm"}, "probe must be one of"),
        ({"device": "gpu"}, "device must be 'auto'"),
        ({"train_subset": 60001}, "train_subset 60001 exceeds the 60000 images of mnist"),
        ({"dataset": "mnist-mini", "test_subset": 1001}, "exceeds the 1000 images of mnist-mini"),
        ({"estimator": "sigmod"}, "estimator: .*sigmoid"),
        ({"estimator": "sigmoid(beta=-1)"}, "estimator: .*beta"),
        ({"estimator": 3}, "estimator: "),
        ({"data_root": 5}, "data_root must be a path"),
    ],
)
def test_bad_values_raise_one_line(data, message):
    with pytest.raises(ConfigError, match=message) as info:
        RunConfig.from_dict(data)
    assert "\n" not in str(info.value)
    assert isinstance(info.value, ValueError)


def test_every_problem_is_reported_at_once():
    errors = validate_dict({"epochs": 0, "lrr": 1, "probe": "x"})
    assert len(errors) == 3
    with pytest.raises(ConfigError, match="epochs.*; .*probe|unknown.*; .*epochs"):
        RunConfig.from_dict({"epochs": 0, "lrr": 1, "probe": "x"})


def test_to_dict_round_trips_through_json():
    cfg = RunConfig(estimator="sigmoid(beta=4)", seed=2, train_subset=100, data_root="/d")
    again = RunConfig.from_dict(json.loads(json.dumps(cfg.to_dict())))
    assert again == cfg and again.run_id == cfg.run_id


def test_apply_overrides_skips_none_and_reads_dashes():
    cfg = apply_overrides(RunConfig(seed=5), {"seed": None, "train-subset": 100, "epochs": 2})
    assert (cfg.seed, cfg.train_subset, cfg.epochs) == (5, 100, 2)
    assert apply_overrides(None, {"lr": 0.01}).lr == 0.01
    with pytest.raises(ConfigError, match="unknown config key 'epoch'"):
        apply_overrides(None, {"epoch": 2})


def test_slug():
    assert slug("sigmoid(beta=0.5)") == "sigmoid-beta-0-5"
    assert slug("Gumbel(tau=1, hard=True)") == "gumbel-tau-1-hard-true"
