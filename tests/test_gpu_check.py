"""experiments/gpu_check: argument parsing, goals, byte/bandwidth helpers, the pytest-summary
parser, the report writer, a CPU quick run; the benchmark core in ``taid_car.ops.bench``.

No GPU and no network needed: the GPU-only parts are checked with synthetic numbers.
"""

from __future__ import annotations

import importlib.util
import json
import sys
from pathlib import Path
from types import SimpleNamespace

import pytest
import torch

from taid_car.ops import adaptive_resample, bench
from taid_car.training.callbacks import StepTimer

SCRIPT = Path(__file__).resolve().parents[1] / "experiments" / "gpu_check" / "gpu_check.py"


@pytest.fixture(scope="module")
def gc():
    """The gpu_check script as a module."""
    spec = importlib.util.spec_from_file_location("gpu_check", SCRIPT)
    module = importlib.util.module_from_spec(spec)
    sys.modules["gpu_check"] = module
    spec.loader.exec_module(module)
    yield module
    sys.modules.pop("gpu_check", None)


# ----------------------------------------------------------------------------- arguments


def test_parse_args_defaults_and_flags(gc):
    args = gc.parse_args([])
    assert (args.device, args.quick, args.skip_tests, args.skip_train) == ("auto", False, False, False)
    assert args.out is None and args.dtypes is None and args.train_steps == 200 and args.train_override == []
    args = gc.parse_args(["--device", "cpu", "--quick", "--skip-tests", "--skip-train", "--out", "x.json",
                          "--dtypes", "bfloat16, float32", "--train-override", "data.num_workers=2"])
    assert (args.device, args.quick, args.skip_tests, args.skip_train) == ("cpu", True, True, True)
    assert args.out == Path("x.json") and args.dtypes == ["bfloat16", "float32"]
    assert args.train_override == ["data.num_workers=2"]


@pytest.mark.parametrize("argv", [["--dtypes", "float16"], ["--device", "tpu"], ["--rounds", "0"]])
def test_parse_args_rejects_bad_values(gc, argv, capsys):
    with pytest.raises(SystemExit):
        gc.parse_args(argv)


def test_resolve_device(gc):
    assert gc.resolve_device("cpu") == "cpu"
    if not torch.cuda.is_available():
        assert gc.resolve_device("auto") == "cpu"
        with pytest.raises(ValueError, match="CUDA is not available"):
            gc.resolve_device("cuda")


# ----------------------------------------------------------------------------- goals


def _case(gc, fwd_s, torch_x, mem_fraction, shape=(16, 3, 192, 192), dtype=torch.float32):
    """A synthetic op-timing case: triton forward in ``fwd_s`` s, torch ``torch_x`` times slower
    in the fwd+bwd modes, triton's fwd+bwd peak memory at ``mem_fraction`` of the budget."""
    inputs = bench.make_inputs(shape[0], shape[1], shape[2:], 4, device="meta", dtype=dtype)
    case = gc.case_sizes(inputs, 4)
    rows = [{"method": "triton", "mode": "fwd", "median_s": fwd_s, "extra_peak_bytes": 0},
            {"method": "torch", "mode": "fwd", "median_s": 1.0, "extra_peak_bytes": 0}]
    for mode in gc.BWD_MODES:
        budget = gc.memory_budget_bytes(case, mode)
        rows.append({"method": "triton", "mode": mode, "median_s": 0.01,
                     "extra_peak_bytes": int(budget * mem_fraction)})
        rows.append({"method": "torch", "mode": mode, "median_s": 0.01 * torch_x, "extra_peak_bytes": 10**10})
    return {**case, "rows": rows}


def _by_key(goals):
    return {(g["goal"], g["dtype"], g["mode"]): g for g in goals}


def test_goals_met_and_not_met_from_synthetic_numbers(gc):
    peak = 1000.0  # GB/s
    f32 = _case(gc, fwd_s=None, torch_x=12.0, mem_fraction=0.9)
    fwd_bytes = f32["forward_bytes"]
    f32["rows"][0]["median_s"] = fwd_bytes / (0.7 * peak * 1e9)  # 70 % of peak
    bf16 = _case(gc, fwd_s=None, torch_x=5.0, mem_fraction=1.2, dtype=torch.bfloat16)
    bf16["rows"][0]["median_s"] = bf16["forward_bytes"] / (0.5 * peak * 1e9)  # 50 %
    ops = {"compiled": "triton", "cases": {"float32": f32, "bfloat16": bf16}}
    goals = _by_key(gc.evaluate_goals(ops, {"peak_gbs": peak}))
    assert len(goals) == 2 * 5
    bw = goals[("forward HBM bandwidth", "float32", "fwd")]
    assert bw["status"] == gc.MET and bw["value"] == pytest.approx(0.7)
    assert goals[("forward HBM bandwidth", "bfloat16", "fwd")]["status"] == gc.NOT_MET
    for mode in gc.BWD_MODES:
        speed = goals[("speed-up vs backend='torch'", "float32", mode)]
        assert speed["status"] == gc.MET and speed["value"] == pytest.approx(12.0)
        assert goals[("speed-up vs backend='torch'", "bfloat16", mode)]["status"] == gc.NOT_MET
        assert goals[("fwd+bwd peak memory", "float32", mode)]["status"] == gc.MET
        assert goals[("fwd+bwd peak memory", "bfloat16", mode)]["status"] == gc.NOT_MET


def test_goals_not_measured_without_gpu_numbers(gc):
    f32 = _case(gc, fwd_s=1e-3, torch_x=12.0, mem_fraction=0.5)
    f32["rows"] = [r for r in f32["rows"] if r["mode"] != "fwd+bwd"]  # a failed row
    goals = _by_key(gc.evaluate_goals({"compiled": "triton", "cases": {"float32": f32}}, {"peak_gbs": None}))
    assert goals[("forward HBM bandwidth", "float32", "fwd")]["status"] == gc.NOT_MEASURED
    assert goals[("speed-up vs backend='torch'", "float32", "fwd+bwd")]["status"] == gc.NOT_MEASURED
    assert goals[("speed-up vs backend='torch'", "float32", "fwd+bwd(K,Δ)")]["status"] == gc.MET
    cpu = _case(gc, fwd_s=1e-3, torch_x=50.0, mem_fraction=0.5)
    for r in cpu["rows"]:
        r["method"] = "cpu" if r["method"] == "triton" else r["method"]
        r["extra_peak_bytes"] = None
    for ops in ({"compiled": "cpu", "cases": {"float32": cpu}}, None):
        goals = gc.evaluate_goals(ops, {"peak_gbs": 1000.0} if ops else None)
        assert goals and {g["status"] for g in goals} == {gc.NOT_MEASURED}


def test_memory_budget_components(gc):
    inputs = bench.make_inputs(2, 3, (48, 40), 4, device="meta")
    case = gc.case_sizes(inputs, 4)
    pad = 2 * 3 * (48 + 12) * (40 + 12) * 4  # k = 13, p = 6, float32
    grads = 3 * 2 * 169 * 12 * 10 * 4
    lr = 2 * 3 * 12 * 10 * 4
    assert case["padded_image_f32_bytes"] == pad and case["kernel_offset_grad_bytes"] == grads
    assert gc.memory_budget_bytes(case, "fwd+bwd(K,Δ)") == pad + grads + lr
    assert gc.memory_budget_bytes(case, "fwd+bwd") == pad + grads + lr + 2 * 3 * 48 * 40 * 4


# ----------------------------------------------------------------------------- bytes and bandwidth


def test_forward_bytes_counts_each_tensor_in_its_element_size():
    f32 = bench.make_inputs(2, 3, 48, 4, device="meta")
    # HR 2*3*48*48, kernels + 2 offsets 3 * 2*169*12*12, LR 2*3*12*12, all 4 bytes
    assert bench.forward_bytes(*f32, 4) == (2 * 3 * 48 * 48 + 3 * 2 * 169 * 144 + 2 * 3 * 144) * 4 == 642816
    mixed = [f32[0].to(torch.bfloat16), *f32[1:]]  # bf16 HR, float32 rest: LR promoted to float32
    assert bench.forward_bytes(*mixed, 4) == 642816 - 2 * 3 * 48 * 48 * 2
    bf16 = [t.to(torch.bfloat16) for t in f32]
    assert bench.forward_bytes(*bf16, 4) == 642816 // 2
    assert bench.padded_image_bytes((2, 3, 48, 48), 13) == 2 * 3 * 60 * 60 * 4


def test_peak_bandwidth_from_properties_and_datasheet_table():
    assert bench.bandwidth_from_clock(2619000, 5120) == pytest.approx(3352.3, abs=0.1)  # H100 SXM
    props = SimpleNamespace(name="NVIDIA H100 80GB HBM3", memory_clock_rate=2619000, memory_bus_width=5120)
    gbs, source = bench.peak_bandwidth(props)
    assert gbs == pytest.approx(3352.3, abs=0.1) and "properties" in source
    gbs, source = bench.peak_bandwidth(SimpleNamespace(name="NVIDIA H100 80GB HBM3", memory_clock_rate=0))
    assert gbs == 3350 and "datasheet" in source
    assert bench.peak_bandwidth(SimpleNamespace(name="Some GPU")) == (None, "unknown")
    table = {"NVIDIA H200": 4800, "NVIDIA H100 PCIe": 2000, "NVIDIA A100-SXM4-80GB": 2039,
             "NVIDIA A100-SXM4-40GB": 1555, "NVIDIA A100-PCIE-40GB": 1555, "NVIDIA L4": 300,
             "NVIDIA L40S": 864, "NVIDIA GeForce RTX 4090": 1008, "NVIDIA RTX A1000": None, "cpu": None}
    for name, expected in table.items():
        assert bench.datasheet_peak_gbs(name) == expected, name


def test_copy_bandwidth_is_positive_on_cpu():
    assert bench.measure_copy_gbs("cpu", 1 << 20, rounds=2) > 0


# ----------------------------------------------------------------------------- pytest summary


@pytest.mark.parametrize(
    ("output", "expected"),
    [
        ("....\n4 passed, 10 deselected in 20.31s\n", {"passed": 4, "deselected": 10, "seconds": 20.31}),
        ("F.E\n=== 1 failed, 2 passed, 1 error in 3.20s ===", {"failed": 1, "passed": 2, "errors": 1}),
        (("SKIPPED [2] tests/test_ops_triton.py:69: needs a CUDA device; none here\n"
          "2 skipped, 9 deselected, 1 warning in 1.10s"), {"skipped": 2, "deselected": 9, "warnings": 1}),
        ("FAILED tests/a.py::t - assert 3 passed in 1s\n1 failed in 0.50s", {"failed": 1, "passed": 0}),
        ("no tests ran in 0.01s", {"passed": 0, "seconds": 0.01}),
        ("5 deselected in 0.50s", {"deselected": 5, "passed": 0}),
    ],
)
def test_parse_pytest_summary(gc, output, expected):
    counts = gc.parse_pytest_summary(output)
    for key, value in expected.items():
        assert counts[key] == value, key
    assert counts["line"] is not None


def test_parse_pytest_summary_without_summary_line(gc):
    counts = gc.parse_pytest_summary("Traceback (most recent call last):\nImportError: no module x\n")
    assert counts["line"] is None and counts["passed"] == 0 and counts["seconds"] is None
    ok = {"rc": 0, "counts": gc.parse_pytest_summary("3 passed in 1.0s")}
    assert gc.compiled_tests_ok(ok)
    assert not gc.compiled_tests_ok({"rc": 1, "counts": gc.parse_pytest_summary("1 failed in 1.0s")})
    assert not gc.compiled_tests_ok({"rc": 0, "counts": gc.parse_pytest_summary("3 skipped in 1.0s")})


def test_tests_env_selects_the_real_compiler(gc, monkeypatch):
    monkeypatch.setenv("TRITON_INTERPRET", "1")
    assert gc.tests_env()["TRITON_INTERPRET"] == "0"


# ----------------------------------------------------------------------------- training smoke run


def test_train_command_and_loss_from_metrics_csv(gc, tmp_path):
    cmd = gc.train_command(tmp_path, 200, ["data.num_workers=2"])
    assert cmd[1:3] == ["-m", "taid_car.run"] and cmd[-1] == "data.num_workers=2"
    for override in ("experiment=car_paper_x4", "data=sample", "baseline=false", "trainer.max_steps=200",
                     f"hydra.run.dir={tmp_path}", "+callbacks.step_timer._target_=taid_car.training.callbacks.StepTimer"):
        assert override in cmd
    csv_dir = tmp_path / "csv" / "version_0"
    csv_dir.mkdir(parents=True)
    lines = ["epoch,step,train/l1,train/loss,train/lr"]
    losses = [0.30, 0.28, 0.25, 0.20, 0.18, 0.15, 0.14, 0.12]
    for i, loss in enumerate(losses):
        lines.append(f"0,{10 * i + 9},{loss},{loss},0.0001")
        lines.append(f"0,{10 * i + 9},,,")  # a row without the loss (another metric's row)
    (csv_dir / "metrics.csv").write_text("\n".join(lines) + "\n")
    series = gc.read_loss_series(tmp_path)
    assert series == [(10 * i + 9, v) for i, v in enumerate(losses)]
    summary = gc.loss_summary(series)
    assert summary["went_down"] is True and summary["mean_of"] == 3
    assert (summary["first"], summary["last"], summary["last_step"]) == (0.30, 0.12, 79)
    assert summary["first_mean"] == pytest.approx(sum(losses[:3]) / 3)
    assert gc.loss_summary(series[::-1])["went_down"] is False
    assert gc.loss_summary(series[:1])["went_down"] is None
    assert gc.loss_summary([])["points"] == 0


def test_step_timer_writes_its_summary(tmp_path):
    timer = StepTimer(tmp_path, warmup_steps=2)
    timer._marks = [0.0, 1.0, 1.5, 1.7, 1.9, 2.2]  # start, then the end of steps 1..5
    record = timer.summary(end=2.3)
    assert record["steps"] == 5 and record["warmup_steps"] == 2
    assert record["median_step_s"] == pytest.approx(0.2)
    assert record["mean_step_s"] == pytest.approx((2.3 - 1.5) / 3)
    assert record["total_s"] == pytest.approx(2.3)
    module, trainer = SimpleNamespace(device=torch.device("cpu")), SimpleNamespace(is_global_zero=True)
    timer.on_train_start(trainer, module)
    timer.on_train_batch_end(trainer, module, None, None, 0)
    timer.on_train_end(trainer, module)
    written = json.loads((tmp_path / StepTimer.FILENAME).read_text())
    assert written["steps"] == 1 and written["median_step_s"] >= 0
    with pytest.raises(ValueError):
        StepTimer(tmp_path, warmup_steps=-1)


# ----------------------------------------------------------------------------- report


def test_report_paths_and_slug(gc, tmp_path):
    assert gc.slugify("NVIDIA H200") == "nvidia-h200"
    assert gc.slugify("NVIDIA A100-SXM4-80GB") == "nvidia-a100-sxm4-80gb"
    assert gc.report_paths(tmp_path / "r.json", "x") == (tmp_path / "r.json", tmp_path / "r.md")
    assert gc.report_paths(tmp_path, "nvidia-h200") == (tmp_path / "nvidia-h200.json", tmp_path / "nvidia-h200.md")
    assert gc.report_paths(None, "cpu")[0] == SCRIPT.parent / "cpu.json"


def test_write_report_json_and_markdown(gc, tmp_path):
    case = _case(gc, fwd_s=1e-3, torch_x=12.0, mem_fraction=0.5)
    gc.add_ratios(case["rows"], "triton", case["forward_bytes"], 1000.0)
    ops = {"device": "cuda", "hr_shape": [16, 3, 192, 192], "scale": 4, "k": 13, "compiled": "triton",
           "cases": {"float32": case}}
    bandwidth = {"peak_gbs": 1000.0, "peak_source": "test", "props_gbs": 1000.0, "datasheet_gbs": None,
                 "copy_bytes": 1 << 30, "copy_gbs": 800.0}
    report = {
        "schema": 1, "created": "now", "device": "cuda", "quick": False,
        "environment": {"torch": "x", "device": {"name": "Test GPU"}},
        "steps": {"ops": {"status": "ok", "seconds": 1.0},
                  "compiled_tests": {"status": "failed", "seconds": 2.0, "error": "RuntimeError: boom"},
                  "train": {"status": "skipped", "reason": "--skip-train"}},
        "ops": ops, "bandwidth": bandwidth, "goals": gc.evaluate_goals(ops, bandwidth),
        "compiled_tests": {"cmd": "-m pytest", "rc": 1, "timed_out": False,
                           "counts": gc.parse_pytest_summary("1 failed, 3 passed in 2.0s")},
        "train": {"steps": 200, "rc": 0, "wall_s": 60.0, "timed_out": False,
                  "step_timer": {"median_step_s": 0.1, "mean_step_s": 0.11, "warmup_steps": 10,
                                 "peak_cuda_allocated_bytes": 3 << 30},
                  "loss": gc.loss_summary([(9, 0.3), (19, 0.2), (29, 0.1), (39, 0.05)])},
    }
    text = gc.write_report(report, tmp_path / "out" / "r.json", tmp_path / "out" / "r.md")
    assert json.loads((tmp_path / "out" / "r.json").read_text())["goals"] == report["goals"]
    assert (tmp_path / "out" / "r.md").read_text() == text
    assert text.startswith("# GPU check: Test GPU")
    for fragment in ("| float32 | fwd | triton | 1.000 |", "**met**", "RuntimeError: boom",
                     "1 failed", "went down: True", "3.00 GiB", "measured copy (1024 MiB) 800 GB/s"):
        assert fragment in text, fragment


def test_main_cpu_quick_end_to_end(gc, tmp_path, capsys):
    rc = gc.main(["--device", "cpu", "--quick", "--skip-tests", "--skip-train", "--out", str(tmp_path),
                  "--rounds", "1", "--copy-mib", "4"])
    assert rc == 0
    report = json.loads((tmp_path / "cpu.json").read_text())
    assert (tmp_path / "cpu.md").is_file() and "| goal |" in capsys.readouterr().out
    for key in ("schema", "created", "device", "quick", "environment", "steps", "bandwidth", "ops", "goals",
                "compiled_tests", "train", "total_s"):
        assert key in report, key
    assert {name: s["status"] for name, s in report["steps"].items()} == {
        "environment": "ok", "bandwidth": "ok", "ops": "ok", "goals": "ok",
        "compiled_tests": "skipped", "train": "skipped"}
    assert report["environment"]["torch"] == torch.__version__
    ops = report["ops"]
    assert ops["hr_shape"] == list(gc.QUICK_SHAPE) and ops["compiled"] == "cpu"
    rows = ops["cases"]["float32"]["rows"]
    assert len(rows) == len(gc.METHODS["cpu"]) * len(bench.MODES)
    assert all(r["median_s"] > 0 and r["extra_peak_bytes"] is None for r in rows)
    assert all(r["x_vs_compiled"] == 1.0 for r in rows if r["method"] == "cpu")
    assert report["bandwidth"]["copy_gbs"] > 0 and report["bandwidth"]["peak_gbs"] is None
    assert report["goals"] and {g["status"] for g in report["goals"]} == {gc.NOT_MEASURED}


# ----------------------------------------------------------------------------- benchmark core


@pytest.mark.parametrize("naive", [bench.naive_resample, bench.naive_resample_slice])
def test_naive_baselines_equal_torch_backend_in_float64(naive):
    """Odd, non-square HR (29x23 at x3: 23 is not a multiple of 3), |offsets| ≤ 0.3 so that no
    sample leaves the padded image: the per-tap grid_sample loops equal the op, values and
    kernel/offset gradients."""
    inputs = bench.make_inputs(2, 3, (29, 23), 3, dtype=torch.float64, offset_range=0.3, seed=1)
    leaves = [[t.clone().requires_grad_(i > 0) for i, t in enumerate(inputs)] for _ in range(2)]
    ref = adaptive_resample(*leaves[0], 3, backend="torch")
    out = naive(*leaves[1], 3)
    assert out.shape == ref.shape == (2, 3, 9, 7)
    assert (out - ref).abs().max().item() < 1e-12
    grad = torch.randn_like(ref)
    ref.backward(grad)
    out.backward(grad)
    for a, b in zip(leaves[0][1:], leaves[1][1:]):
        assert (a.grad - b.grad).abs().max().item() < 1e-10


def test_make_step_runs_each_mode_and_rejects_unknown_names():
    inputs = bench.make_inputs(1, 3, 16, 2)
    for mode in bench.MODES:
        step = bench.make_step("torch", mode, inputs, 2)
        step()
        assert bench.time_step(step, "cpu", rounds=1) > 0
    assert bench.run_once("naive-unbind", "fwd+bwd", inputs, 2) > 0
    assert bench.cuda_extra_peak_bytes(lambda: None, "cpu") is None
    with pytest.raises(ValueError, match="unknown mode"):
        bench.make_step("torch", "bwd", inputs, 2)
    with pytest.raises(ValueError, match="unknown method"):
        bench.method_fn("fast")
