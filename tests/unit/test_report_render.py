"""The sample report renders in a real browser: headless Chromium (Debian's package) takes a screenshot.

No lab needed. scripts/host-deps.sh installs chromium; without /usr/bin/chromium the test is skipped.
"""

import os
import struct
import subprocess
import zlib
from pathlib import Path

import pytest

from trackerdb.rehearse.report import build_report
from trackerdb.rehearse.report_html import render_html
from trackerdb.rehearse.sample import T0, sample_result

CHROMIUM = "/usr/bin/chromium"


def chromium_screenshot(html_path: Path, png_path: Path, profile: Path, size=(1280, 2000), timeout=120) -> subprocess.CompletedProcess:
    cmd = [CHROMIUM, "--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
           "--disable-background-networking", "--disable-component-update", "--disable-sync",
           f"--user-data-dir={profile}", f"--screenshot={png_path}", f"--window-size={size[0]},{size[1]}",
           html_path.resolve().as_uri()]
    env = dict(os.environ, HOME=str(profile))  # keep Chromium's caches out of the real home
    return subprocess.run(cmd, capture_output=True, text=True, timeout=timeout, env=env, stdin=subprocess.DEVNULL)


def decode_png(data: bytes) -> tuple[int, int, int, list[bytes]]:
    """Minimal PNG decoder (8-bit, non-interlaced RGB/RGBA/grey): width, height, bytes per pixel, rows."""
    assert data[:8] == b"\x89PNG\r\n\x1a\n", "not a PNG"
    pos, idat, hdr = 8, b"", None
    while pos < len(data):
        (length,) = struct.unpack(">I", data[pos:pos + 4])
        kind = data[pos + 4:pos + 8]
        body = data[pos + 8:pos + 8 + length]
        pos += 12 + length
        if kind == b"IHDR":
            hdr = struct.unpack(">IIBBBBB", body)
        elif kind == b"IDAT":
            idat += body
        elif kind == b"IEND":
            break
    width, height, depth, ctype, _, _, interlace = hdr
    assert depth == 8 and interlace == 0, f"unsupported PNG (depth {depth}, interlace {interlace})"
    bpp = {0: 1, 2: 3, 4: 2, 6: 4}[ctype]
    raw = zlib.decompress(idat)
    stride = width * bpp
    rows, prev = [], bytearray(stride)
    for y in range(height):
        f = raw[y * (stride + 1)]
        line = bytearray(raw[y * (stride + 1) + 1:(y + 1) * (stride + 1)])
        for i in range(stride):
            a = line[i - bpp] if i >= bpp else 0
            b = prev[i]
            c = prev[i - bpp] if i >= bpp else 0
            if f == 1:
                line[i] = (line[i] + a) & 0xFF
            elif f == 2:
                line[i] = (line[i] + b) & 0xFF
            elif f == 3:
                line[i] = (line[i] + ((a + b) >> 1)) & 0xFF
            elif f == 4:
                p = a + b - c
                pa, pb, pc = abs(p - a), abs(p - b), abs(p - c)
                line[i] = (line[i] + (a if pa <= pb and pa <= pc else b if pb <= pc else c)) & 0xFF
        rows.append(bytes(line))
        prev = line
    return width, height, bpp, rows


def colours(width, bpp, rows, step=4) -> set:
    seen = set()
    for row in rows[::step]:
        for x in range(0, width, step):
            seen.add(row[x * bpp:x * bpp + min(bpp, 3)])
    return seen


@pytest.mark.skipif(not os.path.exists(CHROMIUM), reason=f"{CHROMIUM} not installed (scripts/host-deps.sh installs Debian's chromium)")
def test_sample_report_renders_in_headless_chromium(tmp_path):
    report = build_report(sample_result(), generated_at=T0)
    html_path = tmp_path / "report.html"
    html_path.write_text(render_html(report))
    png = tmp_path / "report.png"
    proc = chromium_screenshot(html_path, png, tmp_path / "profile")
    assert png.is_file(), f"no screenshot (exit {proc.returncode}): {proc.stderr[-2000:]}"
    data = png.read_bytes()
    assert len(data) > 20_000, f"screenshot is suspiciously small ({len(data)} bytes)"
    width, height, bpp, rows = decode_png(data)
    assert (width, height) == (1280, 2000)
    seen = colours(width, bpp, rows)
    assert len(seen) > 50, f"screenshot looks blank: {len(seen)} distinct colours"
    # the outage band (#e74c3c at 16% on white, ~ (251,226,224)) and the orange outage bars (#d35400) are drawn
    near = lambda rgb, want, tol: all(abs(a - b) <= tol for a, b in zip(rgb, want))  # noqa: E731
    assert any(near(c, (0xD3, 0x54, 0x00), 12) for c in seen), "no outage-phase bar in the picture"
    assert any(near(c, (251, 226, 224), 10) for c in seen), "no outage band in the picture"
    # the PASS banner (#1f8a4c) near the top
    top = colours(width, bpp, rows[:120], step=2)
    assert any(near(c, (0x1F, 0x8A, 0x4C), 12) for c in top), "no verdict banner at the top"


def test_png_decoder_reads_a_tiny_image():
    # 2x1 RGB, filter 0: red, blue
    raw = b"\x00" + bytes([255, 0, 0, 0, 0, 255])
    def chunk(kind, body):
        return struct.pack(">I", len(body)) + kind + body + struct.pack(">I", zlib.crc32(kind + body))
    png = b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", struct.pack(">IIBBBBB", 2, 1, 8, 2, 0, 0, 0)) + \
        chunk(b"IDAT", zlib.compress(raw)) + chunk(b"IEND", b"")
    w, h, bpp, rows = decode_png(png)
    assert (w, h, bpp) == (2, 1, 3)
    assert colours(w, bpp, rows, step=1) == {bytes([255, 0, 0]), bytes([0, 0, 255])}
