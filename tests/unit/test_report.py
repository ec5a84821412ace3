"""The reproduction report: deltas, banners, missing values, a self-contained HTML, CSV and plots."""

from __future__ import annotations

import csv
import re
from html.parser import HTMLParser
from pathlib import Path

import numpy as np
import pytest
from skimage import data as skdata

from dckd.imageio import read_image, write_image
from dckd.reporting.report import DASH, CellResult, TableInfo, delta, fmt, write_report

PNG_MAGIC = b"\x89PNG\r\n\x1a\n"
VOID = {"meta", "img", "br", "hr", "link", "input", "col", "source", "wbr"}


def panel(path: Path, photo: np.ndarray, side: int = 32) -> Path:
    """A side-by-side sample like tracking.sample_panel's: input | teacher | student | GT of a real photo."""
    crops = [np.ascontiguousarray(photo[40 + 9 * i:40 + 9 * i + side, 60:60 + side, :3]) for i in range(4)]
    sep = np.full((side, 2, 3), 255, np.uint8)
    parts = [crops[0], sep, crops[1], sep, crops[2], sep, crops[3]]
    return write_image(path, np.concatenate(parts, axis=1))


class TagChecker(HTMLParser):
    """Fails on a closing tag that does not match the open one; collects img sources."""

    def __init__(self) -> None:
        super().__init__(convert_charrefs=True)
        self.stack: list[str] = []
        self.srcs: list[str] = []
        self.errors: list[str] = []
        self.text: list[str] = []

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        if tag == "img":
            self.srcs.append(dict(attrs).get("src") or "")
        if tag not in VOID:
            self.stack.append(tag)

    def handle_endtag(self, tag: str) -> None:
        if not self.stack or self.stack[-1] != tag:
            self.errors.append(f"</{tag}> while open: {self.stack[-3:]}")
        else:
            self.stack.pop()

    def handle_data(self, data: str) -> None:
        self.text.append(data)


def check_html(text: str) -> TagChecker:
    checker = TagChecker()
    checker.feed(text)
    checker.close()
    assert not checker.errors, checker.errors
    assert not checker.stack, f"unclosed: {checker.stack}"
    return checker


TABLE5 = TableInfo(table="table5", title="Ablation of DCR and DMM (RCAN x2)", paper_ref="Table 5",
                   benchmarks=["Set14", "Urban100"], notes="Students trained from scratch.")


def results(tmp_path: Path) -> list[CellResult]:
    return [
        CellResult("table5", "baseline", "DCR off, DMM off", "ok",
                   metrics={"Set14": (32.60, 0.9000), "Urban100": (31.00, 0.9100)},
                   published={"Set14": (32.56, 0.8995), "Urban100": (31.20, 0.9150)},
                   run_id="a1b2c3d4e5f6", samples=[panel(tmp_path / "in" / "baseline.png", skdata.astronaut())]),
        CellResult("table5", "dcr", "DCR on", "stopped",
                   metrics={"Set14": (33.10, 0.9050)},  # no Urban100
                   published={"Set14": (33.00, 0.9040), "Urban100": (31.50, 0.9200)},
                   samples=[panel(tmp_path / "in" / "dcr.png", skdata.coffee()), tmp_path / "in" / "more.png"]),
        CellResult("table5", "full", "DCR | DMM <b>", "error", metrics={}, published={"Set14": (33.20, 0.9060)},
                   error="RuntimeError: <script>alert(1)</script> CUDA out of memory"),
        CellResult("table5", "teacher", "teacher", "ok",
                   metrics={"Set14": [32.90, 0.9030], "Urban100": [31.40, 0.9170]}, published={},
                   samples=[tmp_path / "in" / "not-there.png"]),
    ]


@pytest.fixture
def report(tmp_path: Path) -> tuple[dict[str, Path], Path]:
    out = tmp_path / "report"
    files = write_report([TABLE5], results(tmp_path), out, scale_down=0.01,
                         extra_notes=["the VQGAN has random weights"])
    return files, out


def row_of(md: str, label: str) -> list[str]:
    line = next(ln for ln in md.splitlines() if ln.startswith(f"| {label}"))
    return [c.strip() for c in line.strip().strip("|").split(" | ")]


def test_delta_on_hand_values() -> None:
    assert delta(32.60, 32.56) == pytest.approx(0.04)
    assert fmt(delta(32.60, 32.56), 2, signed=True) == "+0.04"
    assert fmt(delta(0.9000, 0.8995), 4, signed=True) == "+0.0005"
    assert fmt(delta(32.50, 32.56), 2, signed=True) == "-0.06"
    assert fmt(delta(0.89, 0.8995), 4, signed=True) == "-0.0095"
    assert fmt(delta(32.561, 32.56), 2, signed=True) == "+0.00"  # never "-0.00"
    assert fmt(delta(32.559, 32.56), 2, signed=True) == "+0.00"
    assert delta(None, 32.56) is None and delta(32.6, None) is None and delta(float("nan"), 1.0) is None
    assert fmt(None, 2) == DASH


def test_markdown_table_deltas_bold_and_dashes(report: tuple[dict[str, Path], Path]) -> None:
    files, out = report
    md = files["md"].read_text()
    # cell | status | Set14 rep | Set14 pub | Set14 Δ | Urban rep | Urban pub | Urban Δ | run
    base = row_of(md, "DCR off, DMM off")
    assert base[1] == "ok"
    assert base[2:5] == ["32.60 / 0.9000", "32.56 / 0.8995", "+0.04 / +0.0005"]
    assert base[5:8] == ["31.00 / 0.9100", "31.20 / 0.9150", "-0.20 / -0.0050"]
    assert base[8] == DASH  # device time: this result has no runs
    assert base[9] == "`a1b2c3d4e5f6`"
    dcr = row_of(md, "DCR on")
    assert dcr[2] == "**33.10** / 0.9050"  # best Set14 PSNR
    assert dcr[5:8] == [DASH, "31.50 / 0.9200", DASH]  # no reproduced Urban100
    assert dcr[8] == dcr[9] == DASH
    full = row_of(md, "DCR \\| DMM \\<b\\>")  # a label cannot break the table or inject HTML
    assert full[1] == "error" and full[2] == DASH and full[3] == "33.20 / 0.9060" and full[4] == DASH
    teacher = row_of(md, "teacher")
    assert teacher[5] == "**31.40** / 0.9170"  # best Urban100 PSNR
    assert teacher[3] == DASH and teacher[4] == DASH
    assert "**32.60**" not in md and "**31.00**" not in md and "**32.90**" not in md
    assert "Students trained from scratch." in md
    assert "CUDA out of memory" in md


def test_scaled_down_banner_only_when_scaled(tmp_path: Path, report: tuple[dict[str, Path], Path]) -> None:
    files, _ = report
    md, page = files["md"].read_text(), files["html"].read_text()
    for text, first_table in ((md, md.index("| cell")), (page, page.index("<table"))):
        assert "SCALED-DOWN SMOKE RUN (factor 0.01)" in text
        assert "NOT comparable with the paper" in text
        assert text.index("SCALED-DOWN") < first_table
        assert "the VQGAN has random weights" in text
    assert md.splitlines()[2].startswith("> **⚠ SCALED-DOWN SMOKE RUN")
    assert 'class="banner"' in page
    plain = write_report([TABLE5], results(tmp_path), tmp_path / "full")
    for kind in ("md", "html"):
        text = plain[kind].read_text()
        assert "SCALED-DOWN" not in text and "NOT comparable" not in text
    assert 'class="banner"' not in plain["html"].read_text()


def test_html_is_self_contained_and_well_formed(report: tuple[dict[str, Path], Path]) -> None:
    files, out = report
    page = files["html"].read_text()
    checker = check_html(page)
    assert 'src="http' not in page and "href=\"http" not in page and "<link" not in page and "@import" not in page
    assert checker.srcs and all(s.startswith("data:image/png;base64,") for s in checker.srcs)
    # 2 plots + 2 samples (the teacher's sample file does not exist, the error cell has none)
    assert len(checker.srcs) == 4
    assert "<script>" not in page and "&lt;script&gt;" in page and "DCR | DMM &lt;b&gt;" in page
    assert "<b>33.10</b> / 0.9050" in page and "<b>31.40</b> / 0.9170" in page
    assert "<b>32.60</b>" not in page and "<b>32.90</b>" not in page
    assert "+0.04 / +0.0005" in page
    text = "".join(checker.text)
    assert text.count(DASH) >= 6
    captions = re.findall(r"<figcaption>(.*?)</figcaption>", page)
    assert captions == ["DCR off, DMM off", "DCR on", "DCR | DMM &lt;b&gt;", "teacher"]


def test_results_csv_rows_and_values(report: tuple[dict[str, Path], Path]) -> None:
    files, _ = report
    with files["csv"].open() as fh:
        rows = list(csv.DictReader(fh))
    assert len(rows) == 4 * 2  # cells x benchmarks
    assert [(r["cell"], r["benchmark"]) for r in rows[:3]] == [("baseline", "Set14"), ("baseline", "Urban100"),
                                                               ("dcr", "Set14")]
    base = rows[0]
    assert base["table"] == "table5" and base["status"] == "ok" and base["run_id"] == "a1b2c3d4e5f6"
    assert float(base["reproduced_psnr"]) == 32.60 and float(base["published_ssim"]) == 0.8995
    assert base["delta_psnr"] == "0.04" and base["delta_ssim"] == "0.0005"
    assert float(rows[1]["delta_psnr"]) == pytest.approx(-0.2)
    dcr_urban = rows[3]
    assert dcr_urban["reproduced_psnr"] == "" and dcr_urban["delta_psnr"] == ""
    assert dcr_urban["published_psnr"] == "31.5" and dcr_urban["status"] == "stopped"
    teacher = [r for r in rows if r["cell"] == "teacher"]
    assert all(r["published_psnr"] == "" and r["delta_ssim"] == "" and r["reproduced_psnr"] for r in teacher)


def test_plots_and_samples_written(report: tuple[dict[str, Path], Path], tmp_path: Path) -> None:
    files, out = report
    for key in ("plot:table5:psnr", "plot:table5:delta_psnr"):
        assert files[key].is_file() and files[key].read_bytes()[:8] == PNG_MAGIC
        assert files[key].parent == out / "plots"
    md = files["md"].read_text()
    assert "](plots/table5_psnr.png)" in md and "](plots/table5_delta_psnr.png)" in md
    sample = out / "samples" / "table5" / "baseline.png"
    assert files["samples"] == out / "samples"
    assert np.array_equal(read_image(sample), read_image(tmp_path / "in" / "baseline.png"))
    assert "[![DCR off, DMM off](samples/table5/baseline.png)](samples/table5/baseline.png)" in md
    assert (out / "samples" / "table5" / "dcr.png").is_file()
    assert f"**teacher**: {DASH}" in md
    assert sorted(p.name for p in (out / "samples" / "table5").iterdir()) == ["baseline.png", "dcr.png"]


def test_nothing_to_show_still_reports(tmp_path: Path) -> None:
    """No metrics, no published numbers, no samples, a table without results: a report, no plots."""
    empty = TableInfo(table="table3", title="Other tasks", benchmarks=["Rain100L"])
    res = [CellResult("table5", "baseline", "", "missing", metrics={}, published={})]
    files = write_report([TABLE5, empty], res, tmp_path / "r", scale_down=0.5)
    assert set(files) == {"md", "html", "csv"}
    md, page = files["md"].read_text(), files["html"].read_text()
    check_html(page)
    assert row_of(md, "baseline")[1:8] == ["missing", *[DASH] * 6]
    assert "No results for this table." in md and "No results for this table." in page
    assert "<img" not in page and not (tmp_path / "r" / "plots").exists()
    with files["csv"].open() as fh:
        assert len(list(csv.DictReader(fh))) == 2


def test_results_of_an_unlisted_table_and_extra_benchmarks(tmp_path: Path) -> None:
    res = [CellResult("table2_rcan_x4", "dckd", "DCKD", "ok", metrics={"Set5": (30.1, 0.85), "B100": (27.0, 0.72)},
                      published={"Set5": (30.3, 0.86)}),
           CellResult("table5", "baseline", "base $x^$ ($\\alpha$)", "ok",  # "$": not mathtext in plots
                      metrics={"Set14": (32.6, 0.9), "Manga109": (38.0, 0.97)}, published={})]
    files = write_report([TABLE5], res, tmp_path / "r")
    md = files["md"].read_text()
    assert "## table2\\_rcan\\_x4" in md
    assert "Set5 reproduced" in md and "B100 reproduced" in md and "Manga109 reproduced" in md
    assert "| DCKD (`dckd`) | ok | **30.10** / 0.8500 | 30.30 / 0.8600 | -0.20 / -0.0100 |" in md
    assert "plot:table2_rcan_x4:delta_psnr" in files and "plot:table5:delta_psnr" not in files
    assert "plot:table5:psnr" in files
    with files["csv"].open() as fh:
        rows = list(csv.DictReader(fh))
    assert len(rows) == 2 + 3  # table5 gains Manga109; table2 has Set5 and B100
    check_html(files["html"].read_text())


def test_table_info_from_spec() -> None:
    from dckd.reporting.tables import TableSpec

    spec = TableSpec.model_validate({
        "table": "table5", "title": "Ablation", "paper_ref": "Table 5", "base": "x.yaml",
        "benchmarks": ["Set14", "Urban100"], "notes": "n",
        "cells": [{"id": "baseline", "published": {"Set14": [33.83, 0.9197]}}]})
    info = TableInfo.from_spec(spec)
    assert info == TableInfo("table5", "Ablation", "Table 5", ["Set14", "Urban100"], "n")
    assert info.heading == "table5: Table 5 — Ablation"


def test_every_cell_names_its_preset_schedule_and_batch(tmp_path: Path) -> None:
    settings = {
        "release": {"method": "dckd_release", "terms": "rec 1 + kd 1 + dcr 0.1 (N 5, noise) + dmm 0.001 + lcr 1 (p 0.5)",
                    "schedule": "lr 0.0001, no decay within 250000 its (milestones [250000])",
                    "batch": "16 per worker x 1 worker = 16; paper 64"},
        "paper": {"method": "dckd", "terms": "rec 1 + kd 1 + dcr 0.1 (N 5, noise) + dmm 0.001",
                  "schedule": "lr 0.0001, x0.1 at 100000, 200000 (of 250000 its)",
                  "batch": "16 per worker x 4 workers = 64"},
    }
    cells = [CellResult("table5", "dcr_dmm", "DCKD (released code)", "ok", {"Set14": (34.0, 0.92)},
                        {"Set14": (34.01, 0.9213)}, settings=settings["release"]),
             CellResult("table5", "dckd_paper", "DCKD as the paper writes it", "ok", {"Set14": (33.9, 0.92)},
                        {"Set14": (34.01, 0.9213)}, settings=settings["paper"])]
    files = write_report([TABLE5], cells, tmp_path, extra_notes=["dcr_dmm: effective batch 16 differs"])
    md, page = files["md"].read_text(), files["html"].read_text()
    for s in settings.values():
        for value in s.values():
            assert re.sub(r"\\(.)", r"\1", md).count(value) >= 1, value  # markdown escapes _ and *
            assert value in "".join(check_html(page).text), value
    assert "How each cell was trained" in md and "effective batch 16 differs" in md
    rows = list(csv.DictReader(files["csv"].open()))
    assert {(r["cell"], r["method"], r["schedule"], r["batch"]) for r in rows} == {
        ("dcr_dmm", "dckd_release", settings["release"]["schedule"], settings["release"]["batch"]),
        ("dckd_paper", "dckd", settings["paper"]["schedule"], settings["paper"]["batch"])}
