"""Screenshot an HTML report with headless Chromium and check that every image in it loaded.

    python benchmarks/screenshot_report.py recstack-out/quickstart/report.html [--out PNG]

The screenshot goes to a new temporary directory unless --out names a path; a path git tracks
(e.g. docs/figures/*.png) is refused: a run never overwrites a committed figure (copy it there
yourself once you have looked at it).

1. A copy of the page with a small script appended is loaded by `chromium --headless --dump-dom`:
   after the load event the script records, for every <img>, whether the browser decoded it
   (`complete && naturalWidth > 0`) and the page's full height.
2. `chromium --headless --screenshot` of the page itself at that height (the whole report).
3. Independently of the browser, every <img> source (data URI or relative file) must decode as
   a PNG of nonzero size (Pillow).

Prints one JSON line (images, loaded, broken, page height, screenshot path) and exits 1 if any
image is broken. Needs a Chromium binary (Debian: `apt-get install chromium`); --no-browser runs
check 3 only.
"""

from __future__ import annotations

import argparse
import base64
import io
import json
import re
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

from PIL import Image

_CHECK = """<script>
window.addEventListener('load', () => {
  const imgs = Array.from(document.images);
  const ok = imgs.filter(i => i.complete && i.naturalWidth > 0).length;
  const broken = imgs.filter(i => !(i.complete && i.naturalWidth > 0)).map(i => i.alt || i.src.slice(0, 40));
  const h = Math.max(document.documentElement.scrollHeight, document.body.scrollHeight);
  const p = document.createElement('pre');
  p.id = 'img-check';
  p.textContent = JSON.stringify({images: imgs.length, loaded: ok, broken: broken, height: h});
  document.body.appendChild(p);
});
</script>"""


def find_chromium() -> str | None:
    for name in ("chromium", "chromium-browser", "google-chrome", "google-chrome-stable", "chrome"):
        path = shutil.which(name)
        if path:
            return path
    return None


def _chrome(binary: str, *args: str, timeout: float = 120) -> subprocess.CompletedProcess:
    flags = ["--headless", "--no-sandbox", "--disable-gpu", "--hide-scrollbars", "--disable-dev-shm-usage",
             "--run-all-compositor-stages-before-draw", "--virtual-time-budget=10000"]
    return subprocess.run([binary, *flags, *args], capture_output=True, text=True, timeout=timeout)


def browser_check(binary: str, page: Path, width: int) -> dict:
    """Load a copy of `page` with the check script; the script's verdict from the dumped DOM."""
    html = page.read_text()
    html = html.replace("</body>", _CHECK + "</body>") if "</body>" in html else html + _CHECK
    with tempfile.NamedTemporaryFile("w", suffix=".html", dir=page.parent, prefix=".check-", delete=False) as f:
        f.write(html)
        tmp = Path(f.name)
    try:
        res = _chrome(binary, f"--window-size={width},1000", "--dump-dom", tmp.resolve().as_uri())
    finally:
        tmp.unlink(missing_ok=True)
    m = re.search(r"<pre id=\"img-check\">(.*?)</pre>", res.stdout, re.S)
    if not m:
        raise RuntimeError(f"chromium gave no verdict (exit {res.returncode}): {res.stderr[-500:]}")
    return json.loads(m.group(1).replace("&quot;", '"').replace("&amp;", "&"))


def screenshot(binary: str, page: Path, out: Path, width: int, height: int) -> Path:
    out.parent.mkdir(parents=True, exist_ok=True)
    res = _chrome(binary, f"--window-size={width},{height}", f"--screenshot={out.resolve()}", page.resolve().as_uri())
    if not out.exists():
        raise RuntimeError(f"no screenshot written (exit {res.returncode}): {res.stderr[-500:]}")
    return out


def decode_images(page: Path) -> dict:
    """Every <img> of `page` decoded with Pillow: {images, valid, invalid: [...]} ."""
    srcs = re.findall(r"<img[^>]*\ssrc=['\"]([^'\"]+)['\"]", page.read_text())
    invalid = []
    for src in srcs:
        try:
            if src.startswith("data:image/png;base64,"):
                raw = base64.b64decode(src.split(",", 1)[1], validate=True)
            else:
                raw = (page.parent / src).read_bytes()
            with Image.open(io.BytesIO(raw)) as im:
                im.verify()
            with Image.open(io.BytesIO(raw)) as im:
                if im.format != "PNG" or im.width == 0 or im.height == 0:
                    raise ValueError(f"{im.format} {im.width}x{im.height}")
        except Exception as e:  # noqa: BLE001 - any failure means a broken image
            invalid.append(f"{src[:40]}: {e}")
    return {"images": len(srcs), "valid": len(srcs) - len(invalid), "invalid": invalid}


def is_tracked(path: Path) -> bool:
    """Whether git tracks `path` (False outside a work tree or without git)."""
    path = path.resolve()
    parent = path.parent
    while not parent.exists():
        parent = parent.parent
    try:
        res = subprocess.run(["git", "ls-files", "--error-unmatch", str(path)], cwd=parent,
                             capture_output=True, text=True, timeout=30)
    except (OSError, subprocess.TimeoutExpired):
        return False
    return res.returncode == 0


def default_out(report: Path) -> Path:
    return Path(tempfile.mkdtemp(prefix="recstack-screenshot-")) / f"{report.stem}.png"


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("report", type=Path)
    ap.add_argument("--out", type=Path, default=None,
                    help="screenshot PNG (default: a new temporary directory); never a file git tracks")
    ap.add_argument("--width", type=int, default=1280)
    ap.add_argument("--max-height", type=int, default=16000)
    ap.add_argument("--no-browser", action="store_true", help="only decode the images (no Chromium)")
    args = ap.parse_args()
    if args.out is not None and is_tracked(args.out):
        ap.error(f"--out {args.out}: git tracks that file; write the screenshot elsewhere")
    result: dict = {"report": str(args.report), "decoded": decode_images(args.report)}
    ok = result["decoded"]["images"] > 0 and not result["decoded"]["invalid"]
    binary = None if args.no_browser else find_chromium()
    if binary is None:
        result["browser"] = None if args.no_browser else "no chromium / chrome binary found"
    else:
        check = browser_check(binary, args.report, args.width)
        height = min(args.max_height, int(check["height"]) + 40)
        shot = screenshot(binary, args.report, args.out or default_out(args.report), args.width, height)
        with Image.open(shot) as im:
            size = list(im.size)
        result.update(browser=binary, browser_check=check, screenshot=str(shot), screenshot_size=size)
        ok = ok and check["images"] > 0 and check["loaded"] == check["images"] and not check["broken"]
    result["ok"] = ok
    print(json.dumps(result))
    sys.exit(0 if ok else 1)


if __name__ == "__main__":
    main()
