"""Which CPU kernels a run may use, and the hardware that shaped its results.

torch, oneDNN and MKL each pick their CPU kernels by the vector instructions they find (AVX2,
AVX-512, AMX, ...) and, for MKL, by the CPU's vendor. Kernels for different instruction sets sum
in different orders, and this training amplifies rounding, so the same config and seed end at
visibly different numbers on two x86-64 machines. Two modes:

- ``portable``: ATen's own kernels and oneDNN are capped at AVX2 (``ATEN_CPU_CAPABILITY=avx2``,
  ``ONEDNN_MAX_CPU_ISA=AVX2``) and MKL runs its vendor-neutral code path
  (``MKL_CBWR=COMPATIBLE,STRICT``). MKL's other reproducibility branches (``AVX2``, ``AVX512``)
  exist only on Intel processors: elsewhere MKL silently runs ``AUTO`` instead, so COMPATIBLE is
  the one branch that gives the same bits on Intel and AMD. The kernels were chosen by comparing
  per-op fingerprints across vendors (docs/portability.md); the same config, seed and thread
  count give the same bits on every CPU where the kernel fingerprint test passes
  (tests/test_kernel_fingerprint.py), which is how a new kind of CPU is checked.
- ``machine``: the libraries choose (fastest; bit-identical only on the same kind of CPU).

The libraries read these variables once, when torch loads and when they first run, so they must
be in the environment before torch is imported: the CLI sets them first thing, pool workers and
SLURM tasks inherit or export them, and a library call that comes too late refuses
(`check_active`) rather than silently training unpinned. `check_active` also asks MKL which
branch it actually runs (`mkl_branch`), so a CPU or MKL build that ignores the variable is
refused rather than filed under portable ids. This module is plain Python on purpose: it runs
before torch is imported.
"""

from __future__ import annotations

import os
import platform
import sys
from pathlib import Path
from typing import Any

from runners.errors import UserError

MODES = ("portable", "machine")
DEFAULT_MODE = "portable"
PORTABLE_ENV = {
    "ATEN_CPU_CAPABILITY": "avx2",
    "ONEDNN_MAX_CPU_ISA": "AVX2",
    "MKL_CBWR": "COMPATIBLE,STRICT",
}
# The branch MKL must report in portable mode (`mkl_branch`).
PORTABLE_MKL_BRANCH = "COMPATIBLE,STRICT"
ENV_MODE = "STE_DETERMINISM"  # set by `pin` so child processes know what their parent chose
# CPU flags worth recording: the ones the libraries dispatch on.
_FLAGS = ("avx2", "fma", "avx512f", "avx512_bf16", "avx512_fp16", "avx512_vnni", "amx_tile")
# MKL's conditional-numerical-reproducibility branches as `mkl_cbwr_get` numbers them (mkl_cbwr.h;
# each checked here against MKL_VERBOSE's "CNR:" field). 0x10000 is the STRICT flag.
_CBWR_BRANCHES = {
    1: "OFF", 2: "AUTO", 3: "COMPATIBLE", 4: "SSE2", 6: "SSSE3", 7: "SSE4_1", 8: "SSE4_2",
    9: "AVX", 10: "AVX2", 11: "AVX512_MIC", 12: "AVX512", 13: "AVX512_MIC_E1", 14: "AVX512_E1",
}  # fmt: skip
_CBWR_STRICT = 0x10000


class DeterminismError(UserError):
    """The process's CPU kernels do not match the run's determinism (one line, exit 2)."""


def pin(mode: str) -> None:
    """Put `mode`'s variables in this process's environment (inherited by child processes).

    Raises:
        DeterminismError: torch is already imported with other settings (too late to pin).
        ValueError: unknown mode.
    """
    if mode not in MODES:
        raise ValueError(f"unknown determinism {mode!r} (choose from {', '.join(MODES)})")
    torch_loaded = "torch" in sys.modules
    if mode == "portable":
        if torch_loaded and not portable_env_active():
            raise DeterminismError(_too_late())
        os.environ.update(PORTABLE_ENV)
    else:
        if torch_loaded and portable_env_active():
            raise DeterminismError("torch is already loaded with portable (AVX2) kernels")
        for key, value in PORTABLE_ENV.items():
            if os.environ.get(key) == value:
                del os.environ[key]
    os.environ[ENV_MODE] = mode


def mode_for_command(argv: list[str]) -> str:
    """The mode a `ste-ablate` command line will train in, found without importing torch.

    `--determinism MODE` wins; `run SPEC` takes its spec's `base.determinism` (or a one-value
    grid axis); otherwise the default. An unreadable spec or a bad value is left to the
    command's own validation, which reports it.
    """
    for n, arg in enumerate(argv):
        if arg == "--determinism" and n + 1 < len(argv):
            return argv[n + 1]
        if arg.startswith("--determinism="):
            return arg.split("=", 1)[1]
    positional = [a for a in argv if not a.startswith("-")]
    if len(positional) >= 2 and positional[0] == "run":
        found = _spec_mode(positional[1])
        if found is not None:
            return found
    return DEFAULT_MODE


def shell_setup() -> list[str]:
    """Shell lines that give a batch job this process's kernel pins (SLURM's sbatch script)."""
    lines = [f"export {key}={os.environ[key]}" for key in PORTABLE_ENV if key in os.environ]
    lines += [f"unset {key}" for key in PORTABLE_ENV if key not in os.environ]
    if ENV_MODE in os.environ:
        lines.append(f"export {ENV_MODE}={os.environ[ENV_MODE]}")
    return lines


def pinned_mode() -> str | None:
    """The mode this process was pinned to by `pin` (None: never pinned)."""
    return os.environ.get(ENV_MODE)


def _spec_mode(path: str) -> str | None:
    import yaml  # light (no torch); only `run` needs it here

    try:
        spec = yaml.safe_load(Path(path).read_text())
        base = spec.get("base") or {}
        grid = spec.get("grid") or {}
        axis = grid.get("determinism")
    except Exception:  # the command reports a bad spec itself
        return None
    if isinstance(axis, list) and len(set(map(str, axis))) == 1:
        return str(axis[0])
    value = base.get("determinism") if isinstance(base, dict) else None
    return value if isinstance(value, str) else None


def portable_env_active(environ: Any = None) -> bool:
    """Whether every portable variable is set to its portable value."""
    environ = os.environ if environ is None else environ
    return all(environ.get(k) == v for k, v in PORTABLE_ENV.items())


def check_active(mode: str) -> None:
    """Refuse to train when this process's kernels do not match `mode`.

    Called where runs start (torch is loaded by then): portable needs the variables set and
    torch's dispatch at AVX2; machine needs them unset (else its numbers would be portable ones
    filed under machine-mode ids).

    Raises:
        DeterminismError: with the one-line reason.
    """
    if mode == "machine":
        if portable_env_active():
            raise DeterminismError(
                "this process is pinned to portable (AVX2) kernels but the run asks for "
                "determinism 'machine': run it in a process without "
                + ", ".join(PORTABLE_ENV)
                + " (ste-ablate does this for you)"
            )
        return
    if not portable_env_active():
        raise DeterminismError(_too_late())
    import torch  # the caller trains: torch is loaded already

    capability = torch.backends.cpu.get_cpu_capability()
    if capability != "AVX2":
        raise DeterminismError(
            f"portable determinism needs torch's CPU capability AVX2, this process has "
            f"{capability} (the CPU lacks AVX2, or torch loaded before the variables were set)"
        )
    branch = mkl_branch()
    if branch is not None and branch != PORTABLE_MKL_BRANCH:
        raise DeterminismError(
            f"portable determinism needs MKL's {PORTABLE_MKL_BRANCH} branch, but MKL runs "
            f"{branch} here although MKL_CBWR={os.environ.get('MKL_CBWR')}"
        )


def cpu_model() -> str:
    """The CPU's model name (from /proc/cpuinfo on Linux)."""
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def cpu_vendor() -> str:
    """The CPU's vendor id ("GenuineIntel", "AuthenticAMD", ...; from /proc/cpuinfo on Linux)."""
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("vendor_id"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return "unknown"


def mkl_branch() -> str | None:
    """The reproducibility branch MKL runs in this process, as MKL itself reports it
    (`mkl_cbwr_get`), e.g. "COMPATIBLE,STRICT" or "AUTO"; None where torch has no MKL or does
    not export it. Not the variable: on a CPU that lacks a branch MKL runs another."""
    getter = _mkl_symbol("mkl_serv_cbwr_get")
    if getter is None:
        return None
    import ctypes

    getter.restype, getter.argtypes = ctypes.c_int, [ctypes.c_int]
    branch = int(getter(1))  # MKL_CBWR_BRANCH
    settings = int(getter(-1)) & 0xFFFFFFFF  # MKL_CBWR_ALL
    name = _CBWR_BRANCHES.get(branch, f"branch {branch}")
    return name + (",STRICT" if settings & _CBWR_STRICT else "")


def mkl_version() -> str | None:
    """MKL's version string (None without MKL)."""
    getter = _mkl_symbol("MKL_Get_Version_String")
    if getter is None:
        return None
    import ctypes

    buffer = ctypes.create_string_buffer(256)
    getter(buffer, 256)
    return buffer.value.decode("ascii", "replace").strip() or None


def _mkl_symbol(name: str) -> Any:
    """A function of the MKL that torch links (statically, into libtorch_cpu), or None."""
    import ctypes

    import torch  # the caller has loaded it already

    if not torch.backends.mkl.is_available():
        return None
    library = Path(torch.__file__).parent / "lib" / "libtorch_cpu.so"
    try:
        handle = ctypes.CDLL(str(library)) if library.exists() else ctypes.CDLL(None)
        return getattr(handle, name)
    except (OSError, AttributeError):
        return None


def onednn_isa() -> str:
    """The instruction set oneDNN's kernels use here: its cap (ONEDNN_MAX_CPU_ISA) where the CPU
    has it, else the CPU's best of AVX2 and AVX-512 (oneDNN takes the lower of the two)."""
    flags = set(cpu_flags())
    best = "AVX512_CORE" if "avx512f" in flags else "AVX2" if "avx2" in flags else "SSE41"
    cap = os.environ.get("ONEDNN_MAX_CPU_ISA")
    order = ["SSE41", "AVX", "AVX2", "AVX512_CORE"]
    if cap and cap.upper() in order and order.index(cap.upper()) < order.index(best):
        return cap.upper()
    return best


def cpu_flags() -> list[str]:
    """The dispatch-relevant instruction-set flags this CPU reports."""
    try:
        text = Path("/proc/cpuinfo").read_text()
    except OSError:
        return []
    for line in text.splitlines():
        if line.startswith("flags"):
            present = set(line.split(":", 1)[1].split())
            return [f for f in _FLAGS if f in present]
    return []


def hardware(device: Any = None) -> dict[str, Any]:
    """What shaped a run's numbers: CPU, kernel dispatch settings in force, GPU when used."""
    import torch  # called by training code, after torch is loaded

    info: dict[str, Any] = {
        "cpu_vendor": cpu_vendor(),
        "cpu_model": cpu_model(),
        "cpu_flags": cpu_flags(),
        "cpu_capability": torch.backends.cpu.get_cpu_capability(),
        "onednn_max_cpu_isa": os.environ.get("ONEDNN_MAX_CPU_ISA", "default"),
        "onednn_isa": onednn_isa(),
        "mkl_cbwr": os.environ.get("MKL_CBWR", "default"),
        "mkl_branch": mkl_branch(),
        "mkl_version": mkl_version(),
        "torch": str(torch.__version__),  # a plain str: checkpoints load with weights_only
        "determinism": os.environ.get(ENV_MODE, "machine"),
    }
    if device is not None and getattr(device, "type", None) == "cuda":
        info["gpu_name"] = torch.cuda.get_device_name(device)
        info["cuda"] = torch.version.cuda
        info["cudnn"] = torch.backends.cudnn.version()
    return info


def dispatch_differs(before: dict[str, Any], now: dict[str, Any]) -> bool:
    """Whether two `hardware` records dispatch CPU kernels differently (other rounding)."""
    keys = ("cpu_capability", "onednn_max_cpu_isa", "mkl_cbwr", "mkl_branch", "torch")
    if (
        before.get("determinism") != now.get("determinism")
        or before.get("determinism") != "portable"
    ):
        keys = (*keys, "cpu_model")
    # a key an older record lacks is not evidence of a difference
    return any(before[k] != now.get(k) for k in keys if k in before)


def _too_late() -> str:
    return (
        "portable determinism must be set before torch is imported: run through `ste-ablate`, "
        "or export " + " ".join(f"{k}={v}" for k, v in PORTABLE_ENV.items()) + " first"
    )
