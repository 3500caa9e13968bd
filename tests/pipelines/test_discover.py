import fsspec
import pytest

from pipelines.discover import InputError, discover


@pytest.fixture
def tree(tmp_path):
    (tmp_path / "raw" / "nested").mkdir(parents=True)
    (tmp_path / "raw" / "a.mp4").write_bytes(b"A" * 100)
    (tmp_path / "raw" / "nested" / "b.MOV").write_bytes(b"B" * 100)
    (tmp_path / "raw" / "nested" / "copy of a.mp4").write_bytes(b"A" * 100)
    (tmp_path / "raw" / "notes.txt").write_text("not footage")
    return tmp_path


def paths(items):
    return [it["source"]["path"].rsplit("/", 1)[1] for it in items]


def test_directories_are_searched_for_media_and_duplicates_recorded(tree):
    found = discover([str(tree / "raw")], tree / "cache")
    assert paths(found.sources) == ["a.mp4", "b.MOV"]
    [dup] = found.duplicates
    assert dup["reject"]["reason"] == "duplicate" and dup["reject"]["stage"] == "discover"
    assert dup["source"]["path"].endswith("copy of a.mp4") and "a.mp4" in dup["reject"]["message"]
    assert dup["source"]["id"] == found.sources[0]["source"]["id"]


def test_globs_and_explicit_files_of_any_extension(tree):
    found = discover([str(tree / "raw" / "**" / "*.mp4"), str(tree / "raw" / "notes.txt")], tree / "cache")
    assert paths(found.sources) == ["a.mp4", "notes.txt"]  # named explicitly: the probe decides


def test_an_input_that_matches_nothing_is_a_clear_error(tree):
    with pytest.raises(InputError, match="matches no file"):
        discover([str(tree / "nope" / "*.mp4")], tree / "cache")


def test_fsspec_uris_are_fetched_into_the_cache(tmp_path):
    fs = fsspec.filesystem("memory")
    fs.pipe("/bucket/raw/x.mp4", b"X" * 50)
    fs.pipe("/bucket/raw/sub/y.mp4", b"Y" * 50)
    found = discover(["memory:///bucket/raw/**/*.mp4"], tmp_path / "cache")
    assert sorted(paths(found.sources)) == ["x.mp4", "y.mp4"]
    assert all(p.startswith(str(tmp_path / "cache")) for p in (s["source"]["path"] for s in found.sources))
