"""Folder discovery: patterns, natural order, hidden files, errors."""

import pytest

from opsef_core import io
from opsef_core.errors import EmptyFolderError, InputFileError


@pytest.fixture
def folder(tmp_path):
    for name in ["img10.tif", "img2.tif", "img1.TIF", "DAPI_a.tiff", "notes.txt", ".hidden.tif",
                 "scan.lif", "mask_img2.tif"]:
        (tmp_path / name).write_bytes(b"x")
    sub = tmp_path / "sub"
    sub.mkdir()
    (sub / "img3.tif").write_bytes(b"x")
    (tmp_path / ".cache").mkdir()
    (tmp_path / ".cache" / "img4.tif").write_bytes(b"x")
    return tmp_path


def test_natural_order_patterns_hidden(folder):
    names = [p.name for p in io.discover(folder)]
    assert names == ["DAPI_a.tiff", "img1.TIF", "img2.tif", "img10.tif", "mask_img2.tif", "scan.lif"]
    assert [p.name for p in io.discover(folder, exclude=("mask",))] == [
        "DAPI_a.tiff", "img1.TIF", "img2.tif", "img10.tif", "scan.lif"]
    assert [p.name for p in io.discover(folder, include="dapi")] == ["DAPI_a.tiff"]
    assert [p.name for p in io.discover(folder, include=("img*.tif",), exclude=("*10*",))] == [
        "img1.TIF", "img2.tif"]
    rec = [p.relative_to(folder).as_posix() for p in io.discover(folder, include="img*", recursive=True)]
    assert rec == ["img1.TIF", "img2.tif", "img10.tif", "sub/img3.tif"]


def test_empty_and_missing(folder, tmp_path_factory):
    with pytest.raises(EmptyFolderError, match=r"include=\['\*.png'\]"):
        io.discover(folder, include="*.png")
    with pytest.raises(EmptyFolderError, match=r"not exclude=\['img'\]"):
        io.discover(folder, include="img", exclude="img")
    empty = tmp_path_factory.mktemp("empty")
    with pytest.raises(EmptyFolderError) as exc:
        io.discover(empty)
    assert str(empty) in str(exc.value)
    with pytest.raises(InputFileError, match="folder not found"):
        io.discover(folder / "nope")
    with pytest.raises(InputFileError, match="not a folder"):
        io.discover(folder / "img2.tif")
