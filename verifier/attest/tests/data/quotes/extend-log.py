#!/usr/bin/env python3
"""Prints one `tpm2_pcrextend` argument per measured event of a crypto-agile log."""
import struct, sys
ALGS = {0x4: "sha1", 0xb: "sha256", 0xc: "sha384", 0xd: "sha512"}
b = open(sys.argv[1], "rb").read()
pcr, ty = struct.unpack_from("<II", b, 0)
size, = struct.unpack_from("<I", b, 28)
spec = b[32:32 + size]
n, = struct.unpack_from("<I", spec, 24)
sizes = {}
for i in range(n):
    a, s = struct.unpack_from("<HH", spec, 28 + 4 * i)
    sizes[a] = s
o = 32 + size
while o < len(b):
    pcr, ty, cnt = struct.unpack_from("<III", b, o); o += 12
    parts = []
    for _ in range(cnt):
        a, = struct.unpack_from("<H", b, o); o += 2
        parts.append("%s=%s" % (ALGS[a], b[o:o + sizes[a]].hex())); o += sizes[a]
    es, = struct.unpack_from("<I", b, o); o += 4 + es
    if ty != 3:
        print("%d:%s" % (pcr, ",".join(parts)))
