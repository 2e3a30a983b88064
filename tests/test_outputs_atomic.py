"""Every output file is written whole, beside its name, then renamed onto it
(``taid_car.atomic_write``): what sits at the name (a hard link, a symlink) is replaced, never
written through; a kill mid-write keeps the old file; modes follow the umask; no temporary file
stays; ``crops`` refuses to replace its figures without ``--overwrite`` and says when it moves a box."""

from __future__ import annotations

import ast
import errno
import logging
import os
import signal
import subprocess
import sys
import textwrap
from pathlib import Path

import numpy as np
import pytest
import torch
from omegaconf import OmegaConf
from PIL import Image

from helpers import compose_run, fake_run
from taid_car import atomic_write
from taid_car.atomic_write import write_atomically
from taid_car.crops import aligned_box, box_change
from taid_car.crops import main as crops_main
from taid_car.data.io import read_image, save_image
from taid_car.rescale import main as rescale_main
from taid_car.scoring import tables
from taid_car.scoring.report import markdown_table, read_json, write_results
from taid_car.scoring.results import SetResult
from taid_car.training.checkpoints import CheckpointWriteError, save_atomically


def png(path: Path, h: int, w: int, seed: int = 0) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    pixels = np.random.default_rng(seed).integers(0, 256, (h, w, 3), dtype=np.uint8)
    Image.fromarray(pixels, "RGB").save(path)
    return path


def bicubic_checkpoint(path: Path) -> Path:
    """Bicubic & Bicubic x2 saved as ``taid_car.run`` saves checkpoints (no weights to train)."""
    cfg = compose_run(["model=bicubic", "upscaler=bicubic", "scale=2"], path.parent)
    path.parent.mkdir(parents=True, exist_ok=True)
    torch.save({"taid_car_config": OmegaConf.to_container(cfg, resolve=True), "state_dict": {}}, path)
    return path


@pytest.fixture(scope="module")
def bicubic_ckpt(tmp_path_factory) -> Path:
    return bicubic_checkpoint(tmp_path_factory.mktemp("bicubic") / "bicubic.ckpt")


def a_result() -> SetResult:
    return SetResult("bicubic & bicubic", "Set5", 2, 5, 33.7, 0.93, 31.9, float("inf"), 33.7, 0.93)


def listing(folder: Path) -> list[str]:
    """Every name in ``folder``, hidden ones (temporary files) included."""
    return sorted(os.listdir(folder))


# the suite's writers of each kind of output, each writing ``path`` with overwrite on
WRITERS = {
    "image": lambda path: save_image(torch.rand(3, 8, 8), path, overwrite=True),
    "csv": lambda path: tables.write_csv([{"a": 1}], ["a"], path),
    "checkpoint": lambda path: save_atomically({"state_dict": {"w": torch.ones(2)}}, path),
    "text": lambda path: write_atomically(path, "new text\n"),
}


# ------------------------------------------------------------------ links at the output name


def test_rescale_overwrite_replaces_a_hard_link_instead_of_writing_the_lr_into_the_hr(bicubic_ckpt, tmp_path):
    """The probe: an --output folder holding a hard link of an input; downscale --overwrite used
    to open the link for writing and so replace the HR original with its LR."""
    hr = png(tmp_path / "hr" / "a.png", 32, 32)
    before = hr.read_bytes()
    out = tmp_path / "lr"
    out.mkdir()
    os.link(hr, out / "a.png")
    argv = ["downscale", "--ckpt", str(bicubic_ckpt), "--input", str(hr.parent), "--output", str(out),
            "--device", "cpu", "--no-progress"]
    assert rescale_main(argv) == 2  # refused without --overwrite: the link is a taken name
    assert rescale_main([*argv, "--overwrite"]) == 0
    assert hr.read_bytes() == before and read_image(hr).tensor.shape == (3, 32, 32)
    assert read_image(out / "a.png").tensor.shape == (3, 16, 16)
    assert os.stat(hr).st_nlink == 1 and listing(out) == ["a.png"]


@pytest.mark.parametrize("kind", sorted(WRITERS))
def test_a_hard_link_at_the_output_name_is_replaced_not_written_through(kind, tmp_path):
    original = tmp_path / "keep.bin"
    original.write_bytes(b"the original, to be kept")
    target = tmp_path / "out" / f"target.{ 'png' if kind == 'image' else kind}"
    target.parent.mkdir()
    os.link(original, target)
    WRITERS[kind](target)
    assert original.read_bytes() == b"the original, to be kept"
    assert not os.path.samefile(original, target) and target.stat().st_size > 0
    assert listing(target.parent) == [target.name]


@pytest.mark.parametrize("kind", sorted(WRITERS))
@pytest.mark.parametrize("dangling", [False, True])
def test_a_symlink_at_the_output_name_is_replaced_and_its_target_untouched(kind, dangling, tmp_path):
    pointed = tmp_path / "elsewhere" / "pointed.bin"
    pointed.parent.mkdir()
    if not dangling:
        pointed.write_bytes(b"not to be touched")
    target = tmp_path / "out" / f"target.{ 'png' if kind == 'image' else kind}"
    target.parent.mkdir()
    target.symlink_to(pointed)
    WRITERS[kind](target)
    assert not target.is_symlink() and target.is_file()
    if dangling:
        assert not pointed.exists()
    else:
        assert pointed.read_bytes() == b"not to be touched"
    assert listing(target.parent) == [target.name]


def test_results_files_replace_links_and_keep_the_extra_markdown(tmp_path):
    outside = tmp_path / "outside.md"
    outside.write_text("someone else's notes\n")
    out = tmp_path / "run"
    out.mkdir()
    (out / "results.md").symlink_to(outside)
    os.link(outside, out / "run.json")
    paths = write_results([a_result()], out, extra={"method": "bicubic"}, markdown_after="\nBaseline: none\n")
    assert outside.read_text() == "someone else's notes\n"
    assert not paths["md"].is_symlink()
    assert paths["md"].read_text() == markdown_table([a_result()]) + "\nBaseline: none\n"
    assert read_json(paths["run"]) == {"method": "bicubic"} and os.stat(outside).st_nlink == 1
    assert read_json(paths["json"])[0]["lr_psnr_y"] == float("inf")
    assert listing(out) == ["results.csv", "results.json", "results.md", "run.json"]


# ------------------------------------------------------------------ no overwrite


@pytest.mark.parametrize("taken", ["file", "symlink", "dangling symlink", "folder"])
@pytest.mark.parametrize("hard_links", [True, False])
def test_no_overwrite_refuses_a_taken_name_and_leaves_it(taken, hard_links, tmp_path, monkeypatch):
    """``overwrite=False`` publishes with ``os.link`` (refused by the kernel when the name is
    taken); without hard links (EPERM) it checks, then renames."""
    if not hard_links:
        def no_link(src, dst, *args, **kwargs):
            raise OSError(errno.EPERM, "Operation not permitted")

        monkeypatch.setattr(atomic_write.os, "link", no_link)
    other = tmp_path / "other.txt"
    other.write_text("kept")
    target = tmp_path / "out" / "name.txt"
    target.parent.mkdir()
    if taken == "file":
        target.write_text("kept")
    elif taken == "folder":
        target.mkdir()
    else:
        target.symlink_to(other if taken == "symlink" else tmp_path / "missing.txt")
    with pytest.raises(FileExistsError, match=rf"{target}: already exists.*overwrite=True"):
        write_atomically(target, "new", overwrite=False)
    assert listing(target.parent) == ["name.txt"] and other.read_text() == "kept"
    assert not (tmp_path / "missing.txt").exists()
    if taken == "file":
        assert target.read_text() == "kept"
    fresh = tmp_path / "out" / "fresh.txt"
    assert write_atomically(fresh, "new", overwrite=False) == fresh and fresh.read_text() == "new"
    assert listing(target.parent) == ["fresh.txt", "name.txt"]


def test_save_image_without_overwrite_refuses_a_dangling_symlink(tmp_path):
    target = tmp_path / "x.png"
    target.symlink_to(tmp_path / "nowhere.png")
    with pytest.raises(FileExistsError, match=r"x\.png: already exists \(a symlink to .*nowhere\.png\)"):
        save_image(torch.rand(3, 4, 4), target)
    assert target.is_symlink() and not (tmp_path / "nowhere.png").exists() and listing(tmp_path) == ["x.png"]


# ------------------------------------------------------------------ a write that stops halfway


def _half_then(exc: BaseException):
    def write(handle) -> None:
        handle.write(b"\x89PNG half a file")
        handle.flush()
        raise exc

    return write


@pytest.mark.parametrize("exc", [OSError(errno.ENOSPC, "No space left on device"), KeyboardInterrupt()])
def test_a_write_stopped_halfway_keeps_the_old_file_and_no_temporary(exc, tmp_path):
    target = tmp_path / "out.png"
    write_atomically(target, b"old, complete")
    with pytest.raises(type(exc)):
        write_atomically(target, _half_then(exc))
    assert target.read_bytes() == b"old, complete" and listing(tmp_path) == ["out.png"]
    with pytest.raises(type(exc)):
        write_atomically(tmp_path / "new.png", _half_then(exc), overwrite=False)
    assert listing(tmp_path) == ["out.png"]


def test_save_image_interrupted_mid_write_keeps_the_previous_image(tmp_path, monkeypatch):
    target = save_image(torch.zeros(3, 8, 8), tmp_path / "lr.png")
    before = target.read_bytes()

    def dying_save(self, fp, *args, **kwargs):
        fp.write(b"\x89PNG\r\n\x1a\n half")
        raise KeyboardInterrupt  # as Ctrl-C would, in the middle of the encoder

    monkeypatch.setattr(Image.Image, "save", dying_save)
    with pytest.raises(KeyboardInterrupt):
        save_image(torch.ones(3, 8, 8), target, overwrite=True)
    monkeypatch.undo()
    assert target.read_bytes() == before and read_image(target).tensor.max() == 0
    assert listing(tmp_path) == ["lr.png"]


def test_a_process_killed_mid_write_leaves_the_old_file_whole(tmp_path):
    """SIGKILL while writing: the name still holds the old file; only a hidden temporary file
    (``.<name>.<random>.tmp``) is left beside it, never half a target."""
    target = tmp_path / "results.md"
    target.write_text("old results\n")
    script = textwrap.dedent(f"""
        import os, signal
        from taid_car.atomic_write import write_atomically

        def write(handle):
            handle.write(b"| half a tab")
            handle.flush()
            os.kill(os.getpid(), signal.SIGKILL)

        write_atomically({str(target)!r}, write)
    """)
    done = subprocess.run([sys.executable, "-c", script], check=False, capture_output=True, timeout=60)
    assert done.returncode == -signal.SIGKILL, done.stderr
    assert target.read_text() == "old results\n"
    left = [name for name in listing(tmp_path) if name != "results.md"]
    assert len(left) == 1 and left[0].startswith(".results.md.") and left[0].endswith(".tmp")


def test_a_failed_checkpoint_write_keeps_its_error_and_removes_the_temporary(tmp_path, monkeypatch):
    target = tmp_path / "last.ckpt"
    save_atomically({"state_dict": {"step": 1}}, target)

    def full_disk(obj, f, *args, **kwargs):
        f.write(b"PK partial")
        raise OSError(errno.ENOSPC, "No space left on device")

    monkeypatch.setattr(torch, "save", full_disk)
    with pytest.raises(CheckpointWriteError, match=rf"could not write checkpoint {target}: No space left on device"):
        save_atomically({"state_dict": {"step": 2}}, target)
    monkeypatch.undo()
    assert torch.load(target, weights_only=True)["state_dict"]["step"] == 1 and listing(tmp_path) == ["last.ckpt"]


# ------------------------------------------------------------------ modes


@pytest.fixture(params=[0o022, 0o027])
def umask(request):
    old = os.umask(request.param)
    try:
        yield request.param
    finally:
        os.umask(old)


def test_modes_follow_the_umask(umask, tmp_path):
    """As ``open(name, "w")`` would: 0666 less the umask, for images, results and checkpoints
    alike (checkpoints used to be 0600, from ``tempfile.mkstemp``)."""
    files = [
        save_image(torch.rand(3, 8, 8), tmp_path / "img.png"),
        *write_results([a_result()], tmp_path / "run", extra={"method": "bicubic"}).values(),
    ]
    save_atomically({"state_dict": {"w": torch.ones(2)}}, tmp_path / "run" / "checkpoints" / "last.ckpt")
    files.append(tmp_path / "run" / "checkpoints" / "last.ckpt")
    (tmp_path / "plain.txt").write_text("for comparison")
    expected = 0o666 & ~umask
    assert (tmp_path / "plain.txt").stat().st_mode & 0o777 == expected
    assert {path.name: oct(path.stat().st_mode & 0o777) for path in files} == {
        path.name: oct(expected) for path in files}


# ------------------------------------------------------------------ crops


@pytest.fixture(scope="module")
def finished_run(tmp_path_factory) -> Path:
    """A finished bicubic x2 run (results, run.json, checkpoints/last.ckpt) in a multirun folder."""
    root = tmp_path_factory.mktemp("multirun")
    run = fake_run(root, "0_bicubic_x2", "bicubic & bicubic", 2, {"Set5": (33.0, 0.9, float("inf"), 33.0)})
    bicubic_checkpoint(run / "checkpoints" / "last.ckpt")
    return root


def test_crops_refuses_to_replace_its_figure_without_overwrite(finished_run, tmp_path, capsys):
    image = png(tmp_path / "img.png", 44, 44, seed=3)
    out = tmp_path / "figs"
    argv = [str(finished_run), "--image", str(image), "--box", "0", "0", "20", "--output", str(out)]
    assert crops_main(argv) == 0
    figure = out / "crops_x2_img.png"
    first = figure.read_bytes()
    figure.write_bytes(b"an earlier figure, kept")
    capsys.readouterr()
    assert crops_main(argv) == 2
    err = capsys.readouterr().err
    assert f"{figure}" in err and "pass --overwrite" in err
    assert figure.read_bytes() == b"an earlier figure, kept"

    keep = tmp_path / "keep.png"
    keep.write_bytes(b"linked, not to be touched")
    figure.unlink()
    os.link(keep, figure)
    assert crops_main([*argv, "--overwrite"]) == 0
    assert keep.read_bytes() == b"linked, not to be touched" and figure.read_bytes() == first
    assert listing(out) == ["crops_x2_img.png"]


def test_crops_says_when_it_moves_the_box(finished_run, tmp_path, caplog):
    image = png(tmp_path / "img.png", 44, 44, seed=4)
    with caplog.at_level(logging.WARNING, logger="taid_car.crops"):
        assert crops_main([str(finished_run), "--image", str(image), "--box", "3", "5", "20",
                           "--output", str(tmp_path / "a")]) == 0
    moved = [r.getMessage() for r in caplog.records if r.name == "taid_car.crops"]
    assert moved == [("x2, image 44x44 (HxW): --box 3 5 20 (top left size, HR px) is off the x2 grid "
                      "(multiples of 2): using --box 2 4 20")]
    caplog.clear()
    with caplog.at_level(logging.WARNING, logger="taid_car.crops"):
        assert crops_main([str(finished_run), "--image", str(image), "--box", "2", "4", "20",
                           "--output", str(tmp_path / "b")]) == 0
    assert not [r for r in caplog.records if r.name == "taid_car.crops"]


@pytest.mark.parametrize(("box", "scale", "reason"), [
    ((0, 0, 20), 2, None),
    ((5, 7, 30), 4, "is off the x4 grid (multiples of 4)"),
    ((100, 100, 96), 2, "is larger than the image"),
    ((30, 0, 16), 2, "reaches outside the image"),
    ((-2, 0, 16), 2, "reaches outside the image"),
    ((0, 0, 1), 4, "is smaller than one LR pixel (4 HR px)"),
    ((1, 0, 100), 2, "is larger than the image and is off the x2 grid (multiples of 2)"),
])
def test_box_change_names_why_a_box_is_moved(box, scale, reason):
    assert box_change(box, scale, 40, 48) == reason
    assert (reason is None) == (aligned_box(box, scale, 40, 48) == box)


def _direct_writes(tree: ast.AST) -> list[int]:
    """Line numbers of calls that write a file directly: ``open``/``Path.open`` in a writing mode,
    ``write_text``, ``write_bytes``, ``json.dump``, and ``savefig`` outside a lambda (the callback
    :func:`~taid_car.atomic_write.write_atomically` is given)."""
    in_lambda = {id(node) for lam in ast.walk(tree) if isinstance(lam, ast.Lambda) for node in ast.walk(lam)}
    lines = []
    for node in ast.walk(tree):
        if not isinstance(node, ast.Call):
            continue
        name = node.func.attr if isinstance(node.func, ast.Attribute) else getattr(node.func, "id", "")
        modes = [a.value for a in [*node.args, *(k.value for k in node.keywords if k.arg == "mode")]
                 if isinstance(a, ast.Constant) and isinstance(a.value, str)]
        if ((name == "open" and any(set(m) & set("wxa+") for m in modes))
                or name in ("write_text", "write_bytes")
                or (name == "dump" and getattr(node.func.value, "id", "") == "json")
                or (name == "savefig" and id(node) not in in_lambda)):
            lines.append(node.lineno)
    return lines


def test_no_output_is_written_past_the_one_writer():
    """Every file the suite writes goes through :func:`~taid_car.atomic_write.write_atomically`
    (the pooch download and the archive extraction of ``data/download.py`` write temporary names
    that are then moved into place: left as they are)."""
    import taid_car

    src = Path(taid_car.__file__).parent
    offenders = [f"{path.relative_to(src)}:{line}" for path in sorted(src.rglob("*.py"))
                 if path.relative_to(src).as_posix() != "data/download.py"
                 for line in _direct_writes(ast.parse(path.read_text()))]
    assert offenders == []
    assert _direct_writes(ast.parse("Path('x').write_text('a'); open(p, 'w'); p.open('a'); fig.savefig(p)\n"
                                    "json.dump(obj, f); w(p, lambda f: fig.savefig(f)); open(p); open(p, 'rb')")) == [1, 1, 1, 1, 2]
