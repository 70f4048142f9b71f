"""What every driver shares: the harness's line protocol (tests/fixtures/cmdloop.h) and the
path of a library as this process has it mapped."""
import sys


def mapped_lib(needle):
    """The path of the first mapping whose path contains `needle`, or "none"."""
    with open("/proc/self/maps") as maps:
        for line in maps:
            if needle in line:
                return line.split(None, 5)[-1].strip()
    return "none"


def serve(handle):
    """One command a line on stdin, one answer line: `quit` -> `bye`, an unknown command (None
    from `handle`) -> `error unknown command: LINE`, and any exception -> `error <type>:
    <message>`, so a broken library shows as a wrong answer, not a hung test."""
    for line in sys.stdin:
        line = line.rstrip("\r\n")
        if line == "quit":
            print("bye", flush=True)
            break
        try:
            answer = handle(line)
            if answer is None:
                answer = "error unknown command: " + line
        except Exception as e:  # the answer names it; the loop goes on
            answer = "error %s: %s" % (type(e).__name__, e)
        print(answer, flush=True)
