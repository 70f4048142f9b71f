#!/usr/bin/env python3
"""make bench-compare: hotagent against Frida on the same fixture, side by side.

The `threads` fixture (no worker threads) calls libfoo's foo_version() through its GOT and
through a pointer taken at start-up. Each tool replaces foo_version with v2's, then the fixture
times the calls:
  - hotagent: `hotctl reload libfoo_v2.so` (wall time of the command);
  - Frida, native: attach, load libfoo_v2.so into the target, Interceptor.replace the old
    function with v2's (wall time from attach to the replacement being in place);
  - Frida, JavaScript: the same with a NativeCallback written in JavaScript, Frida's usual way.

Usage: frida_compare.py TARGET_DIR CALLS   (TARGET_DIR: cargo's target folder, built by make)
Prints a markdown table.
"""
import os
import subprocess
import sys
import tempfile
import time

import frida

TARGET = os.path.abspath(sys.argv[1])
CALLS = int(sys.argv[2]) if len(sys.argv) > 2 else 20_000_000
FIX = os.path.join(TARGET, "fixtures", "lazy-pie")
V2 = os.path.join(FIX, "libfoo_v2.so")


def start(agent, socket_dir):
    env = dict(os.environ, LD_LIBRARY_PATH=FIX, HOTAGENT_SOCKET_DIR=socket_dir)
    env.pop("LD_PRELOAD", None)
    if agent:
        env["LD_PRELOAD"] = os.path.join(TARGET, "release", "libhotagent.so")
    p = subprocess.Popen([os.path.join(FIX, "threads"), "0"], stdin=subprocess.PIPE,
                         stdout=subprocess.PIPE, env=env, text=True, bufsize=1)
    ask(p, "version")  # running, and (with the agent) past its constructor
    if agent:
        sock = os.path.join(socket_dir, f"{p.pid}.sock")
        deadline = time.time() + 10
        while not os.path.exists(sock) and time.time() < deadline:
            time.sleep(0.005)
    return p


def ask(p, line):
    p.stdin.write(line + "\n")
    return p.stdout.readline().strip()


def calls(p):
    fields = dict(f.split("=") for f in ask(p, f"bench {CALLS}").split())
    return float(fields["got_ns"]), float(fields["ptr_ns"])


def hotagent(socket_dir):
    p = start(True, socket_dir)
    before = calls(p)
    hotctl = os.path.join(TARGET, "release", "hotctl")
    t0 = time.perf_counter()
    subprocess.run([hotctl, "--pid", str(p.pid), "reload", V2], check=True,
                   env=dict(os.environ, HOTAGENT_SOCKET_DIR=socket_dir),
                   stdout=subprocess.DEVNULL)
    took = time.perf_counter() - t0
    version = ask(p, "version")
    after = calls(p)
    # The first reload also pays one-time costs (membarrier registration, stub pages): later ones.
    later = []
    for _ in range(10):
        run(hotctl, p, socket_dir, "rollback")
        t0 = time.perf_counter()
        run(hotctl, p, socket_dir, "reload", V2)
        later.append(time.perf_counter() - t0)
    p.kill()
    later.sort()
    return took, later[len(later) // 2], version, before, after


def run(hotctl, p, socket_dir, *args):
    subprocess.run([hotctl, "--pid", str(p.pid), *args], check=True,
                   env=dict(os.environ, HOTAGENT_SOCKET_DIR=socket_dir),
                   stdout=subprocess.DEVNULL)


NATIVE = """
const v2 = Module.load(%r);
const old = Process.getModuleByName('libfoo.so').getExportByName('foo_version');
Interceptor.replace(old, v2.getExportByName('foo_version'));
Interceptor.flush();
send('ready');
"""

JS = """
const old = Process.getModuleByName('libfoo.so').getExportByName('foo_version');
Interceptor.replace(old, new NativeCallback(function () { return 2; }, 'int', []));
Interceptor.flush();
send('ready');
"""


def frida_run(source):
    p = start(False, tempfile.gettempdir())
    before = calls(p)
    ready = []
    t0 = time.perf_counter()
    session = frida.attach(p.pid)
    script = session.create_script(source)
    script.on("message", lambda m, _d: ready.append(m))
    script.load()
    while not ready:
        time.sleep(0.0005)
    took = time.perf_counter() - t0
    version = ask(p, "version")
    after = calls(p)
    session.detach()
    p.kill()
    return took, None, version, before, after


def main():
    rows = []
    with tempfile.TemporaryDirectory() as d:
        os.chmod(d, 0o700)
        rows.append(("hotagent `hotctl reload`",) + hotagent(d))
    rows.append(("Frida, native replacement",) + frida_run(NATIVE % V2))
    rows.append(("Frida, JavaScript replacement",) + frida_run(JS))
    print(f"foo_version() replaced by v2's in the `threads` fixture; calls timed over {CALLS} "
          f"calls (Frida {frida.__version__}).\n")
    print("| tool | attach + replace, first | later (median of 10) | answer after | "
          "GOT call before | GOT call after | pointer call after |")
    print("|---|---|---|---|---|---|---|")
    for name, took, later, version, (g0, _p0), (g1, p1) in rows:
        later = f"{later * 1000:.1f} ms" if later is not None else "(attach again)"
        print(f"| {name} | {took * 1000:.1f} ms | {later} | {version} | {g0:.2f} ns | "
              f"{g1:.2f} ns ({g1 / g0:.2f}x) | {p1:.2f} ns |")


if __name__ == "__main__":
    main()
