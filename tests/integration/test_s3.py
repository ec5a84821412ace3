"""Datasets in S3 (moto server on loopback): push/pull, checksums, node cache, training, errors, CLI."""

from __future__ import annotations

import hashlib
import json
import socket
import threading
import time
from pathlib import Path
from typing import Any

import pytest
from botocore.stub import Stubber

from dckd import storage
from dckd.cli import main
from dckd.config import load_config
from dckd.errors import StorageError
from dckd.imageio import write_image
from dckd.training.loop import train_local
from tests.conftest import photo_crops, tiny_config_dict


def _dataset(folder: Path) -> Path:
    """Real photograph crops, one in a subfolder so pushes are checked to recurse."""
    crops = photo_crops(size=32, count=4)
    for i, img in enumerate(crops[:3]):
        write_image(folder / f"img{i}.png", img)
    write_image(folder / "extra" / "img3.png", crops[3])
    return folder


def _files(folder: Path) -> dict[str, bytes]:
    return {p.relative_to(folder).as_posix(): p.read_bytes() for p in sorted(folder.rglob("*"))
            if p.is_file() and p.name != storage.LOCAL_MANIFEST_NAME}


def _counting_client() -> tuple[Any, list[str]]:
    """A client that records the key of every GetObject it sends (to prove what was downloaded)."""
    client = storage.s3_client()
    keys: list[str] = []
    client.meta.events.register("before-parameter-build.s3.GetObject",
                                lambda params, **_: keys.append(f"{params['Bucket']}/{params['Key']}"))
    return client, keys


def _closed_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def test_parse_s3_uri() -> None:
    assert storage.parse_s3_uri("s3://bucket/a/b/") == ("bucket", "a/b")
    assert storage.parse_s3_uri("s3://bucket") == ("bucket", "")
    assert storage.is_remote("s3://b/x") and not storage.is_remote("/data/x")
    for bad in ("/local/path", "s3://", "s3://Bad_Bucket/x", "s3://bucket/../x", "s3://bucket/x?y=1"):
        with pytest.raises(StorageError):
            storage.parse_s3_uri(bad)
    a, b = storage.cache_dir_for("s3://bkt/x", "/c"), storage.cache_dir_for("s3://bkt/x/y", "/c")
    assert a.parent == b.parent == Path("/c/bkt") and a != b  # flat: one never inside the other


def test_push_pull_round_trip_verifies_checksums(tmp_path: Path, bucket: str) -> None:
    src = _dataset(tmp_path / "src")
    uri = f"s3://{bucket}/sets/crops"
    manifest = storage.push(src, uri, progress=False)

    local = _files(src)
    assert [e["path"] for e in manifest["files"]] == sorted(local)
    for e in manifest["files"]:
        assert e["size"] == len(local[e["path"]])
        assert e["sha256"] == hashlib.sha256(local[e["path"]]).hexdigest()
    s3 = storage.s3_client()
    remote = json.loads(s3.get_object(Bucket=bucket, Key="sets/crops/manifest.json")["Body"].read())
    assert remote == manifest

    out = storage.pull(uri, tmp_path / "out", progress=False)
    assert _files(out) == local
    assert storage.manifest_totals(manifest) == (4, sum(len(b) for b in local.values()))


def test_corrupted_object_fails_pull_naming_the_key(tmp_path: Path, bucket: str) -> None:
    src = _dataset(tmp_path / "src")
    uri = f"s3://{bucket}/crops"
    storage.push(src, uri, progress=False)
    s3 = storage.s3_client()
    data = bytearray((src / "img1.png").read_bytes())
    data[len(data) // 2] ^= 0xFF  # same size: only the checksum can catch it
    s3.put_object(Bucket=bucket, Key="crops/img1.png", Body=bytes(data))
    with pytest.raises(StorageError, match=rf"s3://{bucket}/crops/img1\.png.*sha256"):
        storage.pull(uri, tmp_path / "out", progress=False)
    assert not (tmp_path / "out" / "img1.png").exists()  # nothing unverified under the real name

    s3.put_object(Bucket=bucket, Key="crops/extra/img3.png", Body=b"not the image")
    with pytest.raises(StorageError, match=rf"s3://{bucket}/crops/extra/img3\.png"):
        storage.sync_to_cache(uri, progress=False)


def test_training_reads_dataset_from_s3_through_node_cache(tmp_path: Path, bucket: str) -> None:
    src = _dataset(tmp_path / "hr")
    uri = f"s3://{bucket}/train/hr"
    storage.push(src, uri, progress=False)

    cfg_dict = tiny_config_dict(src, tmp_path / "runs", method="scratch", iterations=2)
    cfg_dict["data"]["train"]["hr_dir"] = uri
    cfg_dict["data"]["val"][0]["hr_dir"] = uri
    summary = train_local(load_config(data=cfg_dict), progress=False)
    assert summary["finished"] and summary["iteration"] == 2
    assert summary["val"]["crops"]["psnr"] > 10

    cached = storage.cache_dir_for(uri)
    assert cached.parent.parent == tmp_path / "s3-cache"  # DCKD_CACHE_DIR
    assert _files(cached) == _files(src)

    mtimes = {p: p.stat().st_mtime_ns for p in cached.rglob("*.png")}
    client, keys = _counting_client()
    assert storage.sync_to_cache(uri, client=client, progress=False) == cached
    assert keys == [f"{bucket}/train/hr/manifest.json"]  # the manifest only: nothing re-downloaded
    assert {p: p.stat().st_mtime_ns for p in cached.rglob("*.png")} == mtimes


def test_repush_refreshes_cache_downloading_only_changed_files(tmp_path: Path, bucket: str) -> None:
    src = _dataset(tmp_path / "src")
    uri = f"s3://{bucket}/crops"
    storage.push(src, uri, progress=False)
    cached = storage.sync_to_cache(uri, progress=False)

    write_image(src / "img0.png", photo_crops(size=24, count=1)[0])
    storage.push(src, uri, progress=False)
    client, keys = _counting_client()
    assert storage.sync_to_cache(uri, client=client, progress=False) == cached
    assert sorted(keys) == [f"{bucket}/crops/img0.png", f"{bucket}/crops/manifest.json"]
    assert _files(cached) == _files(src)
    assert not [p for p in cached.parent.iterdir() if p.name.startswith(f".{cached.name}.") and p.is_dir()]


def test_concurrent_syncs_on_one_node_download_once(tmp_path: Path, bucket: str) -> None:
    uri = f"s3://{bucket}/crops"
    storage.push(_dataset(tmp_path / "src"), uri, progress=False)
    results: list[Path] = []
    all_keys: list[list[str]] = []

    def worker() -> None:
        client, keys = _counting_client()
        all_keys.append(keys)
        results.append(storage.sync_to_cache(uri, client=client, progress=False))

    threads = [threading.Thread(target=worker) for _ in range(3)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert len(results) == 3 and len(set(results)) == 1
    downloads = [k for keys in all_keys for k in keys if not k.endswith("manifest.json")]
    assert sorted(downloads) == sorted(f"{bucket}/crops/{r}" for r in _files(tmp_path / "src"))


def test_missing_bucket_and_missing_manifest(tmp_path: Path, bucket: str) -> None:
    uri = "s3://dckd-no-such-bucket-0/crops"
    with pytest.raises(StorageError, match=rf"{uri}.*bucket 'dckd-no-such-bucket-0' does not exist"):
        storage.pull(uri, tmp_path / "out", progress=False)
    with pytest.raises(StorageError, match=uri):
        storage.push(_dataset(tmp_path / "src"), uri, progress=False)

    empty = f"s3://{bucket}/never/pushed"
    with pytest.raises(StorageError, match=rf"{empty}: no dataset manifest.*dckd data push") as err:
        storage.resolve_local(empty)
    assert "testing-secret-key" not in str(err.value) and "testing-access-key" not in str(err.value)


def test_refused_connection_fails_fast_naming_uri_and_endpoint(
    tmp_path: Path, s3_endpoint: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    endpoint = f"http://127.0.0.1:{_closed_port()}"
    monkeypatch.setenv("DCKD_S3_ENDPOINT_URL", endpoint)
    client = storage.s3_client(connect_timeout=1, read_timeout=2, max_attempts=1)
    uri = "s3://some-bucket/data"
    tic = time.perf_counter()
    with pytest.raises(StorageError, match=rf"{uri}: cannot connect to the S3 endpoint {endpoint}"):
        storage.pull(uri, tmp_path / "out", progress=False, client=client)
    with pytest.raises(StorageError, match=uri):
        storage.sync_to_cache(uri, client=client, progress=False)
    assert time.perf_counter() - tic < 10


def test_cli_data_push_and_pull(tmp_path: Path, bucket: str, capsys: pytest.CaptureFixture[str]) -> None:
    src = _dataset(tmp_path / "src")
    uri = f"s3://{bucket}/cli/crops"
    total = sum(len(b) for b in _files(src).values())
    assert main(["data", "push", str(src), uri, "--no-progress"]) == 0
    assert f"pushed 4 files, {total} bytes" in capsys.readouterr().out
    assert main(["data", "pull", uri, str(tmp_path / "out"), "--no-progress"]) == 0
    assert f"pulled 4 files, {total} bytes" in capsys.readouterr().out
    assert _files(tmp_path / "out") == _files(src)

    assert main(["data", "pull", f"s3://{bucket}/nothing", str(tmp_path / "x")]) == 2
    err = capsys.readouterr().err
    assert err.startswith("dckd data: error:") and f"s3://{bucket}/nothing" in err and "data push" in err


def test_denied_and_server_errors_name_uri_without_credentials(
    tmp_path: Path, s3_endpoint: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    uri = "s3://private-bucket/data"
    client = storage.s3_client()
    with Stubber(client) as stub:
        stub.add_client_error("get_object", service_error_code="AccessDenied", http_status_code=403)
        stub.add_client_error("get_object", service_error_code="InternalError", http_status_code=500,
                              service_message="signed with testing-secret-key by testing-access-key")
        with pytest.raises(StorageError, match=rf"{uri}: access denied"):
            storage.pull(uri, tmp_path / "out", progress=False, client=client)
        with pytest.raises(StorageError, match=rf"{uri}: S3 error .*InternalError") as err:
            storage.pull(uri, tmp_path / "out", progress=False, client=client)
    assert "testing-secret-key" not in str(err.value) and "testing-access-key" not in str(err.value)

    for var in ("AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY"):
        monkeypatch.delenv(var)
    monkeypatch.setenv("AWS_EC2_METADATA_DISABLED", "true")
    with pytest.raises(StorageError, match=rf"{uri}: no usable AWS credentials"):
        storage.pull(uri, tmp_path / "out", progress=False)
