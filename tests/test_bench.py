"""`ste-ablate bench`: the faithful article loop, FLOP count, report and JSON (no timing asserts)."""

from __future__ import annotations

import importlib.util
import json
import os
from pathlib import Path

import pytest
import torch
from torch import nn

from runners.bench.loaded import measure_loaded
from runners.bench.main import article_module, bench_data, run_bench
from runners.bench.measure import conv_macs, flops_per_image
from runners.bench.ours import OursLoop
from runners.bench.report import format_report
from runners.cli import main
from runners.config import RunConfig
from runners.engine.train import train_runs
from runners.errors import UserError
from runners.store import format as st
from runners.store.format import read_jsonl
from runners.training.data import MNIST_FILES, normalize, prepare_data
from runners.training.model import ARTICLE_PARAMETERS, BinaryAutoencoder


@pytest.fixture(autouse=True)
def mini_only(tmp_path, monkeypatch):
    """Bench the bundled mnist-mini (full MNIST may be configured on CI), one thread."""
    monkeypatch.setenv("STE_DATA_ROOT", str(tmp_path / "no-mnist-here"))
    threads = torch.get_num_threads()
    yield
    torch.set_num_threads(threads)


def test_flops_per_image_is_0_184_gflop():
    # 30,711,808 multiply-accumulates forward; x2 FLOP; x3 for forward + backward.
    assert conv_macs(BinaryAutoencoder()) == 30_711_808
    assert flops_per_image() == 184_270_848
    assert conv_macs(nn.Sequential(nn.Conv2d(2, 3, 3, padding=1)), (1, 2, 5, 5)) == 25 * 3 * 2 * 9


def test_the_article_loop_is_the_articles_model_and_data():
    article, where = article_module()
    assert article is not None, where
    net = article.Autoencoder()
    ours = BinaryAutoencoder()
    assert sum(p.numel() for p in net.parameters()) == ARTICLE_PARAMETERS
    assert net.state_dict().keys() == ours.state_dict().keys()
    x = torch.rand(3, 1, 28, 28) * 2 - 1
    assert set(net(x, encode=True).unique().tolist()) <= {0.0, 1.0}
    with bench_data(None) as (dataset, root):
        assert dataset == "mnist-mini"
        loop = article.ArticleLoop("cpu", root)
        images = loop.trainloader.dataset.data
        assert images.shape == (6000, 28, 28)
        # The article's ToTensor + Normalize equals our device-side arithmetic, bit for bit.
        X, _ = loop.trainloader.dataset[7]
        assert torch.equal(X, normalize(images[7:8]))
        seconds = loop.steps(2)
        assert seconds > 0 and loop.images == 128 and loop.last_loss == loop.last_loss


def test_the_benchmark_dataset_is_chosen_as_asked(tmp_path, capsys):
    full = tmp_path / "full"
    (full / "MNIST" / "raw").mkdir(parents=True)
    for name in MNIST_FILES:  # present is enough to choose; contents are checked when loading
        (full / "MNIST" / "raw" / name).write_bytes(b"")
    with bench_data(str(full)) as (dataset, root):
        assert (dataset, root) == ("mnist", str(full))
    with bench_data(str(full), "mnist-mini") as (dataset, root):
        assert dataset == "mnist-mini" and root != str(full)
        assert (Path(root) / "MNIST" / "raw" / "train-images-idx3-ubyte").stat().st_size > 0
    with pytest.raises(UserError, match="full MNIST"):
        with bench_data(str(tmp_path / "empty"), "mnist"):
            pass
    with pytest.raises(UserError, match="choose one of"):
        with bench_data(None, "cifar"):
            pass
    with pytest.raises(SystemExit) as exit_:
        main(["bench", "--dataset", "cifar"])
    assert exit_.value.code == 2 and "invalid choice" in capsys.readouterr().err


@pytest.mark.slow  # a benchmark smoke test: CI runs it (make test-slow)
def test_bench_prints_json_with_every_loop(capsys):
    assert main(["bench", "--steps", "1", "--rounds", "2", "--threads", "1", "--json"]) == 0
    result = json.loads(capsys.readouterr().out)
    assert result["dataset"] == "mnist-mini" and result["train_images"] == 6000
    tuned = {"article, malloc tuned", "ours, malloc tuned"}
    assert set(result["loops"]) == {"article", "ours, plain layers", "ours"} | tuned
    article, ours = result["loops"]["article"], result["loops"]["ours"]
    assert article["vs_article"] == 1.0 and len(ours["rounds"]) == 2
    assert ours["vs_article"] == pytest.approx(ours["images_per_s"] / article["images_per_s"])
    assert result["ceiling_gflops"] > 0 and result["gflop_per_image"] == pytest.approx(0.1843, 1e-3)
    assert (
        0
        < ours["share_of_ceiling"]
        == pytest.approx(ours["images_per_s"] / result["ceiling_images_per_s"])
    )
    loaded = result["loaded"]
    assert loaded["competitor_threads"] == 1 and len(loaded["rounds"]) == 2
    assert loaded["kept"] == pytest.approx(loaded["images_per_s"] / loaded["quiet_images_per_s"])
    row = result["loops"]["ours, malloc tuned"]
    assert row["vs_article"] == pytest.approx(row["images_per_s"] / article["images_per_s"])
    diag = result["diagnostics"]
    assert diag["probe"] == 16 and diag["seconds"] > 0
    assert diag["share"] == pytest.approx(diag["seconds"] / diag["epoch_seconds"])
    text = format_report(result)
    assert "vs article" in text and "ours, plain layers" in text and "load average" in text
    assert "diagnostics: " in text and "of training" in text
    assert "ours, loaded" in text and "of " in text and "quiet" in text


@pytest.mark.slow
def test_without_the_checkout_the_article_loop_is_reported_unavailable(tmp_path):
    result = run_bench(
        device="cpu", steps=1, rounds=1, warmup=0, threads=1, ceiling_s=0.1,
        article_path=str(tmp_path / "article_loop.py"), log=lambda text: None, loaded=False,
        diagnostics=False,
    )  # fmt: skip
    assert "diagnostics" not in result and "loaded" not in result
    assert result["article_loop"].startswith("unavailable")
    assert "article" not in result["loops"] and result["loops"]["ours"]["vs_article"] is None
    assert "n/a" in format_report(result)


@pytest.mark.slow  # a benchmark smoke test: CI runs it (make test-slow)
def test_grid_mode_trains_for_real_or_extrapolates(tmp_path):
    common = dict(
        device="cpu", steps=1, rounds=1, warmup=0, threads=1, ceiling_s=0.1,
        grid=(2, 1), stack=2, subsets=(128, 64), log=lambda text: None, loaded=False,
        diagnostics=False,
    )  # fmt: skip
    real = run_bench(budget_s=1e9, **common)["grid"]
    assert real["ours_how"].startswith("measured") and real["stack"] == 2
    assert real["speedup"] == pytest.approx(real["article_s"] / real["ours_s"])
    guessed = run_bench(budget_s=0, **common)["grid"]
    assert guessed["ours_how"].startswith("extrapolated")
    assert guessed["ours_s"] == pytest.approx(guessed["ours_estimate_s"])
    assert "extrapolated" in format_report({**_dummy(), "grid": guessed})


def _dummy() -> dict:
    return {
        "device": "cpu", "device_name": "x", "threads": 1, "torch": "t", "load_average": None,
        "dataset": "mnist-mini", "train_images": 1, "precision": "fp32", "rounds": 1,
        "steps_per_round": 1, "ceiling_gflops": 1.0, "ceiling_images_per_s": 1.0,
        "gflop_per_image": 0.184, "article_loop": "x", "loops": {},
    }  # fmt: skip


@pytest.mark.parametrize(
    ("argv", "message"),
    [
        (["--steps", "0"], "--steps must be >= 1"),
        (["--grid", "2", "x"], "--grid E_EPOCHS must be an integer"),
        (["--precision", "fp16"], "--precision must be fp32 or bf16"),
    ],
)
def test_bad_input_is_one_line(argv, message, capsys):
    assert main(["bench", *argv]) == 2
    err = capsys.readouterr().err.strip()
    assert err == f"ste-ablate: error: {message}, got {argv[-1]!r}".replace(", got '0'", ", got 0")


@pytest.mark.slow  # a benchmark smoke test: CI runs it (make test-slow)
def test_fresh_process_benchmark_runs_each_loop_in_its_own_process(capsys):
    module = _benchmark_script("fresh_processes")
    argv = ["--steps", "2", "--warmup", "0", "--rounds", "2", "--threads", "1", "--json"]
    assert module.main(argv) == 0
    result = json.loads(capsys.readouterr().out)
    assert result["dataset"] == "mnist-mini" and result["threads"] == 1
    assert [r["loop"] for r in result["rows"]] == ["article", "ours", "ours", "article"]
    medians = result["median_images_per_s"]
    assert result["ratio"] == pytest.approx(medians["ours"] / medians["article"])


@pytest.mark.slow  # a benchmark smoke test: CI runs it (make test-slow)
def test_prepared_gpu_check_runs_end_to_end_on_the_cpu(tmp_path, capsys):
    # benchmarks/gpu_check.py is the one script run on a GPU machine; --quick on the CPU keeps
    # it working where no GPU is.
    module = _benchmark_script("gpu_check")
    threads = torch.get_num_threads()
    try:
        assert module.main(["--device", "cpu", "--quick", "--out", str(tmp_path)]) == 0
    finally:
        torch.set_num_threads(threads)  # --quick benches with one thread, process-wide
    names = {p.name for p in tmp_path.iterdir()}
    assert {"environment.json", "bench.json", "grid.json", "stack_check.json"} <= names
    assert "errors.txt" not in names
    check = json.loads((tmp_path / "stack_check.json").read_text())
    assert check["status_stacked"] == ["completed"] * 3
    assert check["first_step_loss_max_rel_diff"] < 1e-5
    grid = json.loads((tmp_path / "grid.json").read_text())["grid"]
    assert grid["stack"] == 4 and grid["speedup"] > 0


def _benchmark_script(name: str):
    """benchmarks/NAME.py of this checkout, imported by path (it is not part of the package)."""
    path = Path(__file__).resolve().parent.parent / "benchmarks" / f"{name}.py"
    spec = importlib.util.spec_from_file_location(name, path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


@pytest.mark.slow
def test_the_loaded_row_trains_beside_a_competitor_and_stops_it(monkeypatch):
    torch.set_num_threads(1)
    monkeypatch.setenv("OMP_WAIT_POLICY", "PASSIVE")
    device = torch.device("cpu")
    data = prepare_data("mnist-mini", None, None, device, None)
    loop = OursLoop(RunConfig(dataset="mnist-mini", device="cpu"), data, device)
    children = set(child_pids())
    row = measure_loaded(loop, steps=1, rounds=2, threads=1)
    assert loop.images == 4 * 64  # two quiet rounds, two loaded ones
    assert row["kept"] == pytest.approx(row["images_per_s"] / row["quiet_images_per_s"])
    assert row["wait_policy"] == "PASSIVE" and row["competitor_threads"] == 1
    assert set(child_pids()) == children  # the competitor was stopped


def child_pids() -> list[int]:
    """Ids of this process's live children (from /proc)."""
    me = str(os.getpid())
    found = []
    for entry in Path("/proc").iterdir():
        try:
            fields = (entry / "stat").read_text().rsplit(")", 1)[1].split()
        except (OSError, IndexError):
            continue
        if fields[1] == me and fields[0] != "Z":
            found.append(int(entry.name))
    return found


# Diagnostics off: the benchmark's loop has none, and they never change training (a slow test of
# test_diagnostics_training shows it); at this size they cost more than the training.
AUTOENCODER = {
    "dataset": "mnist-mini", "train_subset": 256, "test_subset": 64, "epochs": 2,
    "diagnostics": "off",
}  # fmt: skip
VAE = {
    "task": "bernoulli_vae", "estimator": "disarm", "dataset": "mnist-mini", "train_subset": 100,
    "test_subset": 10, "epochs": 3, "vae_eval_samples": 1, "vae_train_eval": 10,
}  # fmt: skip


@pytest.mark.parametrize(
    ("fields", "seeds", "steps"),
    [
        pytest.param(AUTOENCODER, [0], 6, id="autoencoder"),
        pytest.param(AUTOENCODER, [0, 1], 5, id="autoencoder stack", marks=pytest.mark.slow),
        pytest.param(VAE, [0, 1], 5, id="vae stack", marks=pytest.mark.slow),
    ],
)
def test_ours_trains_what_train_runs_trains(tmp_path, fields, seeds, steps):
    """The benchmark's loop gives the engine's step losses, to the bit, across an epoch's end
    (the engine evaluates there; the loop goes straight on)."""
    configs = [RunConfig(**fields, seed=seed, device="cpu", num_threads=1) for seed in seeds]
    loop = OursLoop(configs, None, torch.device("cpu"))
    seconds = loop.steps(2) + loop.steps(steps - 2)  # chunks, as the bench alternates them
    assert seconds > 0 and [len(run.state.steps) for run in loop.runs] == [steps] * len(seeds)
    train_runs(configs, tmp_path, progress=False, raise_errors=True)
    for config, run in zip(configs, loop.runs, strict=True):  # same order (sorted seeds)
        recorded = read_jsonl(st.run_dir(tmp_path, config.run_id) / st.STEPS)
        assert len(recorded) > steps  # the loop crossed an epoch's end
        assert run.state.steps == recorded[:steps]
