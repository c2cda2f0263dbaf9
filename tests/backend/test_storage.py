"""The blob store seam (contracts/storage/): the file store and the S3 store against a real
S3-compatible server (moto in server mode on loopback), with the same tests."""

from __future__ import annotations

import hashlib
import os
import secrets
import threading
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path

import boto3
import pytest
from botocore.config import Config

import contracts.storage.files
import contracts.storage.s3
from contracts.settings import Settings, SettingsError, load_settings
from contracts.storage import (
    BlobNotFound,
    BlobStore,
    FileStore,
    InvalidStorageUrl,
    S3Store,
    StorageUnavailable,
    mask_key,
    open_store,
    parse_storage_url,
    upload_key,
)
from tests.harness import free_port
from tests.s3server import MotoServer, moto_server


@pytest.fixture(scope="module")
def moto(tmp_path_factory: pytest.TempPathFactory) -> Iterator[MotoServer]:
    with moto_server(tmp_path_factory.mktemp("moto")) as server:
        yield server


@pytest.fixture(scope="module")
def aws_env(moto: MotoServer) -> Iterator[MotoServer]:
    """``AWS_*`` pointing at the moto server while this module's stores are opened."""
    with pytest.MonkeyPatch.context() as mp:
        for name, value in moto.env.items():
            mp.setenv(name, value)
        yield moto


@dataclass
class Case:
    """A fresh empty store and a way to list what it holds (object names and temp files)."""

    blobs: BlobStore
    names: Callable[[], set[str]]


@pytest.fixture(params=["file", "s3"])
def store(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[Case]:
    if request.param == "file":
        root = tmp_path / "store"
        yield Case(
            FileStore(root),
            lambda: {str(p.relative_to(root)) for p in root.rglob("*") if p.is_file()},
        )
        return
    moto: MotoServer = request.getfixturevalue("aws_env")
    bucket = moto.create_bucket(f"blobs-{secrets.token_hex(4)}")
    prefix = "cellseg/test/"
    s3 = open_store(f"s3://{bucket}/{prefix}")
    assert isinstance(s3, S3Store)
    yield Case(s3, lambda: {k[len(prefix) :] for k in moto.keys(bucket, prefix)})
    s3.close()


# --- URLs and settings ---------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("url", "scheme", "where"),
    [
        ("file:///var/lib/cellseg", "file", "/var/lib/cellseg"),
        ("file://localhost/srv/x", "file", "/srv/x"),
        ("s3://cellseg-data", "s3", "cellseg-data/"),
        ("s3://cellseg-data/prod/uploads/", "s3", "cellseg-data/prod/uploads"),
    ],
)
def test_parse_storage_url(url: str, scheme: str, where: str) -> None:
    loc = parse_storage_url(url)
    assert loc.scheme == scheme
    got = str(loc.path) if scheme == "file" else f"{loc.bucket}/{loc.prefix}"
    assert got == where


@pytest.mark.parametrize(
    ("url", "words"),
    [
        ("ftp://host/x", "unknown storage scheme"),
        ("var/uploads", "unknown storage scheme"),
        ("s3://", "names no bucket"),
        ("s3:///prefix", "names no bucket"),
        ("s3://ab/x", "not a valid bucket name"),
        ("s3://Upper_Case/x", "not a valid bucket name"),
        ("s3://bucket/../x", "not safe"),
        ("file://relative/path", "names a host"),
        ("file:///", "absolute directory"),
    ],
)
def test_invalid_storage_urls_are_refused(url: str, words: str) -> None:
    with pytest.raises(InvalidStorageUrl, match=words):
        parse_storage_url(url)


def test_invalid_storage_url_stops_startup_naming_the_variable(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setenv("STORAGE_URL", "s3:///no-bucket")
    with pytest.raises(SettingsError, match="STORAGE_URL.*names no bucket"):
        load_settings()
    monkeypatch.setenv("STORAGE_URL", "gs://bucket/x")
    with pytest.raises(SettingsError, match="STORAGE_URL.*unknown storage scheme"):
        load_settings()


def test_default_store_is_the_upload_dir(tmp_path: Path) -> None:
    settings = Settings(upload_dir=tmp_path / "up load%")
    store = open_store(settings.storage_location)
    assert isinstance(store, FileStore)
    assert store.root == (tmp_path / "up load%").resolve()
    s3 = Settings(storage_url="s3://bucket-name/p/")
    assert s3.storage_location == "s3://bucket-name/p"


def test_keys() -> None:
    sha = hashlib.sha256(b"x").hexdigest()
    assert upload_key(sha) == sha
    assert mask_key(sha) == f"masks/{sha}"


# --- both stores ---------------------------------------------------------------------------------


def test_put_get_exists_delete(store: Case) -> None:
    blobs = store.blobs
    data = secrets.token_bytes(1000)
    key = upload_key(hashlib.sha256(data).hexdigest())
    mkey = mask_key(hashlib.sha256(b"mask").hexdigest())
    assert not blobs.exists(key)
    blobs.put_bytes(key, data)
    blobs.put_bytes(mkey, b"mask")
    assert blobs.exists(key) and blobs.exists(mkey)
    assert blobs.get(key) == data and blobs.get(mkey) == b"mask"
    assert store.names() == {key, mkey}
    assert blobs.delete([key, mkey, "never-stored"]) == 3  # missing keys are skipped
    assert not blobs.exists(key) and not blobs.exists(mkey)
    assert store.names() == set()
    with pytest.raises(BlobNotFound) as err:
        blobs.get(key)
    assert err.value.key == key


def test_put_file_leaves_the_source(store: Case, tmp_path: Path) -> None:
    blobs = store.blobs
    source = tmp_path / "spooled.part"
    data = secrets.token_bytes(200_000)
    source.write_bytes(data)
    key = hashlib.sha256(data).hexdigest()
    blobs.put_file(key, source)
    assert blobs.get(key) == data
    assert source.read_bytes() == data


def test_a_failed_put_leaves_no_object(store: Case, tmp_path: Path) -> None:
    blobs = store.blobs
    with pytest.raises(StorageUnavailable):
        blobs.put_file("k" * 64, tmp_path / "does-not-exist")
    with pytest.raises(StorageUnavailable):
        blobs.put_file("d" * 64, tmp_path)  # a directory: reading it fails
    assert store.names() == set()  # no object, no temp file


def test_concurrent_puts_of_one_key_store_it_once(store: Case, tmp_path: Path) -> None:
    blobs = store.blobs
    data = secrets.token_bytes(300_000)
    key = hashlib.sha256(data).hexdigest()
    sources = []
    for i in range(4):
        sources.append(tmp_path / f"src{i}")
        sources[-1].write_bytes(data)
    with ThreadPoolExecutor(8) as pool:
        futures = [pool.submit(blobs.put_file, key, s) for s in sources]
        futures += [pool.submit(blobs.put_bytes, key, data) for _ in range(4)]
        for f in futures:
            f.result()
    assert blobs.get(key) == data
    assert store.names() == {key}


def test_readers_see_the_whole_object_or_none(store: Case) -> None:
    blobs = store.blobs
    data = secrets.token_bytes(8 * 1024 * 1024)
    key = hashlib.sha256(data).hexdigest()
    seen: list[int] = []
    done = threading.Event()

    def read() -> None:
        while not done.is_set():
            try:
                seen.append(len(blobs.get(key)))
            except BlobNotFound:
                seen.append(0)

    reader = threading.Thread(target=read)
    reader.start()
    try:
        blobs.put_bytes(key, data)
    finally:
        done.set()
        reader.join(30)
    assert set(seen) <= {0, len(data)}
    assert blobs.get(key) == data


@pytest.mark.parametrize("key", ["../escape", "/abs", "a//b", "", "masks/../../x", ".hidden"])
def test_unsafe_keys_are_refused(store: Case, key: str) -> None:
    with pytest.raises(ValueError, match="invalid blob key"):
        store.blobs.put_bytes(key, b"x")


# --- the file store ------------------------------------------------------------------------------


def test_file_store_layout_and_permissions(tmp_path: Path) -> None:
    blobs = FileStore(tmp_path)
    source = tmp_path / ".upload-x.part"
    source.write_bytes(b"upload")
    os.chmod(source, 0o600)
    sha = hashlib.sha256(b"upload").hexdigest()
    blobs.put_file(upload_key(sha), source)
    blobs.put_bytes(mask_key(sha), b"mask")
    assert (tmp_path / sha).read_bytes() == b"upload"  # UPLOAD_DIR/<sha256>, as before
    assert (tmp_path / "masks" / sha).read_bytes() == b"mask"
    assert (tmp_path / sha).stat().st_mode & 0o777 == 0o644
    assert (tmp_path / "masks" / sha).stat().st_mode & 0o777 == 0o644


def test_file_store_failure_midway_removes_its_temp(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    blobs = FileStore(tmp_path)

    def full_disk(path: Path) -> None:
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(contracts.storage.files, "_fsync_path", full_disk)
    with pytest.raises(StorageUnavailable, match="No space left"):
        blobs.put_bytes("k" * 64, b"data")
    assert list(tmp_path.iterdir()) == []


# --- the S3 store --------------------------------------------------------------------------------


def test_s3_store_without_its_bucket_is_unavailable(aws_env: MotoServer) -> None:
    blobs = open_store(f"s3://missing-{secrets.token_hex(4)}/x")
    assert not blobs.exists("a" * 64)  # S3 answers 404 for a HEAD in a missing bucket
    with pytest.raises(StorageUnavailable, match="NoSuchBucket"):
        blobs.put_bytes("a" * 64, b"data")
    with pytest.raises(StorageUnavailable, match="NoSuchBucket"):
        blobs.get("a" * 64)


def test_s3_store_that_cannot_be_reached_is_unavailable(tmp_path: Path) -> None:
    dead = f"http://127.0.0.1:{free_port()}"  # nothing listens there
    client = boto3.client(
        "s3",
        endpoint_url=dead,
        aws_access_key_id="x",
        aws_secret_access_key="x",
        region_name="us-east-1",
        config=Config(retries={"max_attempts": 1}, connect_timeout=1),
    )
    blobs = S3Store("any-bucket", "", client)
    source = tmp_path / "f"
    source.write_bytes(b"data")
    for call in (
        lambda: blobs.exists("a" * 64),
        lambda: blobs.get("a" * 64),
        lambda: blobs.put_bytes("a" * 64, b"data"),
        lambda: blobs.put_file("a" * 64, source),
        lambda: blobs.delete(["a" * 64]),
    ):
        with pytest.raises(StorageUnavailable, match="any-bucket"):
            call()
    client.close()


def test_s3_batch_delete_spans_chunks(aws_env: MotoServer, monkeypatch: pytest.MonkeyPatch) -> None:
    bucket = aws_env.create_bucket(f"chunks-{secrets.token_hex(4)}")
    blobs = open_store(f"s3://{bucket}")
    keys = [mask_key(f"{i:064x}") for i in range(7)]
    for key in keys:
        blobs.put_bytes(key, b"m")
    monkeypatch.setattr(contracts.storage.s3, "S3_DELETE_CHUNK", 3)
    assert blobs.delete(keys) == 7
    assert aws_env.keys(bucket) == set()
