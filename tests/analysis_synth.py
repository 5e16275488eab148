"""Synthetic run stores for the analysis tests (SYNTHETIC TEST DATA, not results).

Writes the documented run-store files (docs/architecture.md section 3: config.json,
metrics.jsonl, summary.json with sha256s, reconstruction.png, STORE/specs/<name>.json) with values
drawn from a seeded numpy Generator, so that the analysis can be tested before (and
independently of) the training code.
"""

from __future__ import annotations

import hashlib
import json
import zlib
from pathlib import Path
from typing import Any

import numpy as np

from runners.store.format import identity_of
from runners.store.format import run_id_for as format_run_id

CONFIG_DEFAULTS: dict[str, Any] = {
    "estimator": "hardtanh",
    "seed": 0,
    "dataset": "mnist-mini",
    "train_subset": None,
    "test_subset": None,
    "epochs": 3,
    "batch_size": 64,
    "lr": 0.001,
    "beta1": 0.5,
    "beta2": 0.999,
    "code_channels": 16,
    "pre_threshold_relu": True,
    "precision": "fp32",
    "probe": "linear",
    "device": "cpu",
    "data_root": None,
    "stack": 1,
    "compile": False,
    "num_threads": None,
}


def _sha(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def _png(path: Path, rng: np.random.Generator) -> None:
    from PIL import Image

    pixels = (rng.random((56, 140)) * 255).astype(np.uint8)
    Image.fromarray(pixels, mode="L").save(path, format="PNG")


def run_id_for(config: dict[str, Any]) -> str:
    """The run id the store's format gives a config's identity fields (checked on read)."""
    return format_run_id(identity_of(config))


def write_run(
    store: Path,
    run_id: str,
    config: dict[str, Any],
    epochs: list[dict[str, Any]],
    *,
    status: str | None = "completed",
    rng: np.random.Generator,
    n_bits: int = 16,
    error: str | None = None,
) -> Path:
    """Write one run folder; `status=None` leaves out summary.json (an interrupted run)."""
    folder = store / "runs" / run_id
    folder.mkdir(parents=True, exist_ok=True)
    (folder / "config.json").write_text(
        json.dumps({"run_id": run_id, "config": config, "versions": {}, "git_commit": None})
    )
    lines = []
    for record in epochs:
        record = dict(record)
        record.setdefault("bit_rates", [float(r) for r in rng.random(n_bits).round(3)])
        lines.append(json.dumps(record))
    (folder / "metrics.jsonl").write_text("".join(line + "\n" for line in lines))
    steps = [{"step": r.get("step"), "epoch": r["epoch"], "train_loss": 0.1} for r in epochs]
    (folder / "steps.jsonl").write_text("".join(json.dumps(s) + "\n" for s in steps))
    _png(folder / "reconstruction.png", rng)
    if status is None:
        return folder
    last = epochs[-1] if epochs else {}
    summary = {
        "run_id": run_id,
        "status": status,
        "epochs_done": len(epochs),
        "test_mse": last.get("test_mse"),
        "test_psnr": last.get("test_psnr"),
        "bit_entropy": last.get("bit_entropy"),
        "dead_bits": last.get("dead_bits"),
        "probe_accuracy": last.get("probe_accuracy"),
        "wall_time_s": 1.5,
        "images_per_s": 1000.0,
        "error": error,
        "files": {
            name: _sha(folder / name)
            for name in ("config.json", "metrics.jsonl", "steps.jsonl", "reconstruction.png")
        },
    }
    (folder / "summary.json").write_text(json.dumps(summary))
    return folder


def spec_cells(spec_path: Path) -> tuple[str, list[dict[str, Any]]]:
    """(name, cells) of a real spec through runners.grids.spec: run ids, factors and configs."""
    from runners.grids.spec import load_spec

    spec = load_spec(spec_path)
    cells = [
        {"run_id": c.run_id, "factors": dict(c.factors), "config": c.config.to_dict()}
        for c in spec.cells
    ]
    return spec.name, cells


def make_store(
    store: Path,
    *,
    name: str = "synthetic",
    estimators: tuple[str, ...] = ("identity", "hardtanh", "sigmoid(beta=4)"),
    seeds: tuple[int, ...] = (0, 1, 2, 3, 4),
    epochs: int = 3,
    effects: dict[str, float] | None = None,
    seed: int = 1234,
    missing: tuple[tuple[str, int], ...] = (),
    statuses: dict[tuple[str, int], str] | None = None,
    cells: list[dict[str, Any]] | None = None,
) -> dict[str, Any]:
    """A store with one completed run per estimator × seed, and its spec index.

    `effects` shifts each estimator's final test MSE; a shared per-seed term makes the design
    paired. `missing` cells are in the spec index but have no folder; `statuses` overrides the
    status of some cells ("failed", "diverged", or "interrupted" = no summary.json). `cells`
    (from `spec_cells`) replaces the estimator × seed product with a real spec's cells.
    Returns the spec index dict (also written to STORE/specs/<name>.json).
    """
    rng = np.random.default_rng(seed)
    if cells is None:
        configs = [
            {**CONFIG_DEFAULTS, "estimator": est, "seed": s, "epochs": epochs}
            for est in estimators
            for s in seeds
        ]
        cells = [
            {
                "run_id": run_id_for(config),
                "factors": {"estimator": config["estimator"], "seed": config["seed"]},
                "config": config,
            }
            for config in configs
        ]
    estimators = tuple(dict.fromkeys(c["factors"]["estimator"] for c in cells))
    seeds = tuple(dict.fromkeys(c["factors"]["seed"] for c in cells))
    effects = effects or {e: 0.002 * i for i, e in enumerate(estimators)}
    statuses = statuses or {}
    seed_terms = {s: rng.normal(0, 0.002) for s in seeds}
    for cell in cells:
        est, s, run_id = cell["factors"]["estimator"], cell["factors"]["seed"], cell["run_id"]
        epochs = int(cell["config"].get("epochs", epochs))
        if (est, s) in missing:
            continue
        cell_rng = np.random.default_rng([seed, zlib.crc32(run_id.encode())])
        final = 0.03 + effects.get(est, 0.0) + seed_terms[s] + cell_rng.normal(0, 0.0005)
        status = statuses.get((est, s), "completed")
        records = []
        for e in range(1, epochs + 1):
            mse = final * (1 + 0.5 * (epochs - e) / epochs)
            if status == "diverged" and e == epochs:
                mse = float("nan")
            records.append(
                {
                    "epoch": e,
                    "step": 10 * e,
                    "images_seen": 640 * e,
                    "train_mse": mse * 1.05,
                    "test_mse": mse,
                    "test_psnr": float(-10 * np.log10(mse)) if mse == mse else float("nan"),
                    "mean_image_mse": 0.25,
                    "bit_entropy": 0.6 + 0.01 * e,
                    "dead_bits": int(cell_rng.integers(0, 4)),
                    "unique_codes": 100 + e,
                    "bit_flip_rate": None if e == 1 else 0.05,
                    "active_rate": 0.4,
                    "grad_norm_pre": 0.01,
                    "epoch_time_s": 0.5,
                    "images_per_s": 1000.0,
                }
            )
        records[-1]["probe_accuracy"] = 0.8 + 0.01 * cell_rng.random()
        if status == "failed":
            records = records[:1]
        config = dict(cell["config"])
        write_run(
            store,
            run_id,
            config,
            records,
            status=None if status == "interrupted" else status,
            rng=cell_rng,
            error="RuntimeError: synthetic failure" if status == "failed" else None,
        )
    axes = list(dict.fromkeys(k for c in cells for k in c["factors"]))
    index = {
        "name": name,
        "spec_sha256": "0" * 64,
        "axes": axes,
        "cells": [{"run_id": c["run_id"], "factors": c["factors"]} for c in cells],
    }
    (store / "specs").mkdir(parents=True, exist_ok=True)
    (store / "specs" / f"{name}.json").write_text(json.dumps(index))
    return index
