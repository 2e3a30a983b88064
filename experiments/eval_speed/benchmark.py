"""Evaluation speed and memory: taid_car's scoring vs a plain numpy implementation of the protocol.

    .venv/bin/python experiments/eval_speed/benchmark.py [--repeats 3] [--out results.json]

Builds 1024×1024 test images in a temporary folder (mosaics of 256×256 cells cut from
``../shared/data`` Set14 and T91 images, the small T91 ones upscaled with PIL first; every
tenth one gray) and measures, back to back, medians over ``--repeats``:

a. whole process: wall time and peak RSS of ``python -m taid_car.evaluate`` (Bicubic & Bicubic
   ×4, CPU) as the tree stands, the same with ``src/`` and ``conf/`` as at commit ``BEFORE``
   (the suite as the issue measured it, before the pipeline/scoring rework: ``git archive``
   into a temporary folder, first on PYTHONPATH), and ``numpy_reference.py``, on the same
   folder (10 tiles, and Set14);
b. in process, per image: the scoring ``evaluate_set`` does today (a frozen copy of the old
   ``psnr_y``/``ssim_y``/``psnr_rgb``, kept below: six calls, each re-quantising and
   re-converting, SSIM by float64 ``conv2d``) vs ``score_pairs([sr, bicubic_sr], hr)`` + the LR
   ``psnr_y``, vs the same scoring in numpy (the reference's functions); all on identical
   tensors, with their scores compared;
c. peak RSS of evaluating 10 vs 40 images: the ``taid_car.evaluate`` process (this tree and
   ``BEFORE``), and ``evaluate_set`` over ``BenchmarkDataset(cache=True)`` vs ``cache=False``;
d. ``import taid_car.evaluate`` wall time, this tree vs ``BEFORE``, beside ``import torch``;
e. agreement of the numpy reference with ``taid_car.evaluate``'s per-image scores.

The child processes run first and the in-process part (b) last, so that the children start
from a small process. The machine is shared and timings are noisy: compare the ratios of
numbers measured back to back, not absolute times across runs.
"""

from __future__ import annotations

import argparse
import datetime as dt
import json
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
from PIL import Image

HERE = Path(__file__).resolve().parent
REPO = HERE.parents[1]
sys.path.insert(0, str(HERE))

import numpy_reference as ref  # this folder

SCALE = 4


# ----------------------------------------------------------------------------- test images


def _sources(data_root: Path) -> list[Path]:
    files = sorted((data_root / "Set14").glob("*.png")) + sorted((data_root / "T91").glob("*.bmp"))
    if not files:
        raise SystemExit(f"no Set14/T91 images under {data_root}")
    return files


def build_tiles(out: Path, count: int, data_root: Path, size: int = 1024, cell: int = 256) -> Path:
    """``count`` size×size PNG mosaics of cell×cell crops (deterministic); every tenth is gray."""
    out.mkdir(parents=True, exist_ok=True)
    sources = _sources(data_root)
    rng = np.random.default_rng(0)
    per_side = size // cell
    for i in range(count):
        canvas = Image.new("RGB", (size, size))
        for j in range(per_side * per_side):
            with Image.open(sources[(i * 7 + j * 5) % len(sources)]) as im:
                im = im.convert("RGB")
                short = min(im.size)
                if short < cell:  # small T91 images: upscale so a cell fits
                    f = cell / short
                    im = im.resize((max(cell, round(im.width * f)), max(cell, round(im.height * f))), Image.BICUBIC)
                x = int(rng.integers(0, im.width - cell + 1))
                y = int(rng.integers(0, im.height - cell + 1))
                canvas.paste(im.crop((x, y, x + cell, y + cell)), ((j % per_side) * cell, (j // per_side) * cell))
        if i % 10 == 3:
            canvas = canvas.convert("L")
        canvas.save(out / f"tile{i:02d}.png")
    return out


# ----------------------------------------------------------------------------- child processes


# A small process starts the measured one and reports its rusage: a child forked straight from
# this (possibly large) process would report this process's RSS as its own peak (Linux counts
# the address space it leaves at exec).
_LAUNCHER = """
import json, os, subprocess, sys, time
start = time.perf_counter()
proc = subprocess.Popen(sys.argv[2:])
_, status, usage = os.wait4(proc.pid, 0)
with open(sys.argv[1], "w") as f:
    json.dump({"wall_s": time.perf_counter() - start, "peak_rss_mib": usage.ru_maxrss / 1024,
               "rc": os.waitstatus_to_exitcode(status)}, f)
"""


def run_child(cmd: list[str], env: dict | None = None) -> dict:
    """Run ``cmd`` from the repo root: wall seconds, its own peak RSS (MiB), stdout."""
    with tempfile.TemporaryFile() as out, tempfile.TemporaryFile() as err, \
            tempfile.NamedTemporaryFile(suffix=".json") as usage:
        subprocess.run([sys.executable, "-c", _LAUNCHER, usage.name, *cmd], cwd=REPO, env=env,
                       stdout=out, stderr=err, check=False)
        out.seek(0)
        err.seek(0)
        stdout, stderr = out.read().decode(), err.read().decode()
        result = json.loads(Path(usage.name).read_text() or "{}")
    if result.get("rc") != 0:
        raise RuntimeError(f"{' '.join(cmd)} failed ({result.get('rc')}):\n{stderr[-3000:]}")
    return {"wall_s": result["wall_s"], "peak_rss_mib": result["peak_rss_mib"], "stdout": stdout}


#: the suite as the issue measured it: the last commit before the pipeline/scoring rework
BEFORE = "8d1346a"


def before_tree(tmp: Path, rev: str = BEFORE) -> dict:
    """Environment running ``src/`` and ``conf/`` exactly as at commit ``rev`` (``git archive``
    into ``tmp``, first on PYTHONPATH): "before" for the whole-process numbers."""
    root = tmp / f"before_{rev}"
    root.mkdir(parents=True, exist_ok=True)
    archive = subprocess.run(["git", "archive", rev, "src", "conf"], cwd=REPO, capture_output=True, check=True)
    subprocess.run(["tar", "-x", "-C", str(root)], input=archive.stdout, check=True)
    env = {**os.environ, "PYTHONPATH": str(root / "src"), "TAID_CAR_BENCH_CONF": str(root / "conf")}
    where = run_child([sys.executable, "-c", "import taid_car.evaluate as m; print(m.__file__)"], env)["stdout"]
    if not where.strip().startswith(str(root)):
        raise RuntimeError(f"the copy of {rev} is not the one imported: {where}")
    return env


def _test_sets_override(root: Path, name: str, conf: Path = REPO / "conf") -> list[str]:
    """The override naming one set, for the shape ``conf/data/benchmark.yaml`` has in ``conf``."""
    from omegaconf import OmegaConf

    test_sets = OmegaConf.load(conf / "data/benchmark.yaml").get("test_sets")
    if OmegaConf.is_list(test_sets):  # set names looked up under data_root
        return [f"data.test_sets=[{name}]"]
    return ["~data.test_sets", f"+data.test_sets={{{name}: {root / name}}}"]  # a mapping replaces the default


def evaluate_cmd(root: Path, name: str, run_dir: Path, env: dict | None = None) -> list[str]:
    conf = Path((env or {}).get("TAID_CAR_BENCH_CONF", REPO / "conf"))
    return [
        sys.executable, "-m", "taid_car.evaluate", "data=benchmark", f"data_root={root}",
        *_test_sets_override(root, name, conf), "scales=[4]", "progress=false", "device=cpu",
        f"hydra.run.dir={run_dir}",
    ]


def numpy_cmd(folder: Path, json_out: Path, arith: str = "matlab") -> list[str]:
    return [sys.executable, str(HERE / "numpy_reference.py"), str(folder), "--scale", str(SCALE),
            "--arith", arith, "--json", str(json_out)]


def _median(values: list[float]) -> float:
    return statistics.median(values)


EVAL_TREE, EVAL_HEAD, NUMPY = "evaluate (this tree)", f"evaluate (before, {BEFORE})", "numpy_reference"


def part_a(sets: dict[str, Path], repeats: int, tmp: Path, head_env: dict | None) -> dict:
    out = {}
    for name, folder in sets.items():
        commands = {
            EVAL_TREE: (lambda r, n=name, f=folder: evaluate_cmd(f.parent, n, tmp / f"eval_{n}_{r}"), None),
            EVAL_HEAD: (lambda r, n=name, f=folder: evaluate_cmd(f.parent, n, tmp / f"evalhead_{n}_{r}", head_env),
                        head_env),
            NUMPY: (lambda r, n=name, f=folder: numpy_cmd(f, tmp / f"numpy_{n}_{r}.json"), None),
        }
        if head_env is None:
            del commands[EVAL_HEAD]
        runs = {which: [] for which in commands}
        for r in range(repeats):
            order = list(runs)[r % len(runs):] + list(runs)[: r % len(runs)]  # rotate the order
            for which in order:
                make, env = commands[which]
                res = run_child(make(r), env)
                runs[which].append(res)
                print(f"  a {name} {which}: {res['wall_s']:.1f} s, {res['peak_rss_mib']:.0f} MiB", flush=True)
        out[name] = {
            which: {"wall_s": _median([x["wall_s"] for x in rs]), "peak_rss_mib": _median([x["peak_rss_mib"] for x in rs]),
                    "wall_s_all": [round(x["wall_s"], 2) for x in rs]}
            for which, rs in runs.items()
        }
        out[name]["results_json"] = str(tmp / f"eval_{name}_0" / "results.json")
    return out


# ----------------------------------------------------------------------------- frozen old scoring
# What taid_car.scoring.metrics computed before this change (unchanged from 137b080 to 7f34a0d), in substance:
# every call quantises and converts both images again; Y *and* gray computed for every image.

_Y = (65.481, 128.553, 24.966)


def _old_quantize(image):
    import torch

    return (image.detach().to(torch.float64).clamp(0, 1) * 255).round()


def _old_weighted(rgb255):
    r, g, b = rgb255.unbind(dim=1)
    return (_Y[0] * r + _Y[1] * g + _Y[2] * b).unsqueeze(1)


def _old_channel(image, gray):
    import torch

    rgb255 = _old_quantize(image)
    y = (16 + _old_weighted(rgb255) / 255).round()
    g = (_old_weighted(rgb255) / 219).round()
    return torch.where(gray.view(-1, 1, 1, 1), g, y)


def _old_crop(x, b):
    return x[..., b:-b, b:-b] if b else x


def _old_pair(pred, target, crop, gray):
    return _old_crop(_old_channel(pred, gray), crop), _old_crop(_old_channel(target, gray), crop)


def _old_psnr(p, t):
    import torch

    return 10 * torch.log10(255.0**2 / (p - t).pow(2).flatten(1).mean(1))


def old_psnr_y(pred, target, crop, gray):
    return _old_psnr(*_old_pair(pred, target, crop, gray))


def old_psnr_rgb(pred, target, crop):
    return _old_psnr(_old_crop(_old_quantize(pred), crop), _old_crop(_old_quantize(target), crop))


def _old_ssim(p, t, full_2d: bool = False):
    import torch
    import torch.nn.functional as F

    x = torch.arange(11, dtype=torch.float64) - 5
    g = torch.exp(-(x**2) / (2 * 1.5**2))
    g = g / g.sum()
    b = p.shape[0]
    stack = torch.cat([p, t, p * p, t * t, p * t], 0).double()
    if full_2d:  # one 11x11 conv2d, as the issue assumed
        stack = F.conv2d(stack, (g[:, None] * g[None, :]).view(1, 1, 11, 11))
    else:  # what HEAD did: two 1-D float64 conv2d
        stack = F.conv2d(F.conv2d(stack, g.view(1, 1, -1, 1)), g.view(1, 1, 1, -1))
    mu_p, mu_t, e_pp, e_tt, e_pt = stack.split(b, 0)
    var_p, var_t, cov = e_pp - mu_p**2, e_tt - mu_t**2, e_pt - mu_p * mu_t
    c1, c2 = (0.01 * 255) ** 2, (0.03 * 255) ** 2
    m = ((2 * mu_p * mu_t + c1) * (2 * cov + c2)) / ((mu_p**2 + mu_t**2 + c1) * (var_p + var_t + c2))
    return m.flatten(1).mean(1)


def old_ssim_y(pred, target, crop, gray, full_2d: bool = False):
    return _old_ssim(*_old_pair(pred, target, crop, gray), full_2d=full_2d)


def old_scoring(hr, lr, sr, blr, bsr, gray, full_2d: bool = False) -> dict:
    """The six calls of ``evaluate_set`` (HEAD)."""
    return {
        "psnr_y": old_psnr_y(sr, hr, SCALE, gray).item(),
        "ssim_y": old_ssim_y(sr, hr, SCALE, gray, full_2d).item(),
        "psnr_rgb": old_psnr_rgb(sr, hr, SCALE).item(),
        "lr_psnr_y": old_psnr_y(lr, blr, 0, gray).item(),
        "bicubic_psnr_y": old_psnr_y(bsr, hr, SCALE, gray).item(),
        "bicubic_ssim_y": old_ssim_y(bsr, hr, SCALE, gray, full_2d).item(),
    }


def new_scoring(hr, lr, sr, blr, bsr, gray) -> dict:
    """The same scores with ``score_pairs`` (HR shared by SR and Bicubic SR) + the LR PSNR."""
    from taid_car.scoring.metrics import psnr_y, score_pairs

    method, bicubic = score_pairs([sr, bsr], hr, SCALE, gray)
    return {
        "psnr_y": method["psnr_y"].item(), "ssim_y": method["ssim_y"].item(),
        "psnr_rgb": method["psnr_rgb"].item(), "lr_psnr_y": psnr_y(lr, blr, 0, gray).item(),
        "bicubic_psnr_y": bicubic["psnr_y"].item(), "bicubic_ssim_y": bicubic["ssim_y"].item(),
    }


def new_scoring_pairwise(hr, lr, sr, blr, bsr, gray) -> dict:
    """Two ``score_pair`` calls (no sharing of the HR's work) + the LR PSNR."""
    from taid_car.scoring.metrics import psnr_y, score_pair

    method, bicubic = score_pair(sr, hr, SCALE, gray), score_pair(bsr, hr, SCALE, gray)
    return {
        "psnr_y": method["psnr_y"].item(), "ssim_y": method["ssim_y"].item(),
        "psnr_rgb": method["psnr_rgb"].item(), "lr_psnr_y": psnr_y(lr, blr, 0, gray).item(),
        "bicubic_psnr_y": bicubic["psnr_y"].item(), "bicubic_ssim_y": bicubic["ssim_y"].item(),
    }


def numpy_scoring(hr, lr, sr, blr, bsr, gray) -> dict:
    """The same scores by the numpy reference's functions, from the same float images."""

    def q(t):  # (1,3,H,W) float [0,1] tensor -> (H,W,3) levels, as quantize_uint8
        return np.round(np.clip(t[0].numpy().astype(np.float64), 0, 1) * 255).transpose(1, 2, 0)

    g = bool(gray[0])

    def y(a):
        return a[..., 0] if g else ref.luma(a, False)

    h8, s8, b8 = q(hr), q(sr), q(bsr)
    yh, ys, yb = (ref.crop(y(a), SCALE) for a in (h8, s8, b8))
    return {
        "psnr_y": ref.psnr(ys, yh), "ssim_y": ref.ssim(ys, yh),
        "psnr_rgb": ref.psnr(ref.crop(s8, SCALE), ref.crop(h8, SCALE)),
        "lr_psnr_y": ref.psnr(y(q(lr)), y(q(blr))),
        "bicubic_psnr_y": ref.psnr(yb, yh), "bicubic_ssim_y": ref.ssim(yb, yh),
    }


def part_b(sets: dict[str, Path], repeats: int, full2d_images: int) -> dict:
    import torch

    from taid_car.data import BenchmarkDataset
    from taid_car.models.quantize import quantize_8bit
    from taid_car.ops.imresize import bicubic_downscale, bicubic_upscale

    variants = {"old (HEAD, 6 calls)": old_scoring, "new score_pairs": new_scoring,
                "new 2x score_pair": new_scoring_pairwise, "numpy": numpy_scoring}
    out = {"torch_threads": torch.get_num_threads()}
    for name, folder in sets.items():
        ds = BenchmarkDataset(folder, SCALE, cache=False)
        times = {v: [] for v in variants}
        full2d = []
        worst = {v: 0.0 for v in variants}
        for i in range(len(ds)):
            item = ds[i]
            hr = item["hr"][None]
            gray = torch.tensor([bool(item["is_gray"])])
            with torch.no_grad():
                lr = quantize_8bit(bicubic_downscale(hr, SCALE))
                sr = bicubic_upscale(lr, SCALE)
                blr = quantize_8bit(bicubic_downscale(hr, SCALE))
                bsr = bicubic_upscale(blr, SCALE)
            args = (hr, lr, sr, blr, bsr, gray)
            baseline = old_scoring(*args)
            per = {v: [] for v in variants}
            for r in range(repeats):
                order = list(variants)[r % len(variants):] + list(variants)[: r % len(variants)]
                for v in order:
                    start = time.perf_counter()
                    scores = variants[v](*args)
                    per[v].append(time.perf_counter() - start)
                    worst[v] = max(worst[v], max(
                        abs(scores[k] - baseline[k]) for k in baseline if np.isfinite(baseline[k])))
            for v in variants:
                times[v].append(_median(per[v]))
            if i < full2d_images:
                start = time.perf_counter()
                scores = old_scoring(*args, full_2d=True)
                full2d.append(time.perf_counter() - start)
                worst.setdefault("old, SSIM as full 11x11 conv2d", 0.0)
                worst["old, SSIM as full 11x11 conv2d"] = max(worst["old, SSIM as full 11x11 conv2d"], max(
                    abs(scores[k] - baseline[k]) for k in baseline if np.isfinite(baseline[k])))
            print(f"  b {name} {item['name']}: " + ", ".join(f"{v} {times[v][-1] * 1e3:.0f} ms" for v in variants), flush=True)
        res = {v: {"median_ms_per_image": _median(t) * 1e3, "set_total_s": sum(t)} for v, t in times.items()}
        if full2d:
            res["old, SSIM as full 11x11 conv2d"] = {"median_ms_per_image": _median(full2d) * 1e3,
                                                     "images": len(full2d), "repeats": 1}
        old = res["old (HEAD, 6 calls)"]["set_total_s"]
        for v in variants:
            res[v]["speedup_vs_old"] = old / res[v]["set_total_s"]
        res["max_abs_diff_vs_old"] = worst
        out[name] = res
    return out


# ----------------------------------------------------------------------------- memory


_EVALUATE_SET = """
import sys, time
from taid_car.scoring.benchmark import evaluate_set
from taid_car.data import BenchmarkDataset
from taid_car.models import BicubicDownscaler, BicubicUpscaler
ds = BenchmarkDataset(sys.argv[1], 4, cache=sys.argv[2] == "cache")
start = time.perf_counter()
r = evaluate_set(BicubicDownscaler(4), BicubicUpscaler(4), ds, 4, "x", "bicubic & bicubic", "cpu", progress=False)
print(len(ds), r.psnr_y, time.perf_counter() - start)
"""


def part_c(sets: dict[str, Path], repeats: int, tmp: Path, head_env: dict | None) -> dict:
    out = {}
    for name, folder in sets.items():
        rows = {}
        runs = {
            EVAL_TREE: ([evaluate_cmd(folder.parent, name, tmp / f"mem_{name}_{r}") for r in range(repeats)], None),
            EVAL_HEAD: ([evaluate_cmd(folder.parent, name, tmp / f"memhead_{name}_{r}", head_env)
                         for r in range(repeats)],
                        head_env),
            "evaluate_set, cache=True": ([[sys.executable, "-c", _EVALUATE_SET, str(folder), "cache"]] * repeats, None),
            "evaluate_set, cache=False": ([[sys.executable, "-c", _EVALUATE_SET, str(folder), "nocache"]] * repeats,
                                          None),
        }
        if head_env is None:
            del runs[EVAL_HEAD]
        for which, (cmds, env) in runs.items():
            res = [run_child(cmd, env) for cmd in cmds]
            rows[which] = {"peak_rss_mib": _median([x["peak_rss_mib"] for x in res]),
                           "wall_s": _median([x["wall_s"] for x in res])}
            print(f"  c {name} {which}: {rows[which]['peak_rss_mib']:.0f} MiB, {rows[which]['wall_s']:.1f} s", flush=True)
        out[name] = rows
    return out


# ----------------------------------------------------------------------------- imports


_IMPORT = ("import time; t = time.perf_counter(); import taid_car.evaluate as m; "
           "print(time.perf_counter() - t, m.__file__)")


def part_d(repeats: int, tmp: Path, before_env: dict | None) -> dict:
    """``import taid_car.evaluate`` (scoring's whole import chain), this tree vs before, and torch."""
    times = {"this tree": [], f"before ({BEFORE})": [], "import torch": []}
    for _ in range(repeats):
        times["this tree"].append(float(run_child([sys.executable, "-c", _IMPORT])["stdout"].split()[0]))
        if before_env is not None:
            times[f"before ({BEFORE})"].append(
                float(run_child([sys.executable, "-c", _IMPORT], before_env)["stdout"].split()[0]))
        times["import torch"].append(float(run_child(
            [sys.executable, "-c", "import time; t = time.perf_counter(); import torch; print(time.perf_counter() - t)"]
        )["stdout"].split()[0]))
    return {k: {"median_s": _median(v), "all_s": [round(x, 3) for x in v]} for k, v in times.items() if v}


# ----------------------------------------------------------------------------- agreement


def part_e(sets: dict[str, Path], a: dict, tmp: Path) -> dict:
    out = {}
    for name, folder in sets.items():
        results = Path(a[name]["results_json"])
        out[name] = {}
        for arith in ("matlab", "package"):
            res = ref.evaluate_folder(folder, SCALE, ref.Arith(arith))
            out[name][arith] = ref.compare(res, results)
    return out


# ----------------------------------------------------------------------------- report


def _table(rows: list[list], head: list[str]) -> str:
    lines = ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    lines += ["| " + " | ".join(str(c) for c in row) + " |" for row in rows]
    return "\n".join(lines)


def report(res: dict) -> str:
    parts = [(f"commit {res['commit']} ({res['dirty']} files modified), {res['time']}, "
              f"{res['cpus']} CPUs, load {res['load']} -> {res.get('load_after')}, "
              f"torch threads {res.get('b', {}).get('torch_threads')}")]
    if "a" in res:
        rows = []
        for name, r in res["a"].items():
            numpy_s = r[NUMPY]["wall_s"]
            for which in (EVAL_HEAD, EVAL_TREE, NUMPY):
                if which in r:
                    x = r[which]
                    rows.append([name, which, f"{x['wall_s']:.1f}", f"{x['wall_s'] / numpy_s:.2f}",
                                 f"{x['peak_rss_mib']:.0f}", x["wall_s_all"]])
        parts.append("a. whole process, Bicubic & Bicubic x4 (median)\n\n" + _table(
            rows, ["set", "process", "wall s", "/ numpy", "peak MiB", "all wall s"]))
    if "b" in res:
        rows = []
        for name, r in res["b"].items():
            if name == "torch_threads":
                continue
            for v, x in r.items():
                if v == "max_abs_diff_vs_old":
                    continue
                total = f"{x['set_total_s']:.2f}" if "set_total_s" in x else f"({x['images']} image, 1 run)"
                rows.append([name, v, f"{x['median_ms_per_image']:.0f}", total,
                             f"{x['speedup_vs_old']:.2f}" if "speedup_vs_old" in x else "-",
                             f"{r['max_abs_diff_vs_old'].get(v, 0):.1e}"])
        parts.append("b. scoring per image, in process (median per image; set total)\n\n" + _table(
            rows, ["set", "scoring", "ms/image", "set s", "speed-up vs old", "max |diff| vs old"]))
    if "c" in res:
        rows = [[name, which, f"{x['peak_rss_mib']:.0f}", f"{x['wall_s']:.1f}"]
                for name, r in res["c"].items() for which, x in r.items()]
        parts.append("c. peak RSS\n\n" + _table(rows, ["set", "process", "peak MiB", "wall s"]))
    if "d" in res:
        rows = [[k, f"{v['median_s']:.2f}", v["all_s"]] for k, v in res["d"].items()]
        parts.append("d. import taid_car.evaluate\n\n" + _table(rows, ["tree", "median s", "all"]))
    if "e" in res:
        rows = [[name, arith, key, f"{x['max_abs_diff']:.1e}", x["worst_image"], f"{x['mean_diff']:.1e}"]
                for name, r in res["e"].items() for arith, cmp in r.items() for key, x in cmp.items()
                if not key.startswith(("psnr_y vs bicubic", "ssim_y vs bicubic"))]
        parts.append("e. numpy reference vs taid_car.evaluate\n\n" + _table(
            rows, ["set", "arith", "score", "max per-image |diff|", "worst", "|diff| of set mean"]))
    return "\n\n".join(parts)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--data-root", type=Path, default=REPO.parent / "shared" / "data")
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--mem-repeats", type=int, default=1)
    parser.add_argument("--full2d-images", type=int, default=2, help="images timed with the full 2-D SSIM (slow)")
    parser.add_argument("--parts", default="abcde")
    parser.add_argument("--out", type=Path, default=None, help="JSON of every number (default: print only)")
    parser.add_argument("--keep", type=Path, default=None, help="build the images here and keep them")
    args = parser.parse_args(argv)

    tmp = Path(tempfile.mkdtemp(prefix="eval_speed_"))
    root = args.keep or tmp / "images"
    tiles40 = build_tiles(root / "Tiles40", 40, args.data_root) if "c" in args.parts else None
    tiles10 = root / "Tiles10"
    tiles10.mkdir(parents=True, exist_ok=True)
    if tiles40:
        for p in sorted(tiles40.iterdir())[:10]:
            shutil.copy(p, tiles10 / p.name)
    else:
        build_tiles(tiles10, 10, args.data_root)
    set14 = root / "Set14"
    if not set14.exists():
        shutil.copytree(args.data_root / "Set14", set14)
    sets = {"Tiles10": tiles10, "Set14": set14}

    def git(*a: str) -> str:
        return subprocess.run(["git", *a], cwd=REPO, capture_output=True, text=True, check=False).stdout.strip()

    res = {"commit": git("rev-parse", "--short", "HEAD"), "dirty": len(git("status", "--short").splitlines()),
           "time": dt.datetime.now(dt.timezone.utc).isoformat(timespec="seconds"), "cpus": os.cpu_count(),
           "load": " ".join(f"{x:.1f}" for x in os.getloadavg()), "repeats": args.repeats}
    try:
        head_env = None
        if "a" in args.parts or "c" in args.parts or "d" in args.parts:
            try:
                head_env = before_tree(tmp)
            except (RuntimeError, subprocess.CalledProcessError) as err:  # e.g. the tree needs the new API
                print(f"(no runs of {BEFORE}: {err})", flush=True)
        # child processes first, the in-process part (large tensors) last
        if "a" in args.parts or "e" in args.parts:
            print("a. whole process", flush=True)
            res["a"] = part_a(sets, args.repeats if "a" in args.parts else 1, tmp, head_env)
        if "c" in args.parts:
            print("c. memory", flush=True)
            res["c"] = part_c({"Tiles10": tiles10, "Tiles40": tiles40}, args.mem_repeats, tmp, head_env)
        if "d" in args.parts:
            print("d. import time", flush=True)
            res["d"] = part_d(max(args.repeats, 5), tmp, head_env)
        if "e" in args.parts:
            print("e. agreement", flush=True)
            res["e"] = part_e(sets, res["a"], tmp)
        if "b" in args.parts:
            print("b. scoring in process", flush=True)
            res["b"] = part_b(sets, args.repeats, args.full2d_images)
    finally:
        res["load_after"] = " ".join(f"{x:.1f}" for x in os.getloadavg())
        if args.out:
            args.out.write_text(json.dumps(res, indent=2, default=str))
        print(report(res))
        shutil.rmtree(tmp, ignore_errors=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
