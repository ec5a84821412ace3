"""Datasets and benchmark sets kept in S3 (``s3://bucket/prefix``), read through boto3.

A dataset prefix holds its files under their relative paths plus ``manifest.json`` (path, size,
sha256 of every file). The manifest is the commit point: :func:`push` deletes it first and writes
it last, so a reader sees either a complete dataset or "no manifest", never a half-uploaded one
that claims to be whole; :func:`pull` verifies every file against it, so a corrupted or replaced
object fails loudly instead of training on wrong pixels.

Training on a cluster reads through :func:`sync_to_cache`: one copy per node under
``$DCKD_CACHE_DIR`` (default ``~/.cache/dckd/s3``), made once under a file lock however many
workers ask, downloaded into a temporary folder and renamed into place. The local copy records
the sha256 of the manifest it came from (``.manifest.json``), so checking that it is current
costs one manifest GET and a ``stat`` per file, not a re-hash of the whole dataset.

boto3 clients do not pickle, so none is stored on a module or object: each call builds its own
in the calling process (:func:`s3_client`). Credentials come only from the standard AWS chain and
never appear in messages.
"""

from __future__ import annotations

import contextlib
import fcntl
import hashlib
import json
import os
import re
import shutil
import sys
import tempfile
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path, PurePosixPath
from typing import Any
from urllib.parse import urlsplit, urlunsplit

import boto3
from boto3.exceptions import Boto3Error, RetriesExceededError, S3UploadFailedError
from boto3.s3.transfer import TransferConfig
from botocore.config import Config
from botocore.exceptions import (
    BotoCoreError,
    ClientError,
    NoCredentialsError,
    PartialCredentialsError,
)
from botocore.exceptions import (
    ConnectionError as BotoConnectionError,
)
from tqdm import tqdm

from dckd.errors import StorageError

MANIFEST_NAME = "manifest.json"
LOCAL_MANIFEST_NAME = ".manifest.json"
MANIFEST_FORMAT = "dckd-dataset-manifest"
MANIFEST_VERSION = 1

_CHUNK = 1 << 20
_MAX_THREADS = 8
_BUCKET_RE = re.compile(r"^[a-z0-9][a-z0-9.\-_]{1,253}[a-z0-9]$")
_NOT_FOUND = {"NoSuchKey", "404", "NotFound"}
_DENIED = {"AccessDenied", "403", "Forbidden", "InvalidAccessKeyId", "SignatureDoesNotMatch",
           "AllAccessDisabled", "AccountProblem", "ExpiredToken", "InvalidToken"}
_SECRET_VARS = ("AWS_SECRET_ACCESS_KEY", "AWS_SESSION_TOKEN", "AWS_ACCESS_KEY_ID")

Manifest = dict[str, Any]
# files are already uploaded a few at a time: keep each file's own multipart concurrency modest
_TRANSFER = TransferConfig(max_concurrency=4)


# --------------------------------------------------------------------------- URIs
def is_remote(uri: str | os.PathLike[str]) -> bool:
    """True for ``s3://`` URIs: the only remote scheme data folders accept."""
    return isinstance(uri, str) and uri.startswith("s3://")


def parse_s3_uri(uri: str) -> tuple[str, str]:
    """``s3://bucket/a/b/`` -> ``("bucket", "a/b")``; the prefix may be empty (bucket root).

    ``.``/``..`` segments are refused because the prefix also names a local cache folder.
    """
    if not isinstance(uri, str) or not uri.startswith("s3://"):
        raise StorageError(f"not an S3 URI (expected s3://bucket/prefix): {uri!r}")
    rest = uri[len("s3://"):]
    if "?" in rest or "#" in rest:
        raise StorageError(f"S3 URI must not carry a query or fragment: {uri!r}")
    bucket, _, prefix = rest.partition("/")
    if not _BUCKET_RE.match(bucket):
        raise StorageError(f"invalid bucket name {bucket!r} in S3 URI {uri!r}")
    parts = [p for p in prefix.split("/") if p]
    if any(p in (".", "..") for p in parts):
        raise StorageError(f"S3 URI must not contain '.' or '..' segments: {uri!r}")
    return bucket, "/".join(parts)


def _key(prefix: str, rel: str) -> str:
    return f"{prefix}/{rel}" if prefix else rel


def _uri(bucket: str, prefix: str) -> str:
    return f"s3://{bucket}/{prefix}" if prefix else f"s3://{bucket}"


# --------------------------------------------------------------------------- client
def s3_client(connect_timeout: float | None = None, read_timeout: float | None = None,
              max_attempts: int | None = None) -> Any:
    """A fresh boto3 S3 client for this process (clients do not pickle; never keep one on an object).

    Endpoint: ``DCKD_S3_ENDPOINT_URL`` (path-style addressing, as MinIO/moto/Ceph expect), else
    boto3's own ``AWS_ENDPOINT_URL_S3``/``AWS_ENDPOINT_URL``. Unset arguments leave botocore's
    defaults, so ``AWS_MAX_ATTEMPTS``/``AWS_RETRY_MODE`` keep working.
    """
    endpoint = os.environ.get("DCKD_S3_ENDPOINT_URL") or None
    options: dict[str, Any] = {}
    if connect_timeout is not None:
        options["connect_timeout"] = connect_timeout
    if read_timeout is not None:
        options["read_timeout"] = read_timeout
    if max_attempts is not None:
        options["retries"] = {"max_attempts": max_attempts, "mode": "standard"}
    if endpoint is not None:
        options["s3"] = {"addressing_style": "path"}
    options["max_pool_connections"] = max(10, _MAX_THREADS + 2)
    session = boto3.session.Session()
    return session.client("s3", endpoint_url=endpoint, config=Config(**options))


def _endpoint(client: Any) -> str:
    """The client's endpoint without any user:password part, for messages."""
    url = str(getattr(client.meta, "endpoint_url", "") or "<default AWS endpoint>")
    parts = urlsplit(url)
    if parts.username or parts.password:
        netloc = parts.netloc.rpartition("@")[2]
        url = urlunsplit(parts._replace(netloc=netloc))
    return url


def _scrub(text: str) -> str:
    """Remove credential values from server-supplied text before it reaches a message."""
    for var in _SECRET_VARS:
        value = os.environ.get(var)
        if value and len(value) >= 4:
            text = text.replace(value, "***")
    return text


def _as_storage_error(exc: BaseException, uri: str, client: Any, what: str,
                      missing: str | None) -> StorageError | None:
    """The one-line :class:`StorageError` for a boto exception, naming ``uri``; None if not boto's."""
    if isinstance(exc, (S3UploadFailedError, RetriesExceededError)) and exc.__context__ is not None:
        # boto3's transfer manager re-raises the client error without ``from``: look through it
        inner = _as_storage_error(exc.__context__, uri, client, what, missing)
        if inner is not None:
            return inner
    if isinstance(exc, ClientError):
        err = exc.response.get("Error", {})
        code = str(err.get("Code", "")) or str(exc.response.get("ResponseMetadata", {}).get("HTTPStatusCode", ""))
        bucket = uri[len("s3://"):].split("/", 1)[0]
        if code == "NoSuchBucket":
            return StorageError(f"{uri}: bucket {bucket!r} does not exist at {_endpoint(client)}")
        if code in _NOT_FOUND:
            return StorageError(missing or f"{uri}: {what}: object not found")
        if code in _DENIED:
            return StorageError(
                f"{uri}: access denied while trying to {what} ({code}); check the AWS credentials "
                "(environment, ~/.aws or instance role) and the bucket policy"
            )
        message = _scrub(str(err.get("Message", "")))
        return StorageError(f"{uri}: S3 error while trying to {what}: {code} {message}".rstrip())
    if isinstance(exc, BotoConnectionError):
        return StorageError(
            f"{uri}: cannot connect to the S3 endpoint {_endpoint(client)} (connection refused or timed "
            "out); check DCKD_S3_ENDPOINT_URL / AWS_ENDPOINT_URL_S3 and that the server is running"
        )
    if isinstance(exc, (NoCredentialsError, PartialCredentialsError)):
        return StorageError(
            f"{uri}: no usable AWS credentials; set AWS_ACCESS_KEY_ID and AWS_SECRET_ACCESS_KEY "
            "or configure a profile"
        )
    if isinstance(exc, (BotoCoreError, Boto3Error)):
        return StorageError(f"{uri}: S3 request failed while trying to {what}: {_scrub(str(exc))}")
    return None


@contextlib.contextmanager
def _translated(uri: str, client: Any, what: str, missing: str | None = None) -> Iterator[None]:
    """Raise boto exceptions as :class:`StorageError` (tracebacks of botocore help no user).

    ``missing``: the message for a missing key (it depends on whether the key is the manifest).
    """
    try:
        yield
    except (ClientError, BotoCoreError, Boto3Error) as exc:
        err = _as_storage_error(exc, uri, client, what, missing)
        if err is None:  # pragma: no cover - every boto exception class is covered above
            raise
        raise err from None


# --------------------------------------------------------------------------- manifests
def _sha256_file(path: Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as fh:
        while chunk := fh.read(_CHUNK):
            h.update(chunk)
    return h.hexdigest()


def _safe_rel(rel: Any, uri: str) -> str:
    """A manifest path that stays inside the destination folder (manifests come from the network)."""
    if not isinstance(rel, str) or not rel or rel.startswith("/") or "\\" in rel:
        raise StorageError(f"{uri}: manifest lists an invalid path {rel!r}")
    parts = PurePosixPath(rel).parts
    if any(p in ("", ".", "..") for p in parts) or rel in (MANIFEST_NAME, LOCAL_MANIFEST_NAME):
        raise StorageError(f"{uri}: manifest lists an invalid path {rel!r}")
    return rel


def _validate_manifest(data: Any, uri: str) -> Manifest:
    if not isinstance(data, dict) or not isinstance(data.get("files"), list):
        raise StorageError(f"{uri}: {MANIFEST_NAME} is malformed (no 'files' list)")
    if data.get("version", MANIFEST_VERSION) > MANIFEST_VERSION:
        raise StorageError(f"{uri}: {MANIFEST_NAME} has version {data['version']}; this dckd reads "
                           f"up to {MANIFEST_VERSION}")
    seen: set[str] = set()
    for entry in data["files"]:
        if (not isinstance(entry, dict) or not isinstance(entry.get("size"), int) or entry["size"] < 0
                or not isinstance(entry.get("sha256"), str) or len(entry["sha256"]) != 64):
            raise StorageError(f"{uri}: {MANIFEST_NAME} has a malformed entry: {entry!r}")
        rel = _safe_rel(entry.get("path"), uri)
        if rel in seen:
            raise StorageError(f"{uri}: {MANIFEST_NAME} lists {rel!r} twice")
        seen.add(rel)
    return data


def manifest_totals(manifest: Manifest) -> tuple[int, int]:
    """(number of files, total bytes) of a manifest, for summaries."""
    files = manifest["files"]
    return len(files), sum(int(f["size"]) for f in files)


def read_manifest(uri: str, client: Any = None) -> Manifest:
    """The validated remote manifest of a dataset prefix."""
    return _fetch_manifest(client or s3_client(), uri)[0]


def _fetch_manifest(client: Any, uri: str) -> tuple[Manifest, str]:
    """(manifest, sha256 of its bytes): the digest says whether a local copy is current."""
    bucket, prefix = parse_s3_uri(uri)
    key = _key(prefix, MANIFEST_NAME)
    missing = (f"{uri}: no dataset manifest (s3://{bucket}/{key} is missing); the prefix is empty or "
               f"was not uploaded with `dckd data push LOCAL_DIR {uri}`")
    with _translated(uri, client, f"read s3://{bucket}/{key}", missing=missing):
        body = client.get_object(Bucket=bucket, Key=key)["Body"].read()
    try:
        data = json.loads(body)
    except (UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise StorageError(f"{uri}: {MANIFEST_NAME} is not valid JSON: {exc}") from None
    return _validate_manifest(data, uri), hashlib.sha256(body).hexdigest()


def local_manifest(folder: str | os.PathLike[str]) -> Manifest | None:
    """The record ``pull``/``sync_to_cache`` left in ``folder`` (source URI, manifest digest, files)."""
    path = Path(folder) / LOCAL_MANIFEST_NAME
    try:
        data = json.loads(path.read_text())
    except (OSError, ValueError):
        return None
    return data if isinstance(data, dict) and isinstance(data.get("files"), list) else None


def _write_local_manifest(folder: Path, uri: str, manifest: Manifest, digest: str) -> None:
    record = {"source": uri, "manifest_sha256": digest, "version": manifest.get("version", MANIFEST_VERSION),
              "files": manifest["files"]}
    tmp = folder / f"{LOCAL_MANIFEST_NAME}.tmp"
    tmp.write_text(json.dumps(record, indent=1))
    os.replace(tmp, folder / LOCAL_MANIFEST_NAME)


# --------------------------------------------------------------------------- progress / threads
def _bar(total: int, desc: str, enabled: bool) -> tqdm:
    return tqdm(total=total, desc=desc, unit="B", unit_scale=True, unit_divisor=1024, file=sys.stderr,
                disable=not enabled or not sys.stderr.isatty(), leave=False)


def _run_all(fn: Callable[[Any], Any], items: list[Any]) -> list[Any]:
    """``fn`` over ``items`` on a few threads (boto3 clients are thread-safe); first error wins."""
    if len(items) <= 1:
        return [fn(x) for x in items]
    pool = ThreadPoolExecutor(max_workers=min(_MAX_THREADS, len(items)))
    try:
        futures = [pool.submit(fn, x) for x in items]
        return [f.result() for f in futures]
    finally:
        pool.shutdown(wait=True, cancel_futures=True)


# --------------------------------------------------------------------------- push
def _local_files(root: Path) -> list[str]:
    """Relative POSIX paths of every regular file under ``root``, sorted; skips our local record."""
    out: list[str] = []
    for dirpath, dirnames, filenames in os.walk(root):
        dirnames.sort()
        for name in filenames:
            path = Path(dirpath) / name
            rel = path.relative_to(root).as_posix()
            if rel == LOCAL_MANIFEST_NAME or not path.is_file():
                continue
            out.append(rel)
    return sorted(out)


def push(local_dir: str | os.PathLike[str], uri: str, progress: bool = True, client: Any = None) -> Manifest:
    """Upload every file under ``local_dir`` to ``uri`` and commit it with ``manifest.json``.

    The old manifest is deleted before the first upload and the new one written after the last,
    so a reader never takes a half-replaced prefix for a complete dataset. Returns the manifest.
    The bucket must exist (a typo should not silently create a new one).
    """
    root = Path(local_dir).expanduser()
    bucket, prefix = parse_s3_uri(uri)
    uri = _uri(bucket, prefix)
    if not root.is_dir():
        raise StorageError(f"cannot push {root} to {uri}: not a directory")
    rels = _local_files(root)
    if not rels:
        raise StorageError(f"cannot push {root} to {uri}: the folder holds no files")
    if MANIFEST_NAME in rels:
        raise StorageError(f"cannot push {root} to {uri}: a top-level {MANIFEST_NAME} would be "
                           "overwritten by the dataset manifest; rename it")
    client = client or s3_client()
    manifest_key = _key(prefix, MANIFEST_NAME)
    with _translated(uri, client, "remove the previous manifest"):
        client.delete_object(Bucket=bucket, Key=manifest_key)

    total = sum((root / r).stat().st_size for r in rels)
    with _bar(total, f"push {uri}", progress) as bar:
        def upload(rel: str) -> dict[str, Any]:
            path = root / rel
            entry = {"path": rel, "size": path.stat().st_size, "sha256": _sha256_file(path)}
            key = _key(prefix, rel)
            with _translated(uri, client, f"upload s3://{bucket}/{key}"):
                client.upload_file(str(path), bucket, key, Callback=bar.update, Config=_TRANSFER)
            return entry

        entries = _run_all(upload, rels)

    manifest: Manifest = {"format": MANIFEST_FORMAT, "version": MANIFEST_VERSION,
                          "files": sorted(entries, key=lambda e: e["path"])}
    body = json.dumps(manifest, indent=1, sort_keys=True).encode()
    with _translated(uri, client, f"write s3://{bucket}/{manifest_key}"):
        client.put_object(Bucket=bucket, Key=manifest_key, Body=body, ContentType="application/json")
    return manifest


# --------------------------------------------------------------------------- pull
def _download(client: Any, uri: str, bucket: str, prefix: str, entry: dict[str, Any], dest: Path,
              bar: tqdm) -> None:
    """Stream one object to ``dest`` via a ``.part`` file, hashing on the way; verify, then rename."""
    rel = entry["path"]
    key = _key(prefix, rel)
    target = dest / rel
    target.parent.mkdir(parents=True, exist_ok=True)
    part = target.with_name(f".{target.name}.part")
    h = hashlib.sha256()
    size = 0
    missing = f"{uri}: s3://{bucket}/{key} is listed in the manifest but missing; push the dataset again"
    try:
        with _translated(uri, client, f"download s3://{bucket}/{key}", missing=missing):
            body = client.get_object(Bucket=bucket, Key=key)["Body"]
            with open(part, "wb") as fh:
                for chunk in body.iter_chunks(_CHUNK):
                    fh.write(chunk)
                    h.update(chunk)
                    size += len(chunk)
                    bar.update(len(chunk))
        if size != entry["size"]:
            raise StorageError(f"{uri}: s3://{bucket}/{key} has {size} bytes, the manifest says "
                               f"{entry['size']}; the object was changed or corrupted after the push")
        if h.hexdigest() != entry["sha256"]:
            raise StorageError(f"{uri}: s3://{bucket}/{key} fails its sha256 check (manifest "
                               f"{entry['sha256'][:12]}..., got {h.hexdigest()[:12]}...); the object was "
                               "changed or corrupted after the push")
        os.replace(part, target)
    finally:
        part.unlink(missing_ok=True)


def _fill(client: Any, uri: str, manifest: Manifest, dest: Path, progress: bool,
          reuse: Callable[[dict[str, Any], Path], bool]) -> None:
    """Make ``dest`` hold every manifest file: ``reuse`` places a known-good local copy, else download."""
    bucket, prefix = parse_s3_uri(uri)
    todo = [e for e in manifest["files"] if not reuse(e, dest / e["path"])]
    with _bar(sum(e["size"] for e in todo), f"pull {uri}", progress) as bar:
        _run_all(lambda e: _download(client, uri, bucket, prefix, e, dest, bar), todo)


def pull(uri: str, local_dir: str | os.PathLike[str], progress: bool = True, client: Any = None) -> Path:
    """Download the dataset at ``uri`` into ``local_dir``, verifying size and sha256 of every file.

    Files already present with the right size and checksum are kept. A ``.manifest.json`` record
    is left in ``local_dir`` (``dckd data push`` skips it). Returns ``local_dir``.
    """
    bucket, prefix = parse_s3_uri(uri)
    uri = _uri(bucket, prefix)
    dest = Path(local_dir).expanduser()
    client = client or s3_client()
    manifest, digest = _fetch_manifest(client, uri)
    dest.mkdir(parents=True, exist_ok=True)

    def already_there(entry: dict[str, Any], path: Path) -> bool:
        return (path.is_file() and path.stat().st_size == entry["size"]
                and _sha256_file(path) == entry["sha256"])

    _fill(client, uri, manifest, dest, progress, already_there)
    _write_local_manifest(dest, uri, manifest, digest)
    return dest


# --------------------------------------------------------------------------- node cache
def cache_root_dir(cache_root: str | os.PathLike[str] | None = None) -> Path:
    """``cache_root``, else ``$DCKD_CACHE_DIR``, else ``~/.cache/dckd/s3``."""
    if cache_root is None:
        cache_root = os.environ.get("DCKD_CACHE_DIR") or Path.home() / ".cache" / "dckd" / "s3"
    return Path(cache_root).expanduser()


def cache_dir_for(uri: str, cache_root: str | os.PathLike[str] | None = None) -> Path:
    """The node-local folder for ``uri``: ``<root>/<bucket>/<prefix_slug>-<hash>``.

    Flat, not nested like the prefix: caching ``s3://b/x`` must not replace the cache of
    ``s3://b/x/y`` when it is swapped in, and the hash keeps ``a/b`` and ``a_b`` apart.
    """
    bucket, prefix = parse_s3_uri(uri)
    slug = re.sub(r"[^A-Za-z0-9._-]+", "_", prefix.replace("/", "_"))[-80:] or "_root"
    tag = hashlib.sha256(f"{bucket}/{prefix}".encode()).hexdigest()[:12]
    return cache_root_dir(cache_root) / bucket / f"{slug}-{tag}"


def _cache_current(folder: Path, digest: str) -> bool:
    """The local copy came from this exact manifest and every file has its recorded size."""
    record = local_manifest(folder)
    if record is None or record.get("manifest_sha256") != digest:
        return False
    try:
        return all((folder / e["path"]).stat().st_size == e["size"] for e in record["files"])
    except (OSError, KeyError, TypeError):
        return False


@contextlib.contextmanager
def _locked(lock_path: Path) -> Iterator[None]:
    """An exclusive ``flock``: concurrent workers on one node wait instead of syncing twice."""
    with open(lock_path, "a+") as fh:
        fcntl.flock(fh.fileno(), fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(fh.fileno(), fcntl.LOCK_UN)


def sync_to_cache(uri: str, cache_root: str | os.PathLike[str] | None = None, progress: bool = True,
                  client: Any = None) -> Path:
    """The node-local copy of the dataset at ``uri``, downloaded only if missing or out of date.

    Under a lock, the remote manifest's digest is compared with the one recorded locally; when
    they differ the dataset is built in a temporary sibling folder (unchanged files are hard-linked
    from the old copy) and swapped in by rename. A process still reading the old copy while another
    swaps a new version in can lose files: re-pushing a dataset under a running job is not supported.
    """
    bucket, prefix = parse_s3_uri(uri)
    uri = _uri(bucket, prefix)
    dest = cache_dir_for(uri, cache_root)
    try:
        dest.parent.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise StorageError(f"{uri}: cannot create the cache folder {dest.parent}: {exc}") from None
    client = client or s3_client()
    with _locked(dest.parent / f".{dest.name}.lock"):
        manifest, digest = _fetch_manifest(client, uri)
        if _cache_current(dest, digest):
            return dest
        old = local_manifest(dest) if dest.is_dir() else None
        old_files = {e.get("path"): e for e in old["files"] if isinstance(e, dict)} if old else {}

        def link_old(entry: dict[str, Any], path: Path) -> bool:
            prev = old_files.get(entry["path"])
            src = dest / entry["path"]
            if prev is None or prev.get("sha256") != entry["sha256"]:
                return False
            try:
                if src.stat().st_size != entry["size"]:
                    return False
                path.parent.mkdir(parents=True, exist_ok=True)
                try:
                    os.link(src, path)
                except OSError:
                    shutil.copy2(src, path)
            except OSError:
                return False
            return True

        tmp = Path(tempfile.mkdtemp(prefix=f".{dest.name}.tmp-", dir=dest.parent))
        try:
            _fill(client, uri, manifest, tmp, progress, link_old)
            _write_local_manifest(tmp, uri, manifest, digest)
            swap_in(tmp, dest)
        finally:
            if tmp.exists():
                shutil.rmtree(tmp, ignore_errors=True)
    return dest


def resolve_local(path_or_uri: str | os.PathLike[str]) -> Path:
    """A folder on this machine: local paths as given (``~`` expanded), S3 URIs via the node cache."""
    if is_remote(path_or_uri):
        return sync_to_cache(str(path_or_uri))
    return Path(path_or_uri).expanduser()


def swap_in(staging: Path, final: Path) -> None:
    """Replace the folder ``final`` by ``staging`` with renames (the old copy is removed afterwards)."""
    if final.exists():
        trash = Path(tempfile.mkdtemp(prefix=f".{final.name}.old-", dir=final.parent))
        os.rename(final, trash / "data")
        os.rename(staging, final)
        shutil.rmtree(trash, ignore_errors=True)
    else:
        os.rename(staging, final)
