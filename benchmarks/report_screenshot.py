"""Render the demo's HTML report in headless Chromium: check every figure drew, save screenshots.

1. The report's figures are counted in its source (one ``plotly-graph-div`` each).
2. Chromium loads a copy of the report (offline: plotly.js is embedded in it), runs its scripts
   for a virtual-time budget and dumps the DOM; a figure counts as rendered when its ``<div>``
   holds a plotly ``svg.main-svg``. Console errors are collected too.
3. The page is captured in ``--page-height`` slices (a copy per slice is shifted up by its
   offset), one PNG each, in ``results/``.

Needs Debian's ``chromium`` (``apt-get install -y chromium``). Run on demand, after the demo:
``thinklens demo --out thinklens-out && python -P benchmarks/report_screenshot.py``.
Exits 1 when a figure did not render.
"""

from __future__ import annotations

import argparse
import re
import shutil
import subprocess
import sys
import tempfile
from html.parser import HTMLParser
from pathlib import Path

RESULTS = Path(__file__).resolve().parent / "results"
FLAGS = [
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--hide-scrollbars",
    "--force-device-scale-factor=1",
]
# Written into the copy: after load, the page's height lands on <html data-height="...">.
HEIGHT_PROBE = (
    "<script>window.addEventListener('load', () => setTimeout(() => "
    "document.documentElement.setAttribute('data-height', "
    "document.documentElement.scrollHeight), 500));</script>"
)
# Written into a copy per slice: the page moves up by the slice's offset (headless Chromium
# captures the top of the page, whatever a script scrolls to).
SHIFT = "<style>body {{ margin-top: -{y}px !important; }}</style>"


class FigureCounter(HTMLParser):
    """Per plotly figure ``<div>``: how many ``svg.main-svg`` it holds."""

    def __init__(self) -> None:
        super().__init__()
        self.svgs: dict[str, int] = {}
        self._current: str | None = None
        self._depth = 0

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        a = dict(attrs)
        classes = (a.get("class") or "").split()
        if tag == "div":
            if self._current is None and "plotly-graph-div" in classes:
                self._current, self._depth = a.get("id") or f"figure@{len(self.svgs)}", 0
                self.svgs[self._current] = 0
            elif self._current is not None:
                self._depth += 1
        elif tag == "svg" and self._current is not None and "main-svg" in classes:
            self.svgs[self._current] += 1

    def handle_endtag(self, tag: str) -> None:
        if tag == "div" and self._current is not None:
            if self._depth == 0:
                self._current = None
            else:
                self._depth -= 1


def chromium(binary: str, args: list[str], profile: Path, timeout: float) -> tuple[str, str]:
    """Run headless Chromium once with a fresh profile; its stdout and stderr."""
    cmd = [binary, *FLAGS, f"--user-data-dir={profile}", "--enable-logging=stderr", *args]
    out = subprocess.run(cmd, capture_output=True, text=True, timeout=timeout, check=False)
    return out.stdout, out.stderr


def with_extra(source: str, extra: str, path: Path) -> Path:
    """A copy of the page with ``extra`` (a script or a style) at the end of its body."""
    path.write_text(source.replace("</body>", extra + "</body>", 1), encoding="utf-8")
    return path


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--report", default="thinklens-out/report.html")
    p.add_argument("--out", default=str(RESULTS / "demo_report"), help="PNG path prefix")
    p.add_argument("--width", type=int, default=1400)
    p.add_argument("--page-height", type=int, default=2000, help="pixels per screenshot")
    p.add_argument("--max-pages", type=int, default=12)
    p.add_argument("--budget", type=int, default=20000, help="virtual time for scripts, ms")
    p.add_argument("--timeout", type=float, default=180.0, help="seconds per Chromium run")
    p.add_argument("--chromium", default=shutil.which("chromium") or "chromium")
    args = p.parse_args()

    report = Path(args.report)
    if not report.is_file():
        print(f"no report at {report}: run `thinklens demo --out {report.parent}` first")
        return 2
    source = report.read_text(encoding="utf-8")
    expected = len(re.findall(r'class="plotly-graph-div"', source))
    size_kb = report.stat().st_size / 1024
    plotly_copies = len(re.findall(r"plotly\.js v\d", source))
    with tempfile.TemporaryDirectory(prefix="thinklens-shot-") as tmp:
        tmp = Path(tmp)
        budget = f"--virtual-time-budget={args.budget}"
        probe = with_extra(source, HEIGHT_PROBE, tmp / "probe.html")
        dom, log = chromium(
            args.chromium,
            [budget, f"--window-size={args.width},1000", "--dump-dom", probe.as_uri()],
            tmp / "profile-dom",
            args.timeout,
        )
        counter = FigureCounter()
        counter.feed(dom)
        rendered = sum(n > 0 for n in counter.svgs.values())
        found = re.search(r'data-height="(\d+)"', dom)
        height = int(found.group(1)) if found else args.page_height
        errors = [ln for ln in log.splitlines() if "Uncaught" in ln or ":ERROR:CONSOLE" in ln]

        prefix = Path(args.out)
        prefix.parent.mkdir(parents=True, exist_ok=True)
        for old in prefix.parent.glob(f"{prefix.name}_*.png"):
            old.unlink()
        n_pages = min(args.max_pages, -(-height // args.page_height))
        shots = []
        for i in range(n_pages):
            top = i * args.page_height
            page = with_extra(source, SHIFT.format(y=top), tmp / f"p{i}.html")
            png = prefix.parent / f"{prefix.name}_{i + 1}.png"
            chromium(
                args.chromium,
                [
                    budget,
                    f"--window-size={args.width},{min(args.page_height, height - top)}",
                    f"--screenshot={png}",
                    page.as_uri(),
                ],
                tmp / f"profile-{i}",
                args.timeout,
            )
            if png.exists():
                shots.append(png)

    print(f"report: {report} ({size_kb:.0f} KB, plotly.js embedded {plotly_copies} time(s))")
    print(f"figures: {expected} in the source, {rendered} rendered (svg.main-svg per figure:")
    print("  " + ", ".join(f"{k}={v}" for k, v in counter.svgs.items()) + ")")
    print(f"page height: {height} px; console errors: {len(errors)}")
    for line in errors[:10]:
        print(f"  {line}")
    for png in shots:
        print(f"screenshot: {png} ({png.stat().st_size / 1024:.0f} KB)")
    ok = rendered == expected and expected > 0 and len(shots) == n_pages
    print("all figures rendered" if ok else "NOT all figures rendered")
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
