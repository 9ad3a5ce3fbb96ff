"""What TensorBoard's first screen shows for a run: start TensorBoard on the run folder,
open it in headless Chromium at a laptop's window size, and save the screenshot.

    python scripts/tensorboard_screenshot.py outputs/<date>/<time> --out tb.png

Needs Chromium (Debian: `apt-get install chromium`; or --chromium PATH); nothing is
downloaded. The screenshot never replaces a file: an existing --out is refused.
"""

from __future__ import annotations

import argparse
import shutil
import socket
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

# what a closed-network machine needs for Chromium to start quietly (no background fetches)
CHROMIUM_FLAGS = ("--headless", "--no-sandbox", "--disable-gpu", "--disable-quic",
                  "--no-first-run", "--disable-background-networking",
                  "--disable-component-update", "--disable-sync", "--hide-scrollbars")
STARTUP_SECONDS = 60


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


def wait_until_serving(url: str, server: subprocess.Popen, seconds: float) -> None:
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        if server.poll() is not None:
            sys.exit(f"error: TensorBoard exited with status {server.returncode}")
        try:
            with urllib.request.urlopen(url, timeout=2):
                return
        except OSError:
            time.sleep(0.5)
    sys.exit(f"error: TensorBoard did not answer at {url} within {seconds:.0f} s")


def screenshot(url: str, out: Path, chromium: str, size: tuple[int, int], wait_ms: int,
               profile: Path) -> None:
    command = [chromium, *CHROMIUM_FLAGS, f"--user-data-dir={profile}",
               f"--window-size={size[0]},{size[1]}", f"--virtual-time-budget={wait_ms}",
               f"--screenshot={out}", url]
    subprocess.run(command, check=True, capture_output=True, timeout=120)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("logdir", type=Path, help="a run folder (or a folder of runs)")
    parser.add_argument("--out", type=Path, required=True, help="the PNG to write (new)")
    parser.add_argument("--chromium", default=shutil.which("chromium") or "chromium")
    parser.add_argument("--size", default="1440,900", help="window width,height in pixels")
    # the page `make tensorboard` prints, its charts drawn as SVG: headless Chromium has no
    # GPU, and the WebGL charts' worker draws after the screenshot is taken
    parser.add_argument("--page", default="?smoothing=0&forceSVG=true#timeseries",
                        help="what follows the address")
    parser.add_argument("--wait-ms", type=int, default=20000,
                        help="how long the page may load and draw (Chromium's virtual time)")
    args = parser.parse_args(argv)
    if not args.logdir.is_dir():
        sys.exit(f"error: {args.logdir} is not a folder: give a run folder")
    if args.out.exists():
        sys.exit(f"error: {args.out} exists: choose another --out")
    if shutil.which(args.chromium) is None:
        sys.exit(f"error: no Chromium at {args.chromium!r}: install it (Debian: apt-get "
                 "install chromium) or give --chromium PATH")
    width, height = (int(part) for part in args.size.split(","))
    port = free_port()
    server = subprocess.Popen(
        [sys.executable, "-P", "-m", "tensorboard.main", "--logdir", str(args.logdir),
         "--port", str(port), "--host", "127.0.0.1"],
        stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        url = f"http://127.0.0.1:{port}/"
        wait_until_serving(url, server, STARTUP_SECONDS)
        profile = args.out.parent / f".chromium-profile-{port}"
        try:
            screenshot(url + args.page, args.out.resolve(), args.chromium, (width, height),
                       args.wait_ms, profile)
        finally:
            shutil.rmtree(profile, ignore_errors=True)
    finally:
        server.terminate()
        server.wait(timeout=30)
    print(f"wrote {args.out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
