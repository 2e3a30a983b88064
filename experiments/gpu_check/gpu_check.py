"""One-command GPU check of the CAR resampler and a short training run (``make gpu-check``).

Steps (each in its own try/except: a failure is recorded and the rest still runs):

a. compiled tests: ``python -m pytest -q tests/test_ops_triton.py`` in a subprocess with
   ``TRITON_INTERPRET=0`` (the real compiler, whatever the caller's environment holds);
   pass/fail counts and exit status.
b. op timing: HR 16x3x192x192 at x4 (k = 13), float32 and bfloat16; forward, forward+backward
   of kernels/offsets (``fwd+bwd(K,Δ)``, CAR's training case) and of all four inputs
   (``fwd+bwd``), for ``adaptive_resample`` (Triton), ``backend="torch"`` and the naive per-tap
   ``grid_sample`` loops; medians of ``triton.testing.do_bench``; extra peak CUDA memory of one
   call beyond its inputs.
c. bandwidth: achieved GB/s of the Triton forward (bytes it must move once / time) against the
   device's peak (device properties, else a datasheet table) and a measured ``copy_``; the goals
   (forward ≥ 60 % of peak, fwd+bwd ≥ 10x the pure-torch path, fwd+bwd peak memory within one
   padded float32 image + the kernel/offset gradients), each met / not met / not measured.
d. a 200-step training smoke run of ``experiment=car_paper_x4`` (paper widths, bf16-mixed) on the
   embedded sample images (no network, no DIV2K): step time and peak memory from
   ``taid_car.training.callbacks.StepTimer``, first vs last logged ``train/loss`` from the CSV logger.
   CUDA only.
e. ``experiments/gpu_check/<device-slug>.json`` (``--out`` overrides) with everything and the
   environment, plus the markdown summary as ``<device-slug>.md`` (also printed).

``--device cpu --quick`` runs what a CPU can (op timing of the numba ``cpu`` backend vs
``torch`` vs naive on 2x3x48x48, float32; copy bandwidth; goals, GPU-only ones "not measured";
the report) so the script itself can be tested without a GPU.

Usage: python experiments/gpu_check/gpu_check.py [--quick] [--device auto|cuda|cpu]
       [--skip-tests] [--skip-train] [--out PATH]
"""

from __future__ import annotations

import argparse
import datetime
import importlib.metadata
import json
import math
import os
import platform
import re
import subprocess
import sys
import tempfile
import time
import traceback
from collections.abc import Callable, Sequence
from pathlib import Path

import torch

from taid_car.ops import bench
from taid_car.runs import read_metrics_csv

HERE = Path(__file__).resolve().parent
REPO = HERE.parents[1]

SCALE = 4
FULL_SHAPE = (16, 3, 192, 192)  # HR (B,C,H,W)
QUICK_SHAPE = (2, 3, 48, 48)
DTYPES = {"float32": torch.float32, "bfloat16": torch.bfloat16}
#: Methods timed per device type; the first is the compiled path the goals are about.
METHODS = {"cuda": ("triton", "torch", "naive-unbind", "naive-slice"),
           "cpu": ("cpu", "torch", "naive-unbind", "naive-slice")}
BWD_MODES = ("fwd+bwd", "fwd+bwd(K,Δ)")

MET, NOT_MET, NOT_MEASURED = "met", "not met", "not measured"
FWD_PEAK_FRACTION = 0.60  # forward ≥ 60 % of peak HBM bandwidth
SPEEDUP_VS_TORCH = 10.0  # fwd+bwd ≥ 10x faster than backend="torch"

# The whole file: on CUDA, without the interpreter, every Triton test in it runs compiled
# (float64 reference checks, gradcheck, int64 path, centres) besides the gpu-marked ones.
TESTS_CMD = ("-m", "pytest", "-q", "tests/test_ops_triton.py")
TRAIN_OVERRIDES = (
    "experiment=car_paper_x4",  # paper widths, 192 px HR patches, batch 16, trainer=gpu (bf16-mixed)
    "data=sample",  # embedded images: no network, no DIV2K
    "baseline=false",
    "test=false",
    "logger=csv",  # train/loss every log_every_n_steps into csv/version_0/metrics.csv
    "+trainer.limit_val_batches=0",  # no validation
    "+trainer.enable_checkpointing=false",
    "~callbacks.checkpoint",
    "trainer.enable_progress_bar=false",
    "trainer.log_every_n_steps=10",
)


# ----------------------------------------------------------------------------- arguments


def parse_args(argv: Sequence[str] | None = None) -> argparse.Namespace:
    """The command line (``argv`` None: ``sys.argv[1:]``)."""
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--device", choices=("auto", "cuda", "cpu"), default="auto",
                    help="auto: cuda when available, else cpu")
    ap.add_argument("--quick", action="store_true", help=f"tiny shapes: HR {'x'.join(map(str, QUICK_SHAPE))}")
    ap.add_argument("--skip-tests", action="store_true", help="skip the compiled (gpu-marked) tests")
    ap.add_argument("--skip-train", action="store_true", help="skip the training smoke run")
    ap.add_argument("--out", type=Path, help="report path (.json; the .md goes beside it) or a folder "
                    "for <device-slug>.json/.md (default: experiments/gpu_check/)")
    ap.add_argument("--dtypes", help="comma-separated, from float32,bfloat16 (default: both on cuda, "
                    "float32 on cpu, where bfloat16 backward of the torch/naive paths takes seconds)")
    ap.add_argument("--rounds", type=int, default=5, help="timed calls per method x mode on CPU")
    ap.add_argument("--train-steps", type=int, default=200)
    ap.add_argument("--train-override", action="append", default=[], metavar="KEY=VALUE",
                    help="extra Hydra override for the training run (repeatable), e.g. data.num_workers=4")
    ap.add_argument("--time-limit", type=float, default=285.0,
                    help="seconds for the whole check; the subprocesses' timeouts are cut to fit")
    ap.add_argument("--tests-timeout", type=float, default=150.0, help="seconds for the compiled tests")
    ap.add_argument("--copy-mib", type=int, help="size of the reference copy (default 1024 cuda, 64 cpu)")
    args = ap.parse_args(argv)
    if args.dtypes:
        names = [d.strip() for d in args.dtypes.split(",") if d.strip()]
        unknown = [d for d in names if d not in DTYPES]
        if unknown or not names:
            ap.error(f"--dtypes: unknown {unknown or names}, expected names from {list(DTYPES)}")
        args.dtypes = names
    if args.rounds < 1 or args.train_steps < 1:
        ap.error("--rounds and --train-steps must be >= 1")
    return args


def resolve_device(name: str) -> str:
    """``cuda`` or ``cpu`` for ``--device``; ValueError for cuda without CUDA."""
    if name == "auto":
        return "cuda" if torch.cuda.is_available() else "cpu"
    if name == "cuda" and not torch.cuda.is_available():
        raise ValueError("--device cuda: CUDA is not available on this machine")
    return name


# ----------------------------------------------------------------------------- steps


def run_step(report: dict, name: str, fn: Callable[[], dict], ok: Callable[[dict], bool] | None = None):
    """Run one step: its result goes to ``report[name]``, its status (ok / failed), seconds and
    error to ``report["steps"][name]``. ``ok(result)`` False marks a result as failed. Never raises."""
    t0 = time.perf_counter()
    entry: dict = {}
    try:
        result = fn()
        entry["status"] = "ok" if ok is None or ok(result) else "failed"
    except Exception as err:  # noqa: BLE001 - a step's failure is recorded, the others still run
        result = None
        entry.update(status="failed", error=f"{type(err).__name__}: {err}", traceback=traceback.format_exc())
        print(f"[gpu-check] {name} failed: {entry['error']}", file=sys.stderr)
    entry["seconds"] = time.perf_counter() - t0
    report["steps"][name] = entry
    report[name] = result
    return result


def skip_step(report: dict, name: str, reason: str) -> None:
    """Record step ``name`` as skipped, with the reason."""
    report["steps"][name] = {"status": "skipped", "reason": reason}
    report[name] = None


def _tail(text: str | bytes | None, lines: int = 40) -> str:
    if isinstance(text, bytes):
        text = text.decode(errors="replace")
    return "\n".join((text or "").splitlines()[-lines:])


# a. compiled tests ---------------------------------------------------------------------------

_SUMMARY_WORDS = {"passed": "passed", "failed": "failed", "skipped": "skipped", "deselected": "deselected",
                  "error": "errors", "errors": "errors", "xfailed": "xfailed", "xpassed": "xpassed",
                  "warning": "warnings", "warnings": "warnings"}


def parse_pytest_summary(output: str) -> dict:
    """Counts from pytest's final summary line, e.g. ``3 passed, 1 failed, 9 deselected in 4.2s``
    (with or without ``=`` decoration) → ``{"passed": 3, "failed": 1, "deselected": 9, ...,
    "seconds": 4.2, "line": ...}``; every count key present (0 when absent). ``line`` is None
    when no summary line is found (e.g. pytest crashed)."""
    counts = {key: 0 for key in dict.fromkeys(_SUMMARY_WORDS.values())}
    counts.update(seconds=None, line=None)
    pattern = re.compile(r"(\d+) (" + "|".join(_SUMMARY_WORDS) + r")\b")
    for line in reversed(output.splitlines()):
        text = line.strip().strip("=").strip()
        timing = re.search(r"\bin ([\d.]+)s\b", text)
        found = pattern.findall(text)
        if timing and (found or text.startswith("no tests ran")):
            for number, word in found:
                counts[_SUMMARY_WORDS[word]] += int(number)
            counts.update(seconds=float(timing.group(1)), line=text)
            break
    return counts


def tests_env() -> dict:
    """The environment for the compiled tests: the real Triton compiler (``TRITON_INTERPRET=0``)."""
    return {**os.environ, "TRITON_INTERPRET": "0"}


def run_compiled_tests(timeout: float) -> dict:
    """Run the gpu-marked Triton tests in a subprocess; rc, counts, output tail."""
    cmd = [sys.executable, *TESTS_CMD]
    t0 = time.perf_counter()
    try:
        proc = subprocess.run(cmd, cwd=REPO, env=tests_env(), capture_output=True, text=True, check=False, timeout=timeout)
        rc, out, timed_out = proc.returncode, proc.stdout + proc.stderr, False
    except subprocess.TimeoutExpired as err:
        rc, out, timed_out = None, _tail(err.stdout) + "\n" + _tail(err.stderr), True
    return {"cmd": " ".join(cmd[1:]), "rc": rc, "timed_out": timed_out, "timeout_s": timeout,
            "wall_s": time.perf_counter() - t0, "counts": parse_pytest_summary(out), "tail": _tail(out)}


def compiled_tests_ok(result: dict) -> bool:
    """The compiled tests ran, none failed or errored, and at least one passed."""
    counts = result["counts"]
    return result["rc"] == 0 and counts["passed"] > 0 and not counts["failed"] and not counts["errors"]


# b./c. op timing, bandwidth ------------------------------------------------------------------


def case_sizes(inputs: Sequence[torch.Tensor], scale: int) -> dict:
    """Byte counts of one input set: the forward's traffic and the memory-goal components."""
    hr, kernels = inputs[0], inputs[1]
    B, C, H, W = hr.shape
    k = math.isqrt(kernels.shape[1])
    return {
        "forward_bytes": bench.forward_bytes(*inputs, scale),
        "padded_image_f32_bytes": bench.padded_image_bytes(hr.shape, k),
        "kernel_offset_grad_bytes": sum(t.numel() * t.element_size() for t in inputs[1:]),
        "lr_bytes": B * C * (H // scale) * (W // scale) * hr.element_size(),
        "hr_grad_bytes": hr.numel() * hr.element_size(),
    }


def time_method(device: str, method: str, mode: str, inputs, scale: int, rounds: int) -> dict:
    """One row: median seconds and extra peak memory (CUDA) of ``method`` in ``mode``."""
    step = bench.make_step(method, mode, inputs, scale)
    step()  # warm-up: compilation, caches, allocator
    extra = bench.cuda_extra_peak_bytes(step, device)
    median = bench.time_step(step, device, rounds=rounds)
    return {"method": method, "mode": mode, "median_s": median, "extra_peak_bytes": extra}


def add_ratios(rows: list[dict], compiled: str, forward_bytes: int, peak_gbs: float | None) -> None:
    """In place: ``x_vs_compiled`` (row time / compiled time, same mode) and, for forwards,
    achieved ``gbs`` and ``peak_fraction``."""
    ref = {r["mode"]: r.get("median_s") for r in rows if r["method"] == compiled}
    for r in rows:
        t = r.get("median_s")
        base = ref.get(r["mode"])
        r["x_vs_compiled"] = t / base if t and base else None
        if r["mode"] == "fwd" and t:
            r["gbs"] = forward_bytes / t / 1e9
            r["peak_fraction"] = r["gbs"] / peak_gbs if peak_gbs else None


def measure_ops(device: str, shape: Sequence[int], dtypes: Sequence[str], rounds: int,
                peak_gbs: float | None) -> dict:
    """Time every method x mode x dtype; a failing row records its error, the others still run."""
    B, C, H, W = shape
    methods = METHODS[device]
    cases = {}
    for name in dtypes:
        inputs = bench.make_inputs(B, C, (H, W), SCALE, device=device, dtype=DTYPES[name])
        rows = []
        for mode in bench.MODES:
            for method in methods:
                try:
                    rows.append(time_method(device, method, mode, inputs, SCALE, rounds))
                except Exception as err:  # noqa: BLE001 - recorded per row
                    rows.append({"method": method, "mode": mode, "error": f"{type(err).__name__}: {err}"})
                    print(f"[gpu-check] {name} {mode} {method} failed: {rows[-1]['error']}", file=sys.stderr)
        sizes = case_sizes(inputs, SCALE)
        add_ratios(rows, methods[0], sizes["forward_bytes"], peak_gbs)
        cases[name] = {**sizes, "rows": rows}
        del inputs
        if device == "cuda":
            torch.cuda.empty_cache()
    return {"device": device, "hr_shape": list(shape), "scale": SCALE, "k": 3 * SCALE + 1,
            "compiled": methods[0], "methods": list(methods), "modes": list(bench.MODES), "cases": cases}


def measure_bandwidth(device: str, copy_mib: int) -> dict:
    """Peak bandwidth (GB/s, with its source; CUDA only) and a measured copy bandwidth."""
    result = {"peak_gbs": None, "peak_source": None, "props_gbs": None, "datasheet_gbs": None}
    if device == "cuda":
        props = torch.cuda.get_device_properties(0)
        result["peak_gbs"], result["peak_source"] = bench.peak_bandwidth(props)
        clock, bus = getattr(props, "memory_clock_rate", 0), getattr(props, "memory_bus_width", 0)
        result["props_gbs"] = bench.bandwidth_from_clock(clock, bus) if clock and bus else None
        result["datasheet_gbs"] = bench.datasheet_peak_gbs(props.name)
    result["copy_bytes"] = copy_mib << 20
    result["copy_gbs"] = bench.measure_copy_gbs(device, copy_mib << 20)
    return result


# c. goals ------------------------------------------------------------------------------------


def _row(case: dict, method: str, mode: str) -> dict | None:
    for r in case["rows"]:
        if r["method"] == method and r["mode"] == mode and r.get("median_s"):
            return r
    return None


def _goal(name: str, dtype: str, mode: str, value, threshold, unit: str, status: str, note: str = "") -> dict:
    return {"goal": name, "dtype": dtype, "mode": mode, "value": value, "threshold": threshold,
            "unit": unit, "status": status, "note": note}


def memory_budget_bytes(case: dict, mode: str) -> int:
    """The fwd+bwd memory budget: one padded float32 image + the kernel/offset gradients + the
    LR output (every method must return it), + the HR gradient in ``fwd+bwd`` (all four grads)."""
    budget = case["padded_image_f32_bytes"] + case["kernel_offset_grad_bytes"] + case["lr_bytes"]
    return budget + (case["hr_grad_bytes"] if mode == "fwd+bwd" else 0)


def evaluate_goals(ops: dict | None, bandwidth: dict | None) -> list[dict]:
    """Every goal per dtype (and mode) as met / not met / not measured, from the op timing
    (:func:`measure_ops`) and :func:`measure_bandwidth`; None for a step that did not run."""
    goals = []
    cases = (ops or {}).get("cases") or {"float32": None, "bfloat16": None}
    on_gpu = bool(ops) and ops.get("compiled") == "triton"
    gpu_only = "GPU only: the goal is about the Triton path" if ops else "op timing did not run"
    peak = (bandwidth or {}).get("peak_gbs")
    for dtype, case in cases.items():
        fwd = _row(case, "triton", "fwd") if on_gpu and case else None
        if fwd and peak:
            gbs = case["forward_bytes"] / fwd["median_s"] / 1e9
            frac = gbs / peak
            goals.append(_goal("forward HBM bandwidth", dtype, "fwd", frac, FWD_PEAK_FRACTION, "x peak",
                               MET if frac >= FWD_PEAK_FRACTION else NOT_MET, f"{gbs:.0f} of {peak:.0f} GB/s"))
        else:
            note = gpu_only if not on_gpu else ("a row failed" if not fwd else "peak bandwidth unknown")
            goals.append(_goal("forward HBM bandwidth", dtype, "fwd", None, FWD_PEAK_FRACTION, "x peak",
                               NOT_MEASURED, note))
        for mode in BWD_MODES:
            ours = _row(case, "triton", mode) if on_gpu and case else None
            ref = _row(case, "torch", mode) if on_gpu and case else None
            if ours and ref:
                x = ref["median_s"] / ours["median_s"]
                goals.append(_goal("speed-up vs backend='torch'", dtype, mode, x, SPEEDUP_VS_TORCH, "x",
                                   MET if x >= SPEEDUP_VS_TORCH else NOT_MET))
            else:
                goals.append(_goal("speed-up vs backend='torch'", dtype, mode, None, SPEEDUP_VS_TORCH, "x",
                                   NOT_MEASURED, gpu_only if not on_gpu else "a row failed"))
            peak_mem = ours.get("extra_peak_bytes") if ours else None
            budget = memory_budget_bytes(case, mode) if case else None
            if peak_mem is not None and budget:
                goals.append(_goal("fwd+bwd peak memory", dtype, mode, peak_mem, budget, "bytes",
                                   MET if peak_mem <= budget else NOT_MET, _budget_note(mode)))
            else:
                goals.append(_goal("fwd+bwd peak memory", dtype, mode, None, budget, "bytes", NOT_MEASURED,
                                   gpu_only if not on_gpu else "a row failed"))
    return goals


def _budget_note(mode: str) -> str:
    extra = " + HR gradient" if mode == "fwd+bwd" else ""
    return f"budget: padded float32 image + kernel/offset gradients + LR output{extra}"


# d. training smoke run -----------------------------------------------------------------------


def train_command(run_dir: Path, steps: int, extra: Sequence[str] = ()) -> list[str]:
    """``python -m taid_car.run`` with the smoke-run overrides (then ``extra``), into ``run_dir``."""
    return [sys.executable, "-m", "taid_car.run", *TRAIN_OVERRIDES, f"trainer.max_steps={steps}",
            f"hydra.run.dir={run_dir}", "+callbacks.step_timer._target_=taid_car.training.callbacks.StepTimer",
            f"+callbacks.step_timer.output_dir={run_dir}", *extra]


def read_loss_series(run_dir: Path, column: str = "train/loss") -> list[tuple[int, float]]:
    """``[(step, value)]`` of ``column`` from the run's CSV logger files (:func:`taid_car.runs.read_metrics_csv`)."""
    return [(int(step), value) for step, value in read_metrics_csv(run_dir).get(column, [])]


def loss_summary(points: Sequence[tuple[int, float]]) -> dict:
    """First/last logged losses and whether the loss went down: mean of the last n points below
    the mean of the first n (n = min(3, points // 2)); ``went_down`` None with < 2 points."""
    points = list(points)
    n = min(3, len(points) // 2)
    summary = {"points": len(points), "series": points, "went_down": None}
    if not points:
        return summary
    summary.update(first_step=points[0][0], first=points[0][1], last_step=points[-1][0], last=points[-1][1])
    if n:
        first = sum(v for _, v in points[:n]) / n
        last = sum(v for _, v in points[-n:]) / n
        summary.update(first_mean=first, last_mean=last, mean_of=n, went_down=last < first)
    return summary


def run_train_smoke(steps: int, timeout: float, extra: Sequence[str] = ()) -> dict:
    """Train ``steps`` steps in a subprocess in a temporary run directory (Hydra overrides
    ``extra`` last); timings, loss, output tail."""
    with tempfile.TemporaryDirectory(prefix="gpu_check_train_") as tmp:
        run_dir = Path(tmp) / "run"
        cmd = train_command(run_dir, steps, extra)
        env = {**os.environ, "WANDB_MODE": "offline", "HYDRA_FULL_ERROR": "1"}
        t0 = time.perf_counter()
        try:
            proc = subprocess.run(cmd, cwd=REPO, env=env, capture_output=True, text=True, check=False, timeout=timeout)
            rc, out, timed_out = proc.returncode, proc.stdout + proc.stderr, False
        except subprocess.TimeoutExpired as err:
            rc, out, timed_out = None, _tail(err.stdout) + "\n" + _tail(err.stderr), True
        wall = time.perf_counter() - t0
        timer_path = run_dir / "step_times.json"
        timer = json.loads(timer_path.read_text()) if timer_path.is_file() else None
        if timer:
            timer.pop("step_times_s", None)
        loss = loss_summary(read_loss_series(run_dir))
    return {"cmd": " ".join(cmd[1:]), "rc": rc, "timed_out": timed_out, "timeout_s": timeout, "wall_s": wall,
            "steps": steps, "step_timer": timer, "loss": loss, "tail": _tail(out)}


# e. environment and report -------------------------------------------------------------------

PROPS = ("name", "major", "minor", "total_memory", "multi_processor_count", "memory_clock_rate",
         "memory_bus_width", "L2_cache_size")


def _version(package: str) -> str | None:
    try:
        return importlib.metadata.version(package)
    except importlib.metadata.PackageNotFoundError:
        return None


def _command_output(cmd: Sequence[str]) -> str | None:
    try:
        proc = subprocess.run(cmd, capture_output=True, text=True, check=False, timeout=20, cwd=REPO)
    except (OSError, subprocess.TimeoutExpired):
        return None
    if proc.returncode != 0:
        return None
    return proc.stdout.strip() or None


def environment(device: str) -> dict:
    """Versions (python, torch, triton, CUDA, cuDNN, driver), host, git commit, device properties."""
    env = {
        "python": platform.python_version(), "platform": platform.platform(), "cpu_count": os.cpu_count(),
        "torch": torch.__version__, "triton": _version("triton"), "numba": _version("numba"),
        "cuda_runtime": torch.version.cuda, "git_commit": _command_output(["git", "rev-parse", "HEAD"]),
        "TRITON_INTERPRET": os.environ.get("TRITON_INTERPRET"), "cuda_available": torch.cuda.is_available(),
    }
    if device == "cuda":
        props = torch.cuda.get_device_properties(0)
        env["device"] = {key: getattr(props, key) for key in PROPS if hasattr(props, key)}
        env["cudnn"] = torch.backends.cudnn.version()
        env["driver"] = _command_output(["nvidia-smi", "--query-gpu=driver_version", "--format=csv,noheader"])
    else:
        env["device"] = {"name": f"cpu ({platform.processor() or platform.machine()})"}
    return env


def slugify(name: str) -> str:
    """File-name slug of a device name: ``NVIDIA H200`` → ``nvidia-h200``."""
    return re.sub(r"[^a-z0-9]+", "-", name.lower()).strip("-") or "device"


def device_slug(device: str) -> str:
    """``nvidia-h200`` style slug of the CUDA device (``cuda`` if its name cannot be read), ``cpu`` on CPU."""
    if device != "cuda":
        return "cpu"
    try:
        return slugify(torch.cuda.get_device_name(0))
    except RuntimeError:
        return "cuda"


def report_paths(out: Path | None, slug: str) -> tuple[Path, Path]:
    """(JSON, markdown) paths: ``--out`` ending in .json (markdown beside it), else a folder
    (default this script's folder) holding ``<slug>.json`` and ``<slug>.md``."""
    if out is not None and out.suffix == ".json":
        return out, out.with_suffix(".md")
    folder = out if out is not None else HERE
    return folder / f"{slug}.json", folder / f"{slug}.md"


def _fmt(value, digits: int = 1, scale: float = 1.0) -> str:
    if value is None or (isinstance(value, float) and not math.isfinite(value)):
        return "–"
    return f"{value * scale:.{digits}f}"


def _goal_value(goal: dict) -> tuple[str, str]:
    if goal["unit"] == "bytes":
        return _fmt(goal["value"], 1, 2**-20) + " MiB", _fmt(goal["threshold"], 1, 2**-20) + " MiB"
    if goal["unit"] == "x peak":
        return _fmt(goal["value"], 0, 100) + " %", _fmt(goal["threshold"], 0, 100) + " %"
    return _fmt(goal["value"]) + "x", _fmt(goal["threshold"]) + "x"


def markdown_report(report: dict) -> str:
    """The short markdown summary: steps, op timing, bandwidth, goals, tests, training."""
    env = report["environment"] or {}
    dev = (env.get("device") or {}).get("name", report["device"])
    lines = [f"# GPU check: {dev}", "",
             f"{report['created']}; torch {env.get('torch')}, triton {env.get('triton')}, "
             f"CUDA {env.get('cuda_runtime')}, driver {env.get('driver')}, commit {env.get('git_commit')}"
             + (" (quick mode: tiny shapes)" if report["quick"] else ""), "",
             "| step | status | seconds | note |", "|---|---|---:|---|"]
    for name, step in report["steps"].items():
        note = step.get("error") or step.get("reason") or ""
        lines.append(f"| {name} | {step['status']} | {_fmt(step.get('seconds'))} | {note} |")
    ops = report.get("ops")
    if ops:
        shape = "x".join(map(str, ops["hr_shape"]))
        lines += ["", f"Op timing: HR {shape} at x{ops['scale']} (k = {ops['k']}), medians; "
                  + f"x = time / {ops['compiled']}'s time in the same mode.", "",
                  "| dtype | mode | method | median ms | x | extra peak MiB | fwd GB/s | % of peak |",
                  "|---|---|---|---:|---:|---:|---:|---:|"]
        for dtype, case in ops["cases"].items():
            for r in case["rows"]:
                if "error" in r:
                    lines.append(f"| {dtype} | {r['mode']} | {r['method']} | error: {r['error']} | | | | |")
                    continue
                lines.append(
                    f"| {dtype} | {r['mode']} | {r['method']} | {_fmt(r['median_s'], 3, 1e3)} | "
                    f"{_fmt(r.get('x_vs_compiled'))} | {_fmt(r.get('extra_peak_bytes'), 1, 2**-20)} | "
                    f"{_fmt(r.get('gbs'), 0)} | {_fmt(r.get('peak_fraction'), 0, 100)} |")
    bw = report.get("bandwidth")
    if bw:
        lines += ["", (f"Peak bandwidth: {_fmt(bw['peak_gbs'], 0)} GB/s ({bw['peak_source'] or 'not known'}); "
                       f"datasheet {_fmt(bw['datasheet_gbs'], 0)} GB/s; measured copy "
                       f"({bw['copy_bytes'] >> 20} MiB) {_fmt(bw['copy_gbs'], 0)} GB/s.")]
    lines += ["", "| goal | dtype | mode | value | target | status | note |", "|---|---|---|---:|---:|---|---|"]
    for goal in report.get("goals") or []:
        value, target = _goal_value(goal)
        lines.append(f"| {goal['goal']} | {goal['dtype']} | {goal['mode']} | {value} | {target} | "
                     f"**{goal['status']}** | {goal['note']} |")
    tests = report.get("compiled_tests")
    if tests:
        c = tests["counts"]
        lines += ["", f"Compiled tests (`{tests['cmd']}`): rc {tests['rc']}, {c['passed']} passed, "
                  f"{c['failed']} failed, {c['errors']} errors, {c['skipped']} skipped"
                  + (" (timed out)" if tests["timed_out"] else "") + "."]
    train = report.get("train")
    if train:
        timer, loss = train.get("step_timer") or {}, train["loss"]
        lines += ["", f"Training smoke run ({train['steps']} steps, rc {train['rc']}, wall {_fmt(train['wall_s'])} s"
                  + (", timed out" if train["timed_out"] else "") + f"): median step "
                  f"{_fmt(timer.get('median_step_s'), 1, 1e3)} ms, mean {_fmt(timer.get('mean_step_s'), 1, 1e3)} ms "
                  f"after {timer.get('warmup_steps', '–')} warm-up steps; peak CUDA memory "
                  f"{_fmt(timer.get('peak_cuda_allocated_bytes'), 2, 2**-30)} GiB; train/loss "
                  f"{_fmt(loss.get('first'), 4)} (step {loss.get('first_step', '–')}) → {_fmt(loss.get('last'), 4)} "
                  f"(step {loss.get('last_step', '–')}), went down: {loss['went_down']}."]
    return "\n".join(lines) + "\n"


def write_report(report: dict, json_path: Path, md_path: Path) -> str:
    """Write the JSON and the markdown summary (folders created); returns the markdown."""
    json_path.parent.mkdir(parents=True, exist_ok=True)
    md_path.parent.mkdir(parents=True, exist_ok=True)
    json_path.write_text(json.dumps(report, indent=1, default=str) + "\n")
    text = markdown_report(report)
    md_path.write_text(text)
    return text


# ----------------------------------------------------------------------------- main


def main(argv: Sequence[str] | None = None) -> int:
    """Run the check; 0 when every step that ran succeeded, 1 otherwise, 2 for a bad device."""
    args = parse_args(argv)
    try:
        device = resolve_device(args.device)
    except ValueError as err:
        print(f"gpu_check: {err}", file=sys.stderr)
        return 2
    if device == "cuda" and os.environ.get("TRITON_INTERPRET", "0") not in ("", "0"):
        print("[gpu-check] warning: TRITON_INTERPRET is set: the op timing runs the Triton interpreter",
              file=sys.stderr)
    start = time.perf_counter()
    shape = QUICK_SHAPE if args.quick else FULL_SHAPE
    dtypes = args.dtypes or (list(DTYPES) if device == "cuda" else ["float32"])
    report: dict = {"schema": 1, "created": datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds"),
                    "argv": list(sys.argv[1:] if argv is None else argv), "device": device,
                    "quick": args.quick, "steps": {}}
    run_step(report, "environment", lambda: environment(device))
    copy_mib = args.copy_mib or (1024 if device == "cuda" else 64)
    bw = run_step(report, "bandwidth", lambda: measure_bandwidth(device, copy_mib))
    peak = (bw or {}).get("peak_gbs")
    run_step(report, "ops", lambda: measure_ops(device, shape, dtypes, args.rounds, peak))
    run_step(report, "goals", lambda: evaluate_goals(report["ops"], report["bandwidth"]))

    def remaining() -> float:
        return args.time_limit - (time.perf_counter() - start)

    train_reserve = 0.0 if args.skip_train or device != "cuda" else 120.0
    if args.skip_tests:
        skip_step(report, "compiled_tests", "--skip-tests")
    elif device != "cuda":
        skip_step(report, "compiled_tests", "no CUDA device: the gpu-marked tests would all be skipped")
    else:
        timeout = max(30.0, min(args.tests_timeout, remaining() - train_reserve))
        run_step(report, "compiled_tests", lambda: run_compiled_tests(timeout), ok=compiled_tests_ok)
    if args.skip_train:
        skip_step(report, "train", "--skip-train")
    elif device != "cuda":
        skip_step(report, "train", "no CUDA device: the bf16-mixed paper-width run needs a GPU")
    elif remaining() < 60:
        skip_step(report, "train", f"time limit: {remaining():.0f} s left of --time-limit {args.time_limit:.0f}")
    else:
        timeout = remaining() - 10
        run_step(report, "train", lambda: run_train_smoke(args.train_steps, timeout, args.train_override),
                 ok=lambda r: r["rc"] == 0 and r["loss"]["went_down"] is not None)
    report["total_s"] = time.perf_counter() - start
    json_path, md_path = report_paths(args.out, device_slug(device))
    text = write_report(report, json_path, md_path)
    print(text)
    print(f"[gpu-check] wrote {json_path} and {md_path}")
    return 0 if all(s["status"] != "failed" for s in report["steps"].values()) else 1


if __name__ == "__main__":
    sys.exit(main())
