"""Input listing on the driver: names, sizes, versions and content ids (objects behind URIs
are listed and hashed as they stream, never copied to the driver's disk)."""

import fsspec
import pytest

from pipelines.discover import InputError, discover


@pytest.fixture
def tree(tmp_path):
    (tmp_path / "raw" / "nested").mkdir(parents=True)
    (tmp_path / "raw" / "a.mp4").write_bytes(b"A" * 100)
    (tmp_path / "raw" / "nested" / "b.MOV").write_bytes(b"B" * 70)
    (tmp_path / "raw" / "nested" / "copy of a.mp4").write_bytes(b"A" * 100)
    (tmp_path / "raw" / "notes.txt").write_text("not footage")
    return tmp_path


def names(files):
    return [f["path"].rsplit("/", 1)[1] for f in files]


def test_directories_are_searched_for_media_with_sizes_and_versions(tree):
    files = discover([str(tree / "raw")])
    assert names(files) == ["a.mp4", "b.MOV", "copy of a.mp4"]
    assert [f["size"] for f in files] == [100, 70, 100]
    assert all(f["version"] for f in files)  # mtime, for people
    ids = [f["content"] for f in files]  # what names a work unit: the same bytes, the same id
    assert ids[0] == ids[2] != ids[1]


def test_globs_explicit_files_and_repeats(tree):
    files = discover([str(tree / "raw" / "**" / "*.mp4"), str(tree / "raw" / "notes.txt"), str(tree / "raw" / "a.mp4")])
    assert names(files) == ["a.mp4", "copy of a.mp4", "notes.txt"]  # named explicitly: the probe decides


def test_an_input_that_matches_nothing_is_a_clear_error(tree):
    with pytest.raises(InputError, match="matches no file"):
        discover([str(tree / "nope" / "*.mp4")])
    with pytest.raises(InputError, match="matches no object"):
        discover(["memory:///empty-bucket/raw/"])


def test_fsspec_uris_are_listed_not_fetched():
    fs = fsspec.filesystem("memory")
    fs.pipe("/bucket/raw/x.mp4", b"X" * 50)
    fs.pipe("/bucket/raw/sub/y.mp4", b"Y" * 40)
    fs.pipe("/bucket/raw/sub/notes.txt", b"text")
    for spec in ("memory:///bucket/raw/**/*.mp4", "memory:///bucket/raw/"):
        files = discover([spec])
        assert names(files) == ["y.mp4", "x.mp4"] and [f["size"] for f in files] == [40, 50]  # path order
        assert all(f["path"].startswith("memory:///bucket/raw/") for f in files)
