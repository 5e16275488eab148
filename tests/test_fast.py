"""The fast path: runners.training.kernels (matmul layers, fused Adam) and the step strategies of
runners.speed.strategies (torch.compile, CUDA graphs, each with an eager fallback)."""

from __future__ import annotations

import argparse
import copy
import shutil
import sys
import warnings

import pytest
import torch
from torch import nn

from runners.commands import train as train_cmd
from runners.engine.train import train_run
from runners.speed.strategies import (
    graph_capturable,
    model_step,
    restore_training,
    snapshot_training,
)
from runners.store.format import read_jsonl, run_dir
from runners.training.kernels import (
    FastConv2d,
    FastConvTranspose2d,
    adam,
    defer_malloc_tuning,
    prepare_model,
    tune_cpu_malloc,
    use_point_matmuls,
)
from runners.training.model import BinaryAutoencoder
from runners.training.state import load_optimizer_state
from ste_variants import get_estimator

pytestmark = pytest.mark.usefixtures("one_thread")


def _same_layer(plain: nn.Module, point_type: type[nn.Module]) -> nn.Module:
    point = copy.deepcopy(plain)
    point.__class__ = point_type  # same parameters; only forward differs
    return point


@pytest.mark.parametrize(
    ("layer", "shape"),
    [
        (nn.Conv2d(6, 4, 4, stride=2, padding=1), (3, 6, 3, 3)),  # the encoder's last layer
        (nn.Conv2d(6, 4, 4, stride=2, padding=1, groups=2), (3, 6, 3, 3)),  # stacked
        (nn.Conv2d(6, 4, 3, stride=1, padding=0, bias=False), (2, 6, 3, 3)),
        (nn.Conv2d(6, 4, 4, stride=2, padding=1), (2, 6, 7, 7)),  # 3x3 output: plain conv
        (nn.Conv2d(1, 4, 4, stride=2, padding=1), (2, 1, 8, 8)),  # the first layer: unfold
        (nn.Conv2d(2, 6, 4, stride=2, padding=1, groups=2), (2, 2, 9, 9)),
    ],
)
def test_point_conv_equals_conv(layer, shape):
    _assert_same_outputs_and_gradients(layer, FastConv2d, shape)


@pytest.mark.parametrize(
    ("layer", "shape"),
    [
        (nn.ConvTranspose2d(6, 4, 5, stride=2, padding=1), (3, 6, 1, 1)),  # the decoder's first
        (nn.ConvTranspose2d(6, 4, 5, stride=2, padding=1, groups=2), (3, 6, 1, 1)),
        (nn.ConvTranspose2d(6, 4, 3, stride=1, padding=0, bias=False), (2, 6, 1, 1)),
        (nn.ConvTranspose2d(6, 4, 5, stride=2, padding=1), (2, 6, 3, 3)),  # plain path
        (nn.ConvTranspose2d(6, 1, 4, stride=2, padding=1), (2, 6, 7, 7)),  # the last layer: fold
        (nn.ConvTranspose2d(6, 2, 4, stride=2, padding=1, groups=2), (2, 6, 5, 5)),
    ],
)
def test_point_conv_transpose_equals_conv_transpose(layer, shape):
    _assert_same_outputs_and_gradients(layer, FastConvTranspose2d, shape)


def _assert_same_outputs_and_gradients(layer, point_type, shape):
    """In float64 the point layer's output and input/weight gradients equal the plain layer's."""
    layer = layer.double()
    point = _same_layer(layer, point_type)
    x = torch.randn(shape, dtype=torch.float64, requires_grad=True)
    x2 = x.detach().clone().requires_grad_(True)
    y, y2 = layer(x), point(x2)
    torch.testing.assert_close(y2, y, rtol=1e-12, atol=1e-12)
    g = torch.randn_like(y)
    y.backward(g)
    y2.backward(g)
    torch.testing.assert_close(x2.grad, x.grad, rtol=1e-12, atol=1e-12)
    torch.testing.assert_close(point.weight.grad, layer.weight.grad, rtol=1e-12, atol=1e-12)


def test_prepare_model_keeps_weights_names_and_outputs():
    torch.manual_seed(0)
    model = BinaryAutoencoder().double()
    reference = copy.deepcopy(model)
    params_before = [id(p) for p in model.parameters()]
    prepare_model(model, "cpu")
    swapped = [type(m) for m in model.modules() if isinstance(m, FastConv2d | FastConvTranspose2d)]
    assert len(swapped) == 8  # all four convolutions and all four transposed ones
    assert [id(p) for p in model.parameters()] == params_before  # an optimiser keeps working
    assert model.state_dict().keys() == reference.state_dict().keys()
    assert use_point_matmuls(model) == 0  # idempotent
    x = torch.rand(4, 1, 28, 28, dtype=torch.float64) * 2 - 1
    torch.testing.assert_close(model(x), reference(x), rtol=1e-10, atol=1e-10)
    model(x).square().mean().backward()
    reference(x).square().mean().backward()
    for (name, p), q in zip(model.named_parameters(), reference.parameters(), strict=True):
        torch.testing.assert_close(p.grad, q.grad, rtol=1e-8, atol=1e-12, msg=name)


def test_fused_adam_matches_adam():
    torch.manual_seed(0)
    a = torch.randn(50, dtype=torch.float64, requires_grad=True)
    b = a.detach().clone().requires_grad_(True)
    fused = adam([a], 1e-3, (0.5, 0.999), "cpu")
    plain = torch.optim.Adam([b], lr=1e-3, betas=(0.5, 0.999))
    for _ in range(5):
        g = torch.randn(50, dtype=torch.float64)
        a.grad, b.grad = g.clone(), g.clone()
        fused.step()
        plain.step()
    torch.testing.assert_close(a, b, rtol=1e-12, atol=1e-14)


def _tiny_step(**kwargs):
    torch.manual_seed(0)
    model = nn.Sequential(nn.Conv2d(1, 4, 3, padding=1), nn.BatchNorm2d(4), nn.Tanh())
    optimizer = torch.optim.Adam(model.parameters(), lr=1e-2)

    def loss(recon, x):
        return (recon - x).square().mean(dim=(0, 2, 3))

    options = {"compile": False, "cuda_graph": False, **kwargs}
    step = model_step(model, optimizer, device=torch.device("cpu"), precision="fp32",
                      estimators=[], loss=loss, **options)  # fmt: skip
    return model, step


def test_cuda_graph_on_cpu_falls_back_to_eager():
    x = torch.rand(8, 1, 6, 6)
    eager_model, eager = _tiny_step()
    with pytest.warns(RuntimeWarning, match="CUDA graphs unavailable"):
        graph_model, graphed = _tiny_step(cuda_graph=True)
    for _ in range(3):
        torch.testing.assert_close(graphed(x)[0], eager(x)[0], rtol=0, atol=0)
    for p, q in zip(graph_model.parameters(), eager_model.parameters(), strict=True):
        assert torch.equal(p, q)


def test_a_failing_compile_falls_back_without_a_trace(monkeypatch):
    x = torch.rand(8, 1, 6, 6)
    eager_model, eager = _tiny_step()
    calls = []

    def compile_broken(model):  # stands in for a compiler that fails at its first real call
        def broken(inp):
            calls.append(1)
            model[1](model[0](inp))  # BatchNorm statistics move before the failure...
            raise RuntimeError("no compiler")

        return broken

    monkeypatch.setattr(torch, "compile", compile_broken)
    model, step = _tiny_step(compile=True)
    assert not step.verified
    with pytest.warns(RuntimeWarning, match="torch.compile unavailable"):
        out = step(x)
    torch.testing.assert_close(out[0], eager(x)[0], rtol=0, atol=0)  # ...and are restored
    for a, b in zip(model.state_dict().values(), eager_model.state_dict().values(), strict=True):
        assert torch.equal(a, b)
    assert calls == [1] and step.forward is model and step.verified


def test_snapshot_restore_zeroes_state_that_did_not_exist():
    p = torch.nn.Parameter(torch.ones(3))
    optimizer = torch.optim.Adam([p], lr=0.1)
    snapshot = snapshot_training(nn.Module(), optimizer)
    p.grad = torch.ones(3)
    optimizer.step()
    restore_training(nn.Module(), optimizer, snapshot)
    state = optimizer.state[p]
    assert float(state["step"]) == 0 and not state["exp_avg"].any() and p.grad is None


@pytest.mark.slow
def test_compiled_step_matches_eager_on_cpu():
    x = torch.rand(8, 1, 6, 6)
    eager_model, eager = _tiny_step()
    model, compiled = _tiny_step(compile=True)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # a platform without a compiler falls back: also fine
        for _ in range(2):
            torch.testing.assert_close(compiled(x)[0], eager(x)[0], rtol=1e-5, atol=1e-6)


@pytest.mark.gpu
def test_cuda_graph_step_matches_eager_on_gpu():
    if not torch.cuda.is_available():
        pytest.skip("needs CUDA")
    device = torch.device("cuda")

    def build(graph):
        torch.manual_seed(0)
        model = nn.Sequential(nn.Conv2d(1, 4, 3, padding=1), nn.BatchNorm2d(4), nn.Tanh()).to(
            device
        )
        opt = adam(model.parameters(), 1e-2, (0.9, 0.999), device, capturable=True)
        return model_step(model, opt, device=device, precision="fp32", compile=False,
                          cuda_graph=graph, estimators=[])  # fmt: skip

    x = torch.rand(8, 1, 6, 6, device=device)
    eager, graphed = build(False), build(True)
    for _ in range(4):
        torch.testing.assert_close(graphed(x)[0], eager(x)[0], rtol=1e-5, atol=1e-6)
    assert graphed.graph is not None


def test_malloc_tuning_is_deferred_then_applied_once():
    with defer_malloc_tuning():
        assert tune_cpu_malloc() is False  # the bench's first phase: glibc's defaults stay
    applied = tune_cpu_malloc()
    assert applied == sys.platform.startswith("linux")  # glibc here; elsewhere a no-op
    assert tune_cpu_malloc() == applied


@pytest.mark.slow
def test_compile_flag_trains_a_run_like_eager(tmp_path, tiny_config):
    # The real compiler (inductor, the C++ backend here): same first loss as eager to float
    # precision; the run completes with its own store entry. Slow: compiling takes ~a minute.
    config = tiny_config(epochs=1, train_subset=128)
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        summaries = {
            name: train_run(
                config.replace(compile=name == "compiled"), tmp_path / name, progress=False
            )
            for name in ("eager", "compiled")
        }
    if shutil.which("cc"):  # a C compiler is there: inductor must have worked, no fallback
        assert not [w for w in caught if "torch.compile unavailable" in str(w.message)]
    assert {s["status"] for s in summaries.values()} == {"completed"}
    first = {
        name: read_jsonl(run_dir(tmp_path / name, config.run_id) / "steps.jsonl")[0]["train_loss"]
        for name in summaries
    }
    assert first["compiled"] == pytest.approx(first["eager"], rel=1e-5)


def test_resuming_keeps_the_optimizers_own_kernel():
    # A checkpoint written by a plain Adam must not switch a fused Adam back (nor the reverse).
    p = nn.Parameter(torch.ones(4))
    plain = torch.optim.Adam([p], lr=0.1)
    p.grad = torch.ones(4)
    plain.step()
    fused = adam([nn.Parameter(torch.ones(4))], 0.1, (0.9, 0.999), "cpu")
    assert fused.param_groups[0]["fused"] is True
    load_optimizer_state(fused, plain.state_dict())
    assert fused.param_groups[0]["fused"] is True
    assert float(fused.state[fused.param_groups[0]["params"][0]]["step"]) == 1
    load_optimizer_state(plain, fused.state_dict())
    assert not plain.param_groups[0]["fused"]


def test_cuda_graph_flag_on_the_cpu_warns_and_trains_like_eager(tmp_path, tiny_config):
    # The flag's whole path (config -> engine -> model_step) runs here; the capture itself
    # needs CUDA, so it falls back with a warning and the run equals the plain one bit for bit.
    config = tiny_config(epochs=1, train_subset=128)
    plain = train_run(config, tmp_path / "plain", progress=False)
    with pytest.warns(RuntimeWarning, match="CUDA graphs unavailable"):
        graphed = train_run(config.replace(cuda_graph=True), tmp_path / "graph", progress=False)
    assert plain["status"] == graphed["status"] == "completed"
    steps = [(run_dir(tmp_path / s, config.run_id) / "steps.jsonl").read_bytes()
             for s in ("plain", "graph")]  # fmt: skip
    assert steps[0] == steps[1] and plain["test_mse"] == graphed["test_mse"]


def test_speed_switches_reach_the_config_without_changing_the_run_id():
    parser = argparse.ArgumentParser()
    train_cmd.register(parser.add_subparsers())
    args = parser.parse_args(["train", "--compile", "--cuda-graph", "--seed", "3"])
    config = train_cmd.config_from_args(args)
    assert config.compile and config.cuda_graph
    plain = train_cmd.config_from_args(parser.parse_args(["train", "--seed", "3"]))
    assert not plain.compile and not plain.cuda_graph and plain.run_id == config.run_id


def test_only_deterministic_fixed_estimators_may_be_graph_captured():
    assert graph_capturable([get_estimator("hardtanh"), get_estimator("sigmoid(beta=4)")])
    assert not graph_capturable([get_estimator("hardtanh"), get_estimator("bernoulli")])
    assert not graph_capturable([get_estimator("ede")])  # annealed
