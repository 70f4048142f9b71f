"""OpenSSL's libcrypto in Debian's python3 (hashlib, hmac and ssl link libcrypto.so.3), driven
line by line on stdin (tests/realworld/openssl.rs), in the harness's line protocol.

OpenSSL keeps much private state: its provider registry and method stores (filled at the first
hashlib call), the default library context, the DRBG, error-queue keys, locks.

    lib     -> the path of the libcrypto mapped in this process
    begin   -> begun (a SHA-256 and an HMAC-SHA512 object, fed half their input, kept live)
    digest  -> the hex heads of: the live objects' digests (copies: the objects stay as they
               are), fresh SHA3-256, MD5 and BLAKE2b digests, a PBKDF2-HMAC derivation
    hello   -> hello N (an SSL client over memory BIOs writes its ClientHello: N bytes)
    random  -> random 16 fresh (two draws of 16 bytes from OpenSSL's DRBG, not equal)
"""
import hashlib
import hmac
import ssl
import os
import sys

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from lineloop import mapped_lib, serve  # noqa: E402

live = None


def handle(line):
    global live
    if line == "lib":
        return mapped_lib("libcrypto.so")
    if line == "begin":
        h = hashlib.sha256(b"first half of the input, ")
        m = hmac.new(b"key", b"first half, ", "sha512")
        live = (h, m)
        return "begun"
    if line == "digest":
        h, m = (x.copy() for x in live)
        h.update(b"second half")
        m.update(b"second half")
        return " ".join(
            [
                h.hexdigest()[:12],
                m.hexdigest()[:12],
                hashlib.sha3_256(b"x").hexdigest()[:12],
                hashlib.md5(b"q").hexdigest()[:12],
                hashlib.blake2b(b"b").hexdigest()[:12],
                hashlib.pbkdf2_hmac("sha256", b"pw", b"salt", 1000).hex()[:12],
            ]
        )
    if line == "hello":
        ctx = ssl.create_default_context()
        incoming, outgoing = ssl.MemoryBIO(), ssl.MemoryBIO()
        obj = ctx.wrap_bio(incoming, outgoing, server_hostname="example.test")
        try:
            obj.do_handshake()
        except ssl.SSLWantReadError:
            pass
        return "hello %d" % len(outgoing.read())
    if line == "random":
        a, b = ssl.RAND_bytes(16), ssl.RAND_bytes(16)
        return "random %d %s" % (len(a), "fresh" if a != b else "repeated")
    return None


serve(handle)
