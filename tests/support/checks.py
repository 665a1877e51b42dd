"""What the suite's Python scripts share (tests/browser, tests/cloudconvert): the line
each check prints when it holds, and a PNG decoder that checks a file for real."""

import struct
import zlib


def ok(what):
    print(f"ok - {what}", flush=True)


def png_size(data):
    """Width and height of an 8-bit PNG whose scanlines decode to the size its header says."""
    assert data[:8] == b"\x89PNG\r\n\x1a\n", "not a PNG"
    pos, idat = 8, b""
    width = height = depth = color = None
    while pos < len(data):
        (length,) = struct.unpack(">I", data[pos:pos + 4])
        kind, body = data[pos + 4:pos + 8], data[pos + 8:pos + 8 + length]
        if kind == b"IHDR":
            width, height, depth, color = struct.unpack(">IIBB", body[:10])
        elif kind == b"IDAT":
            idat += body
        pos += 12 + length
    channels = {0: 1, 2: 3, 3: 1, 4: 2, 6: 4}[color]
    raw = zlib.decompress(idat)
    assert depth == 8 and len(raw) == height * (1 + width * channels), "the scanlines do not add up"
    return width, height
