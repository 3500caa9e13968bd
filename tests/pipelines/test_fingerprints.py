"""Content ids with a stat cache (pipelines/fingerprints.py): a file only touched keeps its
id without a hash when nothing about it changed, gets it back from a hash when its mtime
changed, and a changed byte is found even when the mtime is set back. Messages stored as
data (curation.ffmpeg.stable_message) hold nothing that differs from run to run."""

import os
import time

import fsspec
import pytest

from curation.ffmpeg import ffprobe, stable_message
from pipelines import fingerprints
from pipelines.fingerprints import content_ids


@pytest.fixture
def hashes(monkeypatch):
    """The paths hashed, in order; files count as settled 10 ms after their last change."""
    hashed = []
    real = fingerprints.content_id

    def counting(path, *args):
        hashed.append(os.path.basename(path))
        return real(path, *args)

    monkeypatch.setattr(fingerprints, "content_id", counting)
    monkeypatch.setattr(fingerprints, "SETTLED_S", 0.01)
    return hashed


def listing(*paths):
    return [{"path": str(p), "size": p.stat().st_size} for p in paths]


def test_unchanged_files_are_not_hashed_again_and_touched_ones_keep_their_id(tmp_path, hashes):
    a, b = tmp_path / "a.mp4", tmp_path / "b.mp4"
    a.write_bytes(b"a" * 1000)
    b.write_bytes(b"b" * 1000)
    time.sleep(0.05)
    ids, remembered = content_ids(listing(a, b))
    assert sorted(hashes) == ["a.mp4", "b.mp4"] and ids[str(a)] != ids[str(b)]

    hashes.clear()
    assert content_ids(listing(a, b), remembered)[0] == ids and hashes == []  # the fast path

    os.utime(a, ns=(a.stat().st_atime_ns, a.stat().st_mtime_ns + 10**9))  # touched: new mtime, same bytes
    again, remembered = content_ids(listing(a, b), remembered)
    assert again == ids and hashes == ["a.mp4"]


def test_a_changed_byte_is_found_even_with_its_mtime_set_back(tmp_path, hashes):
    a = tmp_path / "a.mp4"
    a.write_bytes(b"a" * 1000)
    time.sleep(0.05)
    ids, remembered = content_ids(listing(a))
    st = a.stat()
    with open(a, "r+b") as f:  # one byte, in place: same size, same inode
        f.seek(500)
        f.write(b"X")
    os.utime(a, ns=(st.st_atime_ns, st.st_mtime_ns))  # the old mtime back; ctime cannot be set
    assert a.stat().st_size == st.st_size and a.stat().st_mtime_ns == st.st_mtime_ns
    hashes.clear()
    changed, _ = content_ids(listing(a), remembered)
    assert hashes == ["a.mp4"] and changed[str(a)] != ids[str(a)]


def test_a_file_changed_just_before_its_hash_is_not_remembered(tmp_path, monkeypatch):
    a = tmp_path / "a.mp4"
    a.write_bytes(b"fresh")
    monkeypatch.setattr(fingerprints, "SETTLED_S", 3600.0)  # it might change again in the same tick
    ids, remembered = content_ids(listing(a))
    assert ids[str(a)] and remembered == {}  # hashed again next time


def test_objects_are_named_by_the_stores_checksum_or_by_their_streamed_bytes():
    fsspec.filesystem("memory").pipe("/fp/x.mp4", b"remote")
    ids, remembered = content_ids([{"path": "memory:///fp/x.mp4", "size": 6},
                                   {"path": "s3://b/y.mp4", "size": 9, "checksum": '"9b2cf535f27731c9"'}])
    assert ids["s3://b/y.mp4"] == "etag-9b2cf535f27731c9"
    assert ids["memory:///fp/x.mp4"] == content_ids([{"path": "memory:///fp/x.mp4", "size": 6}])[0][
        "memory:///fp/x.mp4"] and not remembered


def test_an_unreadable_file_gets_an_unreadable_id(tmp_path):
    ids, _ = content_ids([{"path": str(tmp_path / "gone.mp4"), "size": 1}])
    assert ids[str(tmp_path / "gone.mp4")].startswith("unreadable-")


def test_stored_messages_hold_no_address_temporary_folder_or_time(tmp_path):
    import tempfile

    scratch = tempfile.mkdtemp(prefix="tandem-curate-123-")
    text = (f"ffprobe failed on {scratch}/inputs/5f0c.mp4: [mov,mp4,m4a,3gp,3g2,mj2 @ 0x2b374380] moov atom "
            "not found at 2024-05-01T12:00:03.5Z by <Decoder object at 0x7f3a12bc>")
    assert stable_message(text) == ("ffprobe failed on <tmp>/inputs/5f0c.mp4: [mov,mp4,m4a,3gp,3g2,mj2] moov atom "
                                    "not found at <time> by <Decoder object>")
    os.rmdir(scratch)
    mine = f"{tempfile.gettempdir()}/my-footage/clips-00000.tar: cut short"  # not a folder tandem made
    assert stable_message(mine) == mine


def test_ffprobe_messages_are_the_same_in_every_run(headless_mp4):
    from curation.ffmpeg import FFmpegError

    messages = set()
    for _ in range(2):
        with pytest.raises(FFmpegError) as failure:
            ffprobe(headless_mp4)
        messages.add(str(failure.value))
    [message] = messages
    assert "moov atom not found" in message and "0x" not in message
