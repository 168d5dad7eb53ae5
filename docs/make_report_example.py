"""Write docs/report_example.html and its screenshot docs/report_html.png, so both stay true.

    python docs/make_report_example.py      # about 10 s; needs chromium for the screenshot

The page is what ``symnn report examples/xor.toml --out report.html --train examples/xor.csv``
writes (run from the repository root, so the page names the data file by that relative path).
The screenshot is the whole page rendered by headless Chromium at 1200 px wide, cut below the
last ink, with its colours reduced to a palette to keep the PNG small (Pillow, which matplotlib
installs).
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
from symnn.cli import main as symnn_main  # noqa: E402

WIDTH = 1200
#: taller than the page: the screenshot is cut below its last non-white row
HEIGHT = 12000
COLOURS = 64


def write_page(out: Path) -> Path:
    """The XOR report with its training curve, through the command a user would run."""
    cwd = Path.cwd()
    os.chdir(ROOT)
    try:
        status = symnn_main(["report", "examples/xor.toml", "--out", str(out),
                             "--train", "examples/xor.csv"])
    finally:
        os.chdir(cwd)
    if status != 0:
        raise SystemExit(f"symnn report failed with status {status}")
    return out


def write_screenshot(page: Path, out: Path) -> Path:
    """The page rendered by headless Chromium, cropped to its content and palette-reduced."""
    import numpy as np
    from PIL import Image

    browser = shutil.which("chromium") or shutil.which("chromium-browser")
    if browser is None:
        raise SystemExit("chromium not found (apt-get install chromium fonts-dejavu-core)")
    with tempfile.TemporaryDirectory(prefix="symnn-shot-") as tmp:
        raw = Path(tmp) / "page.png"
        subprocess.run([browser, "--headless", "--no-sandbox", "--disable-gpu", "--hide-scrollbars",
                        f"--user-data-dir={Path(tmp) / 'profile'}", f"--window-size={WIDTH},{HEIGHT}",
                        f"--screenshot={raw}", page.resolve().as_uri()],
                       capture_output=True, timeout=120, check=True)
        image = Image.open(raw).convert("RGB")
        ink = np.flatnonzero(np.asarray(image.convert("L")).min(axis=1) < 250)
        image = image.crop((0, 0, WIDTH, int(ink[-1]) + 30))
        image.quantize(COLOURS, method=Image.Quantize.MEDIANCUT).save(out, optimize=True)
    return out


if __name__ == "__main__":
    page = write_page(ROOT / "docs" / "report_example.html")
    shot = write_screenshot(page, ROOT / "docs" / "report_html.png")
    print(f"{page.relative_to(ROOT)} ({page.stat().st_size // 1024} KB), "
          f"{shot.relative_to(ROOT)} ({shot.stat().st_size // 1024} KB)")
