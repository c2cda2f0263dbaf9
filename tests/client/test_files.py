"""Finding images in folders: recursion, type filtering, skipping non-images (pure)."""

from __future__ import annotations

from pathlib import Path, PurePosixPath

import pytest

from cellseg_client.files import content_type, find_images, sha256_file, sniff

PNG = b"\x89PNG\r\n\x1a\n" + b"\0" * 32
TIFF = b"II*\x00" + b"\0" * 32
JPEG = b"\xff\xd8\xff\xe0" + b"\0" * 32


def make_tree(root: Path) -> None:
    files = {
        "a.png": PNG,
        "sub/b.TIF": TIFF,
        "sub/deeper/c.jpeg": JPEG,
        "notes.txt": b"hello",
        "fake.png": b"not really a png",
        ".hidden/d.png": PNG,
        ".e.png": PNG,
        "out/result.png": PNG,
    }
    for name, data in files.items():
        (root / name).parent.mkdir(parents=True, exist_ok=True)
        (root / name).write_bytes(data)


def test_folders_are_searched_recursively_for_images_only(tmp_path: Path) -> None:
    make_tree(tmp_path)
    found = find_images([tmp_path], exclude=[tmp_path / "out"])
    assert [im.rel for im in found.images] == [
        PurePosixPath("a.png"),
        PurePosixPath("sub/b.TIF"),
        PurePosixPath("sub/deeper/c.jpeg"),
    ]
    skipped = {p.name: reason for p, reason in found.skipped}
    assert set(skipped) == {"notes.txt", "fake.png"}
    assert "suffix" in skipped["notes.txt"] and "content" in skipped["fake.png"]


def test_an_empty_image_file_is_skipped_as_empty(tmp_path: Path) -> None:
    (tmp_path / "blank.png").write_bytes(b"")
    found = find_images([tmp_path])
    assert not found.images
    assert [(p.name, reason) for p, reason in found.skipped] == [("blank.png", "the file is empty")]


def test_a_file_given_directly_is_taken_by_content(tmp_path: Path) -> None:
    odd = tmp_path / "scan.dat"
    odd.write_bytes(TIFF)
    found = find_images([odd])
    assert [im.rel for im in found.images] == [PurePosixPath("scan.dat")]
    assert content_type(odd) == "image/tiff"


def test_a_missing_input_is_an_error(tmp_path: Path) -> None:
    with pytest.raises(FileNotFoundError):
        find_images([tmp_path / "nope"])


def test_sniff_and_hash(tmp_path: Path) -> None:
    p = tmp_path / "x.png"
    p.write_bytes(PNG)
    assert sniff(p) == "png" and content_type(p) == "image/png"
    assert sha256_file(p) == __import__("hashlib").sha256(PNG).hexdigest()
