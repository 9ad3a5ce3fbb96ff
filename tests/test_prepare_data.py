"""Tests for scripts/prepare_data.py on tiny archives in the published formats."""

from __future__ import annotations

import importlib.util
import io
import os
import stat
import subprocess
import sys
import tarfile
import zipfile
from pathlib import Path

import numpy as np
import pytest
from PIL import Image
from scipy.io import savemat

from seg.data.readers.cityscapes import LABEL_TO_TRAIN_ID

REPO = Path(__file__).resolve().parents[1]
SCRIPT = REPO / "scripts" / "prepare_data.py"

VOC_TRAIN = ["2007_000001", "2007_000002"]
VOC_VAL = ["2007_000003"]
SBD_TRAIN = ["2007_000002", "2008_000010"]
SBD_VAL = ["2007_000003", "2008_000011"]
SBD_ONLY_IMAGE = "2008_000011"  # in SBD but not in VOC's JPEGImages: copied by the merge
TRAIN_AUG = ["2007_000001", "2007_000002", "2008_000010", "2008_000011"]
HEIGHT, WIDTH = 6, 8


def load_script():
    spec = importlib.util.spec_from_file_location("prepare_data", SCRIPT)
    module = importlib.util.module_from_spec(spec)
    sys.modules["prepare_data"] = module  # Pool workers find their function by module name
    spec.loader.exec_module(module)
    return module


prepare_data = load_script()


def write_jpeg(path: Path, seed: int) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    pixels = np.random.default_rng(seed).integers(0, 256, (HEIGHT, WIDTH, 3), dtype=np.uint8)
    Image.fromarray(pixels).save(path, format="JPEG")


def write_png(path: Path, values: np.ndarray) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(values.astype(np.uint8)).save(path)


def write_ids(path: Path, ids: list[str]) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text("".join(f"{i}\n" for i in ids))


def sbd_mask(seed: int) -> np.ndarray:
    return np.random.default_rng(seed).integers(0, 21, (HEIGHT, WIDTH), dtype=np.uint8)


def make_tar(archive: Path, staging: Path) -> Path:
    """Pack every top-level entry of ``staging`` (gzip-compressed for a .tgz name)."""
    with tarfile.open(archive, "w:gz" if archive.suffix == ".tgz" else "w") as tar:
        for entry in sorted(staging.iterdir()):
            tar.add(entry, arcname=entry.name)
    return archive


def make_zip(archive: Path, staging: Path, entries: tuple[str, ...] | None = None) -> Path:
    """Pack the top-level ``entries`` of ``staging`` (all of them by default)."""
    with zipfile.ZipFile(archive, "w") as zip_file:
        for path in sorted(staging.rglob("*")):
            name = path.relative_to(staging).as_posix()
            if entries is None or name.split("/")[0] in entries:
                zip_file.write(path, name)
    return archive


def run(capsys: pytest.CaptureFixture, *argv: object) -> tuple[int, str, str]:
    code = prepare_data.main([str(arg) for arg in argv])
    out, err = capsys.readouterr()
    return code, out, err


@pytest.fixture
def voc_tar(tmp_path: Path) -> Path:
    voc = tmp_path / "voc_staging" / "VOCdevkit" / "VOC2012"
    for seed, sample_id in enumerate(VOC_TRAIN + VOC_VAL + ["2008_000010"]):
        write_jpeg(voc / "JPEGImages" / f"{sample_id}.jpg", seed)
    for seed, sample_id in enumerate(VOC_TRAIN + VOC_VAL):
        write_png(voc / "SegmentationClass" / f"{sample_id}.png", sbd_mask(100 + seed))
    write_ids(voc / "ImageSets" / "Segmentation" / "train.txt", VOC_TRAIN)
    write_ids(voc / "ImageSets" / "Segmentation" / "val.txt", VOC_VAL)
    return make_tar(tmp_path / "VOCtrainval_11-May-2012.tar", tmp_path / "voc_staging")


def write_sbd_tree(root: Path) -> Path:
    """``root/benchmark_RELEASE`` as in benchmark.tgz, for the ids of SBD_TRAIN + SBD_VAL."""
    dataset = root / "benchmark_RELEASE" / "dataset"
    (dataset / "cls").mkdir(parents=True)
    for seed, sample_id in enumerate(SBD_TRAIN + SBD_VAL):
        write_jpeg(dataset / "img" / f"{sample_id}.jpg", 50 + seed)
        savemat(dataset / "cls" / f"{sample_id}.mat", {"GTcls": {
            "Segmentation": sbd_mask(seed), "Boundaries": np.zeros((1, 1)),
            "CategoriesPresent": np.array([1])}})
    write_ids(dataset / "train.txt", SBD_TRAIN)
    write_ids(dataset / "val.txt", SBD_VAL)
    return root / "benchmark_RELEASE"


@pytest.fixture
def voc_root(tmp_path: Path, voc_tar: Path, capsys: pytest.CaptureFixture) -> Path:
    assert run(capsys, "voc", "--archive", voc_tar, "--out", tmp_path / "data")[0] == 0
    return tmp_path / "data" / "VOCdevkit" / "VOC2012"


def test_voc_extracts_the_layout_and_skips_it_later(
        tmp_path: Path, voc_tar: Path, capsys: pytest.CaptureFixture) -> None:
    out = tmp_path / "data"
    code, stdout, _ = run(capsys, "voc", "--archive", voc_tar, "--out", out)
    voc_root = out / "VOCdevkit" / "VOC2012"
    assert code == 0
    for folder in ("JPEGImages", "SegmentationClass", "ImageSets/Segmentation"):
        assert (voc_root / folder).is_dir()
    assert f"dataset.root={voc_root}" in stdout

    changed = voc_root / "ImageSets" / "Segmentation" / "train.txt"
    changed.write_text("edited\n")
    code, stdout, _ = run(capsys, "voc", "--archive", voc_tar, "--out", out)
    assert code == 0 and "already extracted" in stdout
    assert changed.read_text() == "edited\n"
    assert run(capsys, "voc", "--archive", voc_tar, "--out", out, "--force")[0] == 0
    assert changed.read_text().split() == VOC_TRAIN


def check_sbd_merge(voc_root: Path, sbd_root: Path) -> None:
    assert (voc_root / "ImageSets/Segmentation/train_aug.txt").read_text().split() == TRAIN_AUG
    masks = sorted((voc_root / "SegmentationClassAug").glob("*.png"))
    assert [path.stem for path in masks] == ["2008_000010", "2008_000011"]  # no VOC mask
    for path in masks:
        with Image.open(path) as label:
            assert label.mode == "P"
            values = np.array(label)
        seed = (SBD_TRAIN + SBD_VAL).index(path.stem)
        np.testing.assert_array_equal(values, sbd_mask(seed))
    copied = voc_root / "JPEGImages" / f"{SBD_ONLY_IMAGE}.jpg"
    assert copied.read_bytes() == (sbd_root / "dataset/img" / copied.name).read_bytes()
    assert not list(voc_root.rglob(".*.partial"))


def test_sbd_archive_is_extracted_and_merged(
        tmp_path: Path, voc_root: Path, capsys: pytest.CaptureFixture) -> None:
    write_sbd_tree(tmp_path / "sbd_staging")
    archive = make_tar(tmp_path / "benchmark.tgz", tmp_path / "sbd_staging")
    code, stdout, _ = run(capsys, "sbd", "--archive", archive, "--voc-root", voc_root,
                          "--out", tmp_path / "data")
    sbd_root = tmp_path / "data" / "benchmark_RELEASE"
    assert code == 0
    assert "dataset=voc_aug" in stdout and f"dataset.sbd_root={sbd_root}" in stdout
    check_sbd_merge(voc_root, sbd_root)


def test_sbd_root_is_merged_and_the_reader_uses_it(
        tmp_path: Path, voc_root: Path, capsys: pytest.CaptureFixture) -> None:
    from seg.data.readers.voc import VOCAugSegmentation

    sbd_root = write_sbd_tree(tmp_path / "extracted")
    assert run(capsys, "sbd", "--sbd-root", sbd_root, "--voc-root", voc_root)[0] == 0
    check_sbd_merge(voc_root, sbd_root)
    dataset = VOCAugSegmentation(voc_root, sbd_root=None, split="train_aug")
    assert dataset.ids == TRAIN_AUG
    assert all(dataset.load(index)[1].shape == (HEIGHT, WIDTH) for index in range(len(dataset)))

    _, stdout, _ = run(capsys, "sbd", "--sbd-root", sbd_root, "--voc-root", voc_root)
    assert "2 of 2 already" in stdout and "0 to copy" in stdout


def test_sbd_without_voc_names_the_folder(tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    sbd_root = write_sbd_tree(tmp_path)
    code, _, stderr = run(capsys, "sbd", "--sbd-root", sbd_root, "--voc-root", tmp_path / "nope")
    assert code == 1 and str(tmp_path / "nope") in stderr and "prepare_data.py voc" in stderr


def label_ids_image(seed: int) -> np.ndarray:
    """Every Cityscapes labelId (0-33) and 255 (the license plate), shuffled."""
    values = np.array([*range(34), 255] * 2, dtype=np.uint8).reshape(7, 10)
    return np.random.default_rng(seed).permutation(values.ravel()).reshape(values.shape)


def write_cityscapes_tree(root: Path) -> list[Path]:
    """gtFine/ and leftImg8bit/ as the two zips hold them, plus their license and readme."""
    label_files = []
    for seed, (split, city) in enumerate([("train", "aachen"), ("train", "bremen"),
                                          ("val", "frankfurt")]):
        stem = f"{city}_000000_000019"
        label = root / "gtFine" / split / city / f"{stem}_gtFine_labelIds.png"
        write_png(label, label_ids_image(seed))
        write_png(label.with_name(f"{stem}_gtFine_color.png"), np.zeros((7, 10)))
        write_png(root / "leftImg8bit" / split / city / f"{stem}_leftImg8bit.png",
                  np.zeros((7, 10)))
        label_files.append(label)
    (root / "license.txt").write_text("license")
    (root / "README").write_text("readme")
    return label_files


def expected_train_ids(label_ids: np.ndarray) -> np.ndarray:
    return np.vectorize(lambda value: LABEL_TO_TRAIN_ID.get(int(value), 255))(label_ids)


def check_train_ids(label_files: list[Path]) -> None:
    for label_ids in label_files:
        train_ids = label_ids.with_name(label_ids.name.replace("labelIds", "labelTrainIds"))
        with Image.open(label_ids) as raw, Image.open(train_ids) as mapped:
            assert mapped.mode == "L"
            raw_values, mapped_values = np.array(raw), np.array(mapped)
        np.testing.assert_array_equal(mapped_values, expected_train_ids(raw_values))
        for label_id, train_id in [(7, 0), (26, 13), (33, 18), (0, 255), (255, 255)]:
            assert set(mapped_values[raw_values == label_id]) == {train_id}


def test_cityscapes_zips_are_extracted_and_labels_mapped(
        tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    staging = tmp_path / "staging"
    write_cityscapes_tree(staging)
    gt_fine = make_zip(tmp_path / "gtFine_trainvaltest.zip", staging,
                       ("gtFine", "license.txt", "README"))
    left = make_zip(tmp_path / "leftImg8bit_trainvaltest.zip", staging,
                    ("leftImg8bit", "license.txt", "README"))
    out = tmp_path / "data" / "cityscapes"

    code, stdout, _ = run(capsys, "cityscapes", "--archives", gt_fine, left, "--out", out)
    assert code == 0 and f"dataset.root={out}" in stdout
    assert (out / "leftImg8bit" / "val" / "frankfurt").is_dir()
    assert (out / "license.txt").is_file()
    check_train_ids(sorted(out.glob("gtFine/*/*/*_gtFine_labelIds.png")))

    _, stdout, _ = run(capsys, "cityscapes", "--archives", gt_fine, left, "--out", out)
    assert stdout.count("already extracted") == 2 and "3 of 3 already written" in stdout


def test_cityscapes_root_reports_unknown_label_values(
        tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    label_files = write_cityscapes_tree(tmp_path)
    broken = label_files[0]
    values = label_ids_image(0)
    values[0, 0] = 40  # not a Cityscapes labelId
    write_png(broken, values)

    code, _, stderr = run(capsys, "cityscapes", "--root", tmp_path, "--workers", "2")
    assert code == 1
    assert str(broken) in stderr and "40" in stderr
    assert not broken.with_name(broken.name.replace("labelIds", "labelTrainIds")).exists()
    check_train_ids(label_files[1:])


def test_ade20k_layout_is_checked(tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    staging = tmp_path / "staging"
    for seed, split in enumerate(["training", "validation"]):
        stem = f"ADE_{split[:5]}_00000001"
        write_jpeg(staging / "ADEChallengeData2016" / "images" / split / f"{stem}.jpg", seed)
        write_png(staging / "ADEChallengeData2016" / "annotations" / split / f"{stem}.png",
                  np.full((HEIGHT, WIDTH), 3))
    (staging / "ADEChallengeData2016" / "objectInfo150.txt").write_text("Idx\tName\n")
    archive = make_zip(tmp_path / "ADEChallengeData2016.zip", staging)

    code, stdout, _ = run(capsys, "ade20k", "--archive", archive, "--out", tmp_path / "data")
    assert code == 0
    assert f"dataset.root={tmp_path / 'data' / 'ADEChallengeData2016'}" in stdout

    no_validation = tmp_path / "no_validation.zip"
    with zipfile.ZipFile(no_validation, "w") as zip_file:
        zip_file.writestr("ADEChallengeData2016/images/training/a.jpg", b"")
    code, _, stderr = run(capsys, "ade20k", "--archive", no_validation, "--out", tmp_path / "x")
    assert code == 1 and "validation" in stderr and len(stderr.splitlines()) == 1


@pytest.mark.parametrize("argv", [
    ["voc", "--archive", "{missing}"],
    ["sbd", "--archive", "{missing}", "--voc-root", "{tmp}"],
    ["cityscapes", "--archives", "{missing}"],
    ["ade20k", "--archive", "{missing}"],
    ["cityscapes", "--root", "{missing}"],
])
def test_a_missing_input_is_one_line_naming_it(
        tmp_path: Path, capsys: pytest.CaptureFixture, argv: list[str]) -> None:
    missing = tmp_path / "downloads" / "missing.file"
    argv = [arg.format(missing=missing, tmp=tmp_path) for arg in argv]
    code, _, stderr = run(capsys, *argv, "--out", tmp_path / "data")
    assert code == 1
    assert len(stderr.splitlines()) == 1 and str(missing) in stderr
    assert "Traceback" not in stderr


def test_the_script_runs_as_a_command(tmp_path: Path) -> None:
    missing = tmp_path / "VOCtrainval_11-May-2012.tar"
    result = subprocess.run([sys.executable, str(SCRIPT), "voc", "--archive", str(missing)],
                            capture_output=True, text=True, cwd=tmp_path, check=False)
    assert result.returncode == 1
    assert result.stderr.strip() == (
        f"error: archive not found: {missing}; download VOCtrainval_11-May-2012.tar from "
        "http://host.robots.ox.ac.uk/pascal/VOC/voc2012/ and pass it to --archive "
        "(see data/README.md)")


# --- archives that try to write outside --out -------------------------------------------

FILE, FOLDER = tarfile.REGTYPE, tarfile.DIRTYPE
SYMLINK, HARD_LINK = tarfile.SYMTYPE, tarfile.LNKTYPE
GOOD_VOC_MEMBER = "VOCdevkit/VOC2012/JPEGImages/a.jpg"
GOOD_ADE20K_MEMBER = "ADEChallengeData2016/images/training/a.jpg"


def add_member(tar: tarfile.TarFile, name: str, kind: bytes = FILE, link_to: str = "",
               data: bytes = b"x", mode: int = 0o644) -> None:
    member = tarfile.TarInfo(name)
    member.type, member.linkname, member.mode = kind, link_to, mode
    member.size = len(data) if kind == FILE else 0
    tar.addfile(member, io.BytesIO(data) if kind == FILE else None)


def zip_entry(name: str, mode: int = stat.S_IFREG | 0o644) -> zipfile.ZipInfo:
    entry = zipfile.ZipInfo(name)
    entry.external_attr = mode << 16  # where unzip finds the Unix file type and permissions
    return entry


def files_around(out: Path) -> dict[Path, bytes]:
    """Every file in the folder holding ``out``, except those inside ``out``, and its bytes."""
    files = {}
    for folder, subfolders, names in os.walk(out.parent):
        subfolders[:] = [name for name in subfolders if Path(folder, name) != out]
        files.update((Path(folder, name), Path(folder, name).read_bytes()) for name in names)
    return files


def check_refused(capsys: pytest.CaptureFixture, command: str, archive: Path, out: Path,
                  member: str, reason: str,
                  fix: str = "the archive is damaged or not the published file") -> None:
    """``command`` refuses ``archive`` in one line naming ``member``, ``reason`` and ``fix``,
    and writes nothing, neither inside ``out`` nor around it."""
    (out.parent / "flag").write_text("original")  # what an escape would overwrite
    around, inside = files_around(out), sorted(out.rglob("*"))
    code, _, stderr = run(capsys, command, "--archive", archive, "--out", out)
    assert files_around(out) == around
    assert sorted(out.rglob("*")) == inside  # checked whole before extracting
    assert code == 1 and len(stderr.splitlines()) == 1, stderr
    assert f"refusing to extract member {member!r} ({reason}" in stderr, stderr
    assert stderr.rstrip().endswith(fix)


def write_link_chain_tar(archive: Path, out: Path) -> None:
    """A tar built like the CVE-2025-4517 proof of concept: nested folders of long names and
    links a/b/.../p to them, whose resolved path overflows PATH_MAX once in ``out``, so that
    os.path.realpath stops resolving and the "data" filter of unfixed Pythons lets a link
    to ``out/..`` through; then a hard link to ``out/../flag`` overwritten through it, and
    a new file ``out/../newfile``."""
    steps = "abcdefghijklmnop"
    path_max = os.pathconf(out.parent, "PC_PATH_MAX")
    folder = "d" * ((path_max - len(str(out)) - 1) // (len(steps) + 1))
    path = ""
    with tarfile.open(archive, "w") as tar:
        for step in steps:
            add_member(tar, os.path.join(path, folder), FOLDER, mode=0o777)
            add_member(tar, os.path.join(path, step), SYMLINK, link_to=folder)
            path = os.path.join(path, folder)
        overflowing_link = os.path.join(*steps, "l" * 254)
        add_member(tar, overflowing_link, SYMLINK, link_to=os.path.join(*[".."] * len(steps)))
        add_member(tar, "escape", SYMLINK, link_to=os.path.join(overflowing_link, ".."))
        add_member(tar, "flaglink", HARD_LINK, link_to="escape/flag")
        add_member(tar, "flaglink", data=b"overwritten")
        add_member(tar, "escape/newfile", data=b"new")


def test_a_link_chain_overflowing_path_max_cannot_escape(
        tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    out = tmp_path / "data"
    archive = tmp_path / "VOCtrainval_11-May-2012.tar"
    write_link_chain_tar(archive, out)
    check_refused(capsys, "voc", archive, out, "a", "a symbolic link")
    assert (tmp_path / "flag").read_text() == "original"
    assert not (tmp_path / "newfile").exists()


@pytest.mark.parametrize(("members", "reason"), [
    pytest.param([("../evil.txt", FILE, "")], "'..' in its path", id="parent"),
    pytest.param([("VOCdevkit/../../evil.txt", FILE, "")], "'..' in its path", id="inner-parent"),
    pytest.param([("{outside}/evil.txt", FILE, "")], "absolute path", id="absolute"),
    pytest.param([("VOCdevkit/VOC2012/images", SYMLINK, "JPEGImages")], "a symbolic link",
                 id="symlink"),
    pytest.param([("VOCdevkit/up", SYMLINK, "../.."), ("VOCdevkit/up/evil.txt", FILE, "")],
                 "a symbolic link", id="symlink-outside"),
    pytest.param([("VOCdevkit/up", SYMLINK, "{outside}"), ("VOCdevkit/up/evil.txt", FILE, "")],
                 "a symbolic link", id="absolute-symlink"),
    pytest.param([("VOCdevkit/b.jpg", HARD_LINK, GOOD_VOC_MEMBER)], "a hard link",
                 id="hard-link"),
    pytest.param([("VOCdevkit/flag", HARD_LINK, "{outside}/flag"), ("VOCdevkit/flag", FILE, "")],
                 "a hard link", id="hard-link-outside"),
    pytest.param([("VOCdevkit/null", tarfile.CHRTYPE, "")], "a device", id="device"),
    pytest.param([("VOCdevkit/pipe", tarfile.FIFOTYPE, "")], "a FIFO", id="fifo"),
])
def test_a_tar_member_that_is_not_a_plain_file_inside_out_is_refused(
        tmp_path: Path, capsys: pytest.CaptureFixture, members: list[tuple[str, bytes, str]],
        reason: str) -> None:
    archive = tmp_path / "VOCtrainval_11-May-2012.tar"
    members = [(name.format(outside=tmp_path), kind, link_to.format(outside=tmp_path))
               for name, kind, link_to in members]
    with tarfile.open(archive, "w") as tar:
        add_member(tar, GOOD_VOC_MEMBER)
        for name, kind, link_to in members:
            add_member(tar, name, kind, link_to)
    check_refused(capsys, "voc", archive, tmp_path / "data", members[0][0], reason)


@pytest.mark.parametrize(("name", "mode", "reason"), [
    pytest.param("ADEChallengeData2016/up", stat.S_IFLNK | 0o777, "a symbolic link", id="symlink"),
    pytest.param("ADEChallengeData2016/pipe", stat.S_IFIFO | 0o644, "a FIFO", id="fifo"),
    pytest.param("../evil.txt", stat.S_IFREG | 0o644, "'..' in its path", id="parent"),
    pytest.param("{outside}/evil.txt", stat.S_IFREG | 0o644, "absolute path", id="absolute"),
])
def test_a_zip_member_that_is_not_a_plain_file_inside_out_is_refused(
        tmp_path: Path, capsys: pytest.CaptureFixture, name: str, mode: int,
        reason: str) -> None:
    archive = tmp_path / "ADEChallengeData2016.zip"
    name = name.format(outside=tmp_path)
    with zipfile.ZipFile(archive, "w") as zip_file:
        zip_file.writestr(zip_entry(GOOD_ADE20K_MEMBER), b"x")
        zip_file.writestr(zip_entry(name, mode), b"../..")  # a zip symlink holds its target
    check_refused(capsys, "ade20k", archive, tmp_path / "data", name, reason)


@pytest.mark.parametrize(("link", "target"), [
    pytest.param("ADEChallengeData2016", "elsewhere", id="folder-on-the-way"),
    pytest.param(GOOD_ADE20K_MEMBER, "flag", id="the-file-itself"),
])
def test_a_symlink_already_in_out_cannot_redirect_a_write(
        tmp_path: Path, capsys: pytest.CaptureFixture, link: str, target: str) -> None:
    out = tmp_path / "data"
    (tmp_path / "elsewhere").mkdir()
    (out / link).parent.mkdir(parents=True)
    (out / link).symlink_to(tmp_path / target)
    archive = tmp_path / "ADEChallengeData2016.zip"
    with zipfile.ZipFile(archive, "w") as zip_file:
        zip_file.writestr(zip_entry(GOOD_ADE20K_MEMBER), b"x")
    check_refused(capsys, "ade20k", archive, out, GOOD_ADE20K_MEMBER,
                  f"a symlink in {out} would redirect it to {tmp_path / target}",
                  f"remove that symlink from {out}")
    assert not any((tmp_path / "elsewhere").iterdir())


PLAIN_FILES = {"VOCdevkit/VOC2012/a.txt": b"a\n", "./VOCdevkit/b.bin": bytes(range(256)) * 400}


def write_plain_archive(archive: Path) -> None:
    """Folders (one empty) and files, one of them setuid, as tar or zip after the name."""
    if archive.suffix == ".zip":
        with zipfile.ZipFile(archive, "w") as zip_file:
            zip_file.writestr(zip_entry("VOCdevkit/empty/", stat.S_IFDIR | 0o755), b"")
            for name, data in PLAIN_FILES.items():
                zip_file.writestr(zip_entry(name, stat.S_IFREG | 0o4755), data)
        return
    with tarfile.open(archive, "w:gz") as tar:
        for name in (".", "VOCdevkit", "VOCdevkit/empty", "VOCdevkit/VOC2012"):
            add_member(tar, name, FOLDER, mode=0o755)
        for name, data in PLAIN_FILES.items():
            add_member(tar, name, data=data, mode=0o4755)


@pytest.mark.parametrize("name", ["plain.tgz", "plain.zip"])
def test_a_plain_archive_is_extracted_whole(
        tmp_path: Path, capsys: pytest.CaptureFixture, name: str) -> None:
    archive, out = tmp_path / name, tmp_path / "data"
    write_plain_archive(archive)
    prepare_data.extract(archive, out, [], force=False)
    assert "files extracted" in capsys.readouterr().out
    assert (out / "VOCdevkit" / "empty").is_dir()
    for name, data in PLAIN_FILES.items():
        assert (out / name).read_bytes() == data
        assert not (out / name).stat().st_mode & (stat.S_ISUID | stat.S_ISGID)


# --- archives too large to be the published ones -----------------------------------------

ZEROS = b"\0" * (8 << 20)  # 8 MiB that deflate to 8 kB: a 1,000-fold expansion


def write_bomb(archive: Path) -> str:
    """ZEROS as one member of a zip or a gzipped tar; the reason it is refused for."""
    if archive.suffix == ".zip":
        with zipfile.ZipFile(archive, "w") as zip_file:
            zip_file.writestr(zip_entry(GOOD_ADE20K_MEMBER), ZEROS,
                              compress_type=zipfile.ZIP_DEFLATED)
            packed = zip_file.getinfo(GOOD_ADE20K_MEMBER).compress_size
        return f"a decompression bomb: {packed:,} bytes expand to {len(ZEROS):,}"
    with tarfile.open(archive, "w:gz") as tar:
        add_member(tar, GOOD_ADE20K_MEMBER, data=ZEROS)
    return (f"a decompression bomb: the archive's {archive.stat().st_size:,} bytes expand to "
            f"over {len(ZEROS):,}")


@pytest.mark.parametrize("name", ["ADEChallengeData2016.zip", "ADEChallengeData2016.tgz"])
def test_a_decompression_bomb_is_refused_before_anything_is_written(
        tmp_path: Path, capsys: pytest.CaptureFixture, name: str) -> None:
    archive = tmp_path / name
    reason = write_bomb(archive)
    check_refused(capsys, "ade20k", archive, tmp_path / "data", GOOD_ADE20K_MEMBER, reason)


@pytest.mark.parametrize(("limit", "reason"), [
    ("MAX_MEMBER_BYTES", "1,000 bytes, over the limit of 999 for one file"),
    ("MAX_EXTRACTED_BYTES", "the archive expands to over 999 bytes"),
])
def test_a_member_or_an_archive_over_the_size_limits_is_refused(
        tmp_path: Path, capsys: pytest.CaptureFixture, monkeypatch: pytest.MonkeyPatch,
        limit: str, reason: str) -> None:
    monkeypatch.setattr(prepare_data, limit, 999)
    archive = tmp_path / "ADEChallengeData2016.zip"
    with zipfile.ZipFile(archive, "w") as zip_file:
        zip_file.writestr(zip_entry(GOOD_ADE20K_MEMBER), os.urandom(1000))
    check_refused(capsys, "ade20k", archive, tmp_path / "data", GOOD_ADE20K_MEMBER, reason)


def test_a_member_longer_than_its_header_leaves_no_file(tmp_path: Path) -> None:
    member = prepare_data.Member("a.jpg", None, lambda: io.BytesIO(b"x" * 10), size=4)
    with pytest.raises(prepare_data.PrepareError) as raised:
        prepare_data.write_member(tmp_path / "a.zip", member, tmp_path / "a.jpg")
    assert str(raised.value) == (f"{tmp_path / 'a.zip'}: member 'a.jpg' holds more than the 4 "
                                 "bytes its header declares; the archive is damaged or not the "
                                 "published file")
    assert not (tmp_path / "a.jpg").exists()


def small_file_limit() -> None:
    """In the child: files of at most 1 MiB, and a write past it fails (EFBIG) instead of
    killing the process, as a full disk fails."""
    import resource
    import signal

    signal.signal(signal.SIGXFSZ, signal.SIG_IGN)
    resource.setrlimit(resource.RLIMIT_FSIZE, (1 << 20, 1 << 20))


def test_a_full_disk_removes_the_partial_file_and_says_so(tmp_path: Path) -> None:
    archive, out = tmp_path / "ADEChallengeData2016.zip", tmp_path / "data"
    with zipfile.ZipFile(archive, "w") as zip_file:
        zip_file.writestr(zip_entry(GOOD_ADE20K_MEMBER), os.urandom(3 << 20))
    result = subprocess.run([sys.executable, str(SCRIPT), "ade20k", "--archive", str(archive),
                             "--out", str(out)], capture_output=True, text=True, timeout=120,
                            preexec_fn=small_file_limit)
    target = out / GOOD_ADE20K_MEMBER
    assert result.returncode == 1 and len(result.stderr.splitlines()) == 1, result.stderr
    assert result.stderr.startswith(f"error: {archive}: cannot extract member "
                                    f"{GOOD_ADE20K_MEMBER!r} to {target} (File too large; ")
    assert " free); free some space or choose another --out, and run again" in result.stderr
    assert not target.exists()


def test_converted_files_are_written_whole_and_never_through_a_link(tmp_path: Path) -> None:
    prepare = prepare_data
    victim = tmp_path / "victim.txt"
    victim.write_text("keep me")
    out = tmp_path / "out"
    out.mkdir()
    (out / ".a.png.partial").symlink_to(victim)  # the fixed temporary name of before
    prepare.save_png(Image.fromarray(np.zeros((4, 4), np.uint8)), out / "a.png")
    (tmp_path / "b.jpg").write_bytes(b"jpeg bytes")
    prepare.copy_file(tmp_path / "b.jpg", out / "b.jpg")
    assert victim.read_text() == "keep me"
    assert np.array_equal(np.array(Image.open(out / "a.png")), np.zeros((4, 4), np.uint8))
    assert (out / "b.jpg").read_bytes() == b"jpeg bytes"
    assert sorted(p.name for p in out.iterdir()) == [".a.png.partial", "a.png", "b.jpg"]
