"""Open a ``snakemake --report`` HTML file in headless Chromium and list the figures it shows.

    python -m ffsolve.workflow.report_check report.html figures/solver_demo.png figures/speedups.png

exits non-zero unless every named figure is listed under some category of the report. Needs
Debian's ``chromium`` and the ``playwright`` package (test extras); no network.
"""

from __future__ import annotations

import argparse
import shutil
import sys
from pathlib import Path

# Chromium's own background traffic fails on machines without network; these keep it quiet.
CHROMIUM_ARGS = [
    "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
    "--disable-background-networking", "--disable-component-update", "--disable-sync",
]


def find_chromium() -> str | None:
    for name in ("chromium", "chromium-browser", "google-chrome"):
        path = shutil.which(name)
        if path:
            return path
    return None


def list_report_figures(report: str | Path, chromium: str | None = None) -> dict[str, list[str]]:
    """Category -> files listed in that category, as the rendered report shows them."""
    from playwright.sync_api import sync_playwright

    chromium = chromium or find_chromium()
    if not chromium:
        raise RuntimeError("no Chromium found: apt-get install chromium")
    url = Path(report).resolve().as_uri()
    listed: dict[str, list[str]] = {}
    with sync_playwright() as playwright:
        browser = playwright.chromium.launch(executable_path=chromium, args=CHROMIUM_ARGS)
        try:
            page = browser.new_page()
            page.goto(url)
            menu = _menu_lines(page)
            categories = menu[menu.index("RESULTS") + 1:] if "RESULTS" in menu else []
            for category in categories:
                page.goto(url)
                _menu(page).get_by_text(category, exact=True).first.click()
                page.wait_for_function("document.body.innerText.includes('FILE')", timeout=10_000)
                body = page.inner_text("body").splitlines()
                listed[category] = [line.strip() for line in body if "/" in line and "." in line
                                    and " " not in line.strip()]
        finally:
            browser.close()
    return listed


def _menu(page):
    page.wait_for_function("document.body.innerText.includes('RESULTS')", timeout=20_000)
    return page.locator("body")


def _menu_lines(page) -> list[str]:
    _menu(page)
    body = page.inner_text("body").splitlines()
    lines = [line.strip() for line in body if line.strip()]
    # The side menu ends where the workflow description (a long sentence) starts.
    end = next((i for i, line in enumerate(lines) if len(line) > 60), len(lines))
    return lines[:end]


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("report", help="the HTML file written by snakemake --report")
    parser.add_argument("figures", nargs="+", help="figure paths the report must list")
    args = parser.parse_args(argv)
    listed = list_report_figures(args.report)
    for category, files in listed.items():
        print(f"{category}: {', '.join(files)}")
    shown = {f for files in listed.values() for f in files}
    missing = [f for f in args.figures if f not in shown]
    if missing:
        print(f"not listed in {args.report}: {missing}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
