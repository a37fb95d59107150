"""Open the built site in headless Chromium: screenshots of pages, and a check that their figures rendered.

    sphinx-build -W --keep-going -b html docs docs/_build/html
    python docs/screenshot.py                  # writes docs/screenshots/index.png, results.png

For each page it writes a PNG screenshot, then loads the page again inside a small checker page
and reads every image's ``naturalWidth`` (0 for an image the browser could not load or decode);
it exits with status 1 when a page has no image or an image that did not render. The site is
opened from the file system (``file://``), as a reader opens it, with no server.

Needs a Chromium (``apt-get install chromium``; or name one with ``--browser`` or
``$CHROMIUM``) and nothing else.
"""

from __future__ import annotations

import argparse
import json
import os
import re
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

DOCS = Path(__file__).resolve().parent
PAGES = ("index.html", "results.html")

# Loads the page in an iframe and writes what its images are into the checker's own DOM, which
# Chromium's --dump-dom prints once the page has loaded.
CHECKER = """<!DOCTYPE html><html><body><pre id="result">pending</pre>
<iframe id="page" src="{url}" style="width:1280px;height:900px"></iframe>
<script>
document.getElementById("page").addEventListener("load", () => {{
  const doc = document.getElementById("page").contentDocument;
  const wait = Array.from(doc.images).map(img => img.decode().catch(() => null));
  Promise.all(wait).then(() => {{
    const images = Array.from(doc.images).map(img => ({{src: img.getAttribute("src"),
      naturalWidth: img.naturalWidth, complete: img.complete}}));
    document.getElementById("result").textContent = JSON.stringify({{title: doc.title, images}});
  }});
}});
</script></body></html>
"""


def find_browser(name: str | None) -> str:
    for candidate in (name, os.environ.get("CHROMIUM"), "chromium", "chromium-browser", "google-chrome"):
        if candidate and shutil.which(candidate):
            return shutil.which(candidate)
    raise SystemExit("no Chromium found: apt-get install chromium, or give --browser PATH")


def chromium(browser: str, *args: str) -> subprocess.CompletedProcess:
    base = [browser, "--headless", "--no-sandbox", "--disable-gpu", "--hide-scrollbars",
            "--allow-file-access-from-files", "--virtual-time-budget=10000"]
    return subprocess.run([*base, *args], capture_output=True, text=True, timeout=120)


def screenshot(browser: str, page: Path, out: Path, height: int) -> None:
    proc = chromium(browser, f"--screenshot={out}", f"--window-size=1280,{height}", page.as_uri())
    if not out.is_file() or out.read_bytes()[:8] != b"\x89PNG\r\n\x1a\n":
        raise SystemExit(f"{page}: no screenshot written ({proc.stderr.strip()[-500:]})")


def rendered_images(browser: str, page: Path) -> dict:
    with tempfile.TemporaryDirectory() as tmp:
        # beside the page, so that the checker and the page are both file:// pages of one folder
        checker = page.parent / f".screenshot-check-{os.getpid()}.html"
        try:
            checker.write_text(CHECKER.format(url=page.name))
            proc = chromium(browser, f"--user-data-dir={tmp}", "--dump-dom", checker.as_uri())
        finally:
            checker.unlink(missing_ok=True)
    match = re.search(r'<pre id="result">(.*?)</pre>', proc.stdout, re.S)
    if not match or match.group(1) == "pending":
        raise SystemExit(f"{page}: the checker page did not report ({proc.stderr.strip()[-500:]})")
    import html

    return json.loads(html.unescape(match.group(1)))


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--site", type=Path, default=DOCS / "_build" / "html", help="the built site")
    parser.add_argument("--out", type=Path, default=DOCS / "screenshots", help="where the PNGs go")
    parser.add_argument("--browser", help="a Chromium executable (default: chromium on PATH)")
    parser.add_argument("--height", type=int, default=2000, help="window height of the screenshots")
    args = parser.parse_args(argv)
    browser = find_browser(args.browser)
    args.out.mkdir(parents=True, exist_ok=True)
    failed = False
    for name in PAGES:
        page = args.site / name
        if not page.is_file():
            raise SystemExit(f"{page} does not exist: build the site first (see {Path(__file__).name})")
        png = args.out / f"{Path(name).stem}.png"
        screenshot(browser, page, png, args.height)
        report = rendered_images(browser, page)
        broken = [img["src"] for img in report["images"] if not img["naturalWidth"]]
        print(f"{name}: {png} ({png.stat().st_size} bytes); {len(report['images'])} images, "
              f"{len(report['images']) - len(broken)} rendered" + (f"; not rendered: {broken}" if broken else ""))
        failed |= bool(broken) or not report["images"]
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
