"""``dckd data prepare`` with the downloads in S3 and ``--push`` of the result (moto server)."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from dckd import storage
from dckd.cli import main
from dckd.data.prepare import Options, prepare
from tests.unit.test_prepare import check_manifest, fake_downloads


def test_prepare_from_s3_and_push(tmp_path: Path, bucket: str, monkeypatch: pytest.MonkeyPatch,
                                  capsys: pytest.CaptureFixture) -> None:
    raw, prepared = f"s3://{bucket}/raw", f"s3://{bucket}/prepared"
    storage.push(fake_downloads(tmp_path / "downloads"), raw, progress=False)
    out = tmp_path / "data"
    code = main(["data", "prepare", "set5", "test100", "--source", raw, "--root", str(out), "--push", prepared,
                 "--no-progress", "--workers", "1", "--allow-partial"])
    text = capsys.readouterr().out
    assert code == 0, text
    assert f"Set5: prepared 5 HR images from {raw}/benchmark/Set5/HR" in text
    assert f"pushed to {prepared}/benchmarks/Set5" in text and f"pushed to {prepared}/derain_test/Test100" in text
    for folder in ("benchmarks/Set5", "derain_test/Test100"):
        local = check_manifest(out / folder)
        remote = storage.read_manifest(f"{prepared}/{folder}")
        assert remote["files"] == local["files"]

    # Up to date: neither the source nor the pushed copy is transferred again.
    monkeypatch.setenv("DCKD_CACHE_DIR", str(tmp_path / "fresh-cache"))
    again = prepare(["set5"], out, [raw], Options(push=prepared, progress=False))
    assert again[0].status == "up to date" and f"already at {prepared}/benchmarks/Set5" in again[0].message
    assert not (tmp_path / "fresh-cache").exists()

    # A pulled copy counts as present (its manifest.json was written by push, without the record).
    pulled_root = tmp_path / "elsewhere"
    storage.pull(f"{prepared}/benchmarks/Set5", pulled_root / "benchmarks" / "Set5", progress=False)
    [res] = prepare(["set5"], pulled_root, [raw], Options(progress=False))
    assert res.status == "present" and "pulled from" in res.message
    assert json.loads((out / "benchmarks/Set5/manifest.json").read_text())["prepared"]["dataset"] == "set5"
