"""zlib in Debian's python3 (linked against libz.so.1), driven line by line on stdin
(tests/realworld/zlib.rs), in the harness's line protocol (tests/fixtures/cmdloop.h).

    lib        -> the path of the libz mapped in this process
    roundtrip  -> ok <compressed length> <level bits of the zlib header>, after compressing a
                  sample with zlib.compress and gzip.compress and checking both come back
    begin      -> begun <bytes> (a compressor and a decompressor, fed half the sample)
    finish     -> stream ok <bytes> (the rest through the same two streams; their output
                  must give back the whole sample)
    crc        -> crc <crc32> adler <adler32> of the sample
"""
import gzip
import os
import sys
import zlib

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from lineloop import mapped_lib, serve  # noqa: E402

SAMPLE = b"".join(b"line %d: the quick brown fox jumps over the lazy dog\n" % i for i in range(4000))
HALF = len(SAMPLE) // 2
stream = None


def handle(line):
    global stream
    if line == "lib":
        return mapped_lib("libz.so")
    if line == "roundtrip":
        z = zlib.compress(SAMPLE)
        if zlib.decompress(z) != SAMPLE:
            return "mismatch zlib"
        if gzip.decompress(gzip.compress(SAMPLE)) != SAMPLE:
            return "mismatch gzip"
        return "ok %d %d" % (len(z), z[1] >> 6)
    if line == "begin":
        c, d = zlib.compressobj(), zlib.decompressobj()
        out = d.decompress(c.compress(SAMPLE[:HALF]))
        stream = (c, d, out)
        return "begun %d" % HALF
    if line == "finish":
        c, d, out = stream
        out += d.decompress(c.compress(SAMPLE[HALF:]) + c.flush())
        out += d.flush()
        stream = None
        return "stream ok %d" % len(out) if out == SAMPLE else "stream mismatch %d" % len(out)
    if line == "crc":
        return "crc %d adler %d" % (zlib.crc32(SAMPLE), zlib.adler32(SAMPLE))
    return None


serve(handle)
