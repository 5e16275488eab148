"""W&B when things around it fail: a read-only WANDB_DIR, and silence while it logs in."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

pytestmark = pytest.mark.slow  # each runs `ste-ablate run` in a fresh process

SPEC = (
    "name: one\nbase: {dataset: mnist-mini, train_subset: 128, test_subset: 64, epochs: 1, "
    'device: cpu, num_threads: 1, diagnostics: "off"}\ngrid:\n  seed: [0]\n'
)


def clean_env(**extra: str) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("WANDB_")}
    return {**env, "PYTHONUNBUFFERED": "1", **extra}


def test_a_read_only_wandb_dir_sends_the_files_to_the_store_and_says_where(
    tmp_path, read_only_folder
):
    spec = tmp_path / "one.yaml"
    spec.write_text(SPEC)
    store = tmp_path / "store"
    done = subprocess.run(
        [sys.executable, "-m", "runners.cli", "run", str(spec), "--store", str(store),
         "--wandb", "offline", "--no-progress"],
        capture_output=True, text=True, timeout=300,
        env=clean_env(WANDB_DIR=str(read_only_folder), WANDB_DATA_DIR=str(tmp_path / "wd")),
    )  # fmt: skip
    assert done.returncode == 0, done.stderr
    assert f"WANDB_DIR {read_only_folder} is not writable" in done.stderr
    line = next(x for x in done.stdout.splitlines() if "wandb sync" in x)
    pattern = line.split("wandb sync ", 1)[1]
    # The printed path names where the files went, not the read-only folder.
    assert pattern == f"{store.resolve()}/wandb/offline-run-*"
    assert list((store / "wandb").glob("offline-run-*"))


def test_wandb_prints_nothing_while_it_logs_in(tmp_path):
    script = (
        "from runners.tracking.wandb_tracker import WandbOptions, WandbTracker\n"
        f"options = WandbOptions(mode='online', directory={str(tmp_path)!r}, init_timeout=3)\n"
        "tracker = WandbTracker(options)\n"
        "tracker.start({'epochs': 1}, 'quiet-run', False)\n"
        "tracker.finish({'status': 'completed'})\n"
        "print('mode', tracker.mode)\n"
    )
    done = subprocess.run(
        [sys.executable, "-c", script],
        capture_output=True, text=True, timeout=180,
        cwd=Path(__file__).resolve().parents[1],
        env=clean_env(
            WANDB_API_KEY="0" * 40,  # credentials, and a server that refuses: falls back offline
            WANDB_BASE_URL="http://127.0.0.1:9",
            WANDB_DATA_DIR=str(tmp_path / "wd"),
        ),
    )  # fmt: skip
    assert done.returncode == 0, done.stderr
    assert "mode offline" in done.stdout
    assert "Loaded credentials" not in done.stderr  # wandb's login line, despite silent mode
    assert "W&B online start-up failed" in done.stderr  # our own one line stays
