"""Headless Chromium for report tests: render a page to its DOM or a PNG, and decode the PNG.

Debian's ``chromium`` (installed by ``make system-deps``) is required; a test
that needs it fails with a clear message instead of skipping.
"""

from __future__ import annotations

import shutil
import struct
import subprocess
import zlib
from pathlib import Path

import numpy as np
import pytest

FLAGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
         "--disable-background-networking", "--disable-component-update", "--disable-sync"]


def chromium() -> str:
    exe = shutil.which("chromium") or shutil.which("chromium-browser")
    if exe is None:
        pytest.fail("headless Chromium is needed to check the HTML report: install Debian's `chromium` "
                    "(make system-deps does)")
    return exe


def run(exe: str, workdir: Path, *args: str) -> subprocess.CompletedProcess:
    """Run Chromium with a fresh profile under ``workdir`` (never the user's)."""
    profile = workdir / "chromium-profile"
    profile.mkdir(exist_ok=True)
    proc = subprocess.run([exe, *FLAGS, f"--user-data-dir={profile}", *args], capture_output=True, text=True,
                          timeout=120)
    assert proc.returncode == 0, proc.stderr[-2000:]
    return proc


def dump_dom(exe: str, workdir: Path, page: Path) -> str:
    return run(exe, workdir, "--dump-dom", page.resolve().as_uri()).stdout


def screenshot(exe: str, workdir: Path, page: Path, out: Path, size: str = "1280,3000") -> np.ndarray:
    """Screenshot ``page`` into ``out`` and return its RGB pixels."""
    run(exe, workdir, f"--screenshot={out}", f"--window-size={size}", page.resolve().as_uri())
    return png_pixels(out.read_bytes())[:, :, :3].astype(int)


def _paeth_row(line: np.ndarray, prev: np.ndarray, bpp: int) -> np.ndarray:
    cur = np.zeros_like(line)
    for i in range(line.size):
        a = int(cur[i - bpp]) if i >= bpp else 0
        b = int(prev[i])
        c = int(prev[i - bpp]) if i >= bpp else 0
        p = a + b - c
        pa, pb, pc = abs(p - a), abs(p - b), abs(p - c)
        cur[i] = (line[i] + (a if pa <= pb and pa <= pc else b if pb <= pc else c)) % 256
    return cur


def _average_row(line: np.ndarray, prev: np.ndarray, bpp: int) -> np.ndarray:
    cur = np.zeros_like(line)
    for i in range(line.size):
        a = int(cur[i - bpp]) if i >= bpp else 0
        cur[i] = (line[i] + (a + int(prev[i])) // 2) % 256
    return cur


def png_pixels(data: bytes) -> np.ndarray:
    """Decode an 8-bit RGB/RGBA PNG into an (h, w, channels) array (enough for Chromium's screenshots).

    None, Sub and Up rows decode vectorised; Average and Paeth rows (rare in
    Chromium's output) byte by byte.
    """
    assert data[:8] == b"\x89PNG\r\n\x1a\n", "not a PNG"
    pos, idat = 8, b""
    while pos < len(data):
        length, kind = struct.unpack(">I4s", data[pos:pos + 8])
        chunk = data[pos + 8:pos + 8 + length]
        if kind == b"IHDR":
            width, height, depth, color = struct.unpack(">IIBB", chunk[:10])
            assert depth == 8 and color in (2, 6), f"unsupported PNG: depth {depth}, color type {color}"
        elif kind == b"IDAT":
            idat += chunk
        pos += 12 + length
    bpp = 3 if color == 2 else 4
    raw = np.frombuffer(zlib.decompress(idat), dtype=np.uint8).reshape(height, 1 + width * bpp)
    out = np.zeros((height, width * bpp), dtype=np.uint8)
    prev = np.zeros(width * bpp, dtype=np.int64)
    for y in range(height):
        f, line = raw[y, 0], raw[y, 1:].astype(np.int64)
        if f == 0:
            cur = line
        elif f == 1:
            cur = np.cumsum(line.reshape(width, bpp), axis=0).reshape(-1) % 256
        elif f == 2:
            cur = (line + prev) % 256
        elif f == 3:
            cur = _average_row(line, prev, bpp)
        else:
            cur = _paeth_row(line, prev, bpp)
        out[y] = cur
        prev = cur
    return out.reshape(height, width, bpp)
