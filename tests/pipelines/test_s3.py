"""No shared filesystem: `tandem curate` reads its inputs from one S3 bucket and writes
shards and tables to another, against a real S3 server (moto's, on 127.0.0.1), and the
shards read back from there with Ray Data."""

import os
import subprocess
import sys
from pathlib import Path

import pyarrow.parquet as pq
import pytest

from curation.sample_media import make_clip
from training.local_ranks import free_port

pytestmark = pytest.mark.slow  # an S3 server, a local Ray instance, the whole DAG
TANDEM = str(Path(sys.executable).parent / "tandem")


@pytest.fixture(scope="module")
def s3(tmp_path_factory):
    """An S3 server on loopback with buckets raw (two clips and a broken file) and curated."""
    from moto.server import ThreadedMotoServer

    port = free_port()
    server = ThreadedMotoServer(ip_address="127.0.0.1", port=port, verbose=False)
    server.start()
    env = {"AWS_ENDPOINT_URL": f"http://127.0.0.1:{port}", "AWS_ACCESS_KEY_ID": "test",
           "AWS_SECRET_ACCESS_KEY": "test", "AWS_DEFAULT_REGION": "us-east-1"}
    saved = {k: os.environ.get(k) for k in env}
    os.environ.update(env)
    import s3fs

    fs = s3fs.S3FileSystem(skip_instance_cache=True)
    local = tmp_path_factory.mktemp("footage")
    for name, shots in (("two shots.mp4", [1.2, 1.6]), ("one.mp4", [1.5])):
        make_clip(local / name, shots, size=(128, 96))
    (local / "broken.mp4").write_text("not a video")
    fs.mkdir("raw")
    fs.mkdir("curated")
    for path in local.iterdir():
        fs.put_file(str(path), f"raw/footage/{path.name}")
    yield fs, env, port
    for key, value in saved.items():
        if value is None:
            os.environ.pop(key, None)
        else:
            os.environ[key] = value
    server.stop()


@pytest.fixture(scope="module")
def curated(s3):
    fs, env, _ = s3
    proc = subprocess.run([TANDEM, "curate", "s3://raw/footage/", "--out", "s3://curated/run1", "track=false",
                           "skip=[transcribe]"], capture_output=True, text=True, timeout=600,
                          env={**os.environ, **env}, cwd=Path(__file__).parent)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    return fs, proc


@pytest.mark.timeout(700)
def test_inputs_from_one_bucket_outputs_in_another(curated):
    fs, proc = curated
    assert "curated 3 inputs" in proc.stdout
    names = {p.rsplit("/", 1)[1] for p in fs.ls("curated/run1")}
    assert {"shards", "manifest.parquet", "rejects.parquet", "report.html", "stats.json", "config.yaml"} <= names
    with fs.open("curated/run1/manifest.parquet", "rb") as f:
        manifest = pq.read_table(f).to_pylist()
    with fs.open("curated/run1/rejects.parquet", "rb") as f:
        rejects = pq.read_table(f).to_pylist()
    assert {r["source_path"] for r in manifest} == {"s3://raw/footage/two shots.mp4", "s3://raw/footage/one.mp4"}
    assert [(r["source_path"], r["reason"]) for r in rejects if r["source_path"].endswith("broken.mp4")] == [
        ("s3://raw/footage/broken.mp4", "not_media")]
    assert not Path(__file__).parent.joinpath("s3:").exists()  # nothing landed on the local disk instead


@pytest.mark.timeout(300)
def test_shards_read_back_from_the_bucket_with_ray_data(local_ray, curated, s3):
    import pyarrow.fs
    import ray.data

    fs, _ = curated
    _, env, port = s3
    # An explicit filesystem: Ray's workers were started before this server existed.
    bucket = pyarrow.fs.S3FileSystem(endpoint_override=f"127.0.0.1:{port}", scheme="http", access_key="test",
                                     secret_key="test", region="us-east-1")
    rows = ray.data.read_webdataset("curated/run1/shards", filesystem=bucket, decoder=None).take_all()
    with fs.open("curated/run1/manifest.parquet", "rb") as f:
        keys = sorted(r["key"] for r in pq.read_table(f).to_pylist())
    assert sorted(r["__key__"] for r in rows) == keys and len(keys) == 2  # the SMPTE-bars shot is static
    assert all(r["mp4"][4:8] == b"ftyp" and r["flac"][:4] == b"fLaC" for r in rows)
