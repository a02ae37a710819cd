#!/usr/bin/env python3
"""Run every test binary of the crate, several at once, as `cargo test --no-fail-fast` would.

`cargo test` runs its test binaries one after another. Most of ours wait on LXD, redis or
child processes, not on the CPU, so the suite runs a few binaries at a time: the slowest
first (so they never end up alone at the tail), each binary's output printed whole when it
ends (never interleaved), and a closing line with the totals. Exit status 1 when any test
binary failed (or could not be run), else 0.

A binary that runs longer than --binary-timeout seconds is killed with everything it started
(its own process group) and counted as failed, with what it printed so far: libtest's "has
been running for over 60 seconds" lines name the tests that hung. A hang then fails the run
in minutes, saying where, instead of holding CI until its own limit.

Usage: run_tests.py [--jobs N] -- <cargo test arguments, e.g. --locked --all-targets --features testkit>
"""

import argparse
import json
import os
import re
import signal
import subprocess
import sys
import threading
import time

# Seconds each binary took in a serial CI run on a 2-core machine: only the order matters
# (longest first). Binaries not named here count as short.
KNOWN_SECONDS = {
    "crash_safety": 151,
    "reactive_e2e": 83,
    "e2e_charm": 52,
    "e2e_lifecycle": 38,
    "juju_actions": 35,
    "reconcile": 30,
    "reactive": 26,
    "juju_hooks": 23,
    "network_acl": 23,
    "network_charm": 22,
    "shared_machine": 21,
    "lxd_spawn": 20,
    "lxd_cli": 19,
    "reactive_mongo": 15,
    "juju_charm_archive": 15,
    "e2e_metrics": 15,
    "reactive_redis": 10,
    "github_client": 10,
    "queue_round_trips": 9,
    "reactive_worker_lxd": 8,
    "charm_fleet": 6,
    "setup_host": 6,
    "github_runner": 6,
}

# Binaries whose tests run one at a time inside the binary: network_charm's tests each
# converge a bridge and an ACL of their own through dispatch, and under CI load two of them
# failed about one run in four when they ran side by side (an ACL write or delete of one
# unit seen late); one at a time they take about 2.5 minutes, within the slowest lane.
ONE_TEST_AT_A_TIME = {"network_charm"}

RESULT = re.compile(r"^test result: (\w+)\. (\d+) passed; (\d+) failed; (\d+) ignored")


def test_binaries(cargo_args):
    """Build every test target (cargo test --no-run) and list (name, kind, executable)."""
    cmd = ["cargo", "test", "--no-run", "--message-format=json-render-diagnostics"] + cargo_args
    build = subprocess.run(cmd, stdout=subprocess.PIPE, text=True)
    if build.returncode != 0:
        sys.exit(build.returncode)
    found = []
    for line in build.stdout.splitlines():
        try:
            msg = json.loads(line)
        except json.JSONDecodeError:
            continue
        if msg.get("reason") != "compiler-artifact" or not msg.get("executable"):
            continue
        if not msg.get("profile", {}).get("test"):
            continue
        target = msg["target"]
        found.append((target["name"], target["kind"][0], msg["executable"]))
    return found


def run_binary(argv, timeout):
    """Run one test binary in its own process group; (output, exit code, timed out)."""
    proc = subprocess.Popen(argv, stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                            stdin=subprocess.DEVNULL, cwd=os.getcwd(), start_new_session=True)
    timed_out = False
    try:
        out, _ = proc.communicate(timeout=timeout)
    except subprocess.TimeoutExpired:
        timed_out = True
        hung = diagnose(proc.pid)
        try:
            os.killpg(proc.pid, signal.SIGKILL)
        except ProcessLookupError:
            pass
        # What it printed so far; a grandchild that left the group may still hold the pipe.
        try:
            out, _ = proc.communicate(timeout=30)
        except subprocess.TimeoutExpired:
            proc.kill()
            out = b"(its output pipe stayed open after the kill)\n"
    text = out.decode("utf-8", "replace")
    if timed_out:
        text += f"\n*** killed after {timeout:.0f} s; what it was waiting on: ***\n{hung}"
    return text, proc.returncode, timed_out


def diagnose(pgid):
    """The hung binary's processes (the `lxc` or hook it waits for) and LXD's operations."""
    parts = []
    for title, cmd in [
        ("its processes", ["ps", "-e", "-o", "pid,ppid,pgid,etimes,args"]),
        ("LXD operations", ["lxc", "query", "/1.0/operations?recursion=1&all-projects=true"]),
    ]:
        try:
            out = subprocess.run(cmd, stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                                 stdin=subprocess.DEVNULL, timeout=20).stdout.decode(
                                     "utf-8", "replace")
        except (OSError, subprocess.TimeoutExpired) as e:
            out = f"({' '.join(cmd)}: {e})\n"
        if title == "its processes":
            lines = out.splitlines()
            out = "\n".join(lines[:1] + [l for l in lines[1:]
                                          if len(l.split()) > 2 and l.split()[2] == str(pgid)])
            out += "\n"
        parts.append(f"--- {title} ---\n{out}")
    return "".join(parts)


def main():
    parser = argparse.ArgumentParser()
    parser.add_argument("--jobs", type=int, default=int(os.environ.get("TEST_JOBS", "3")))
    parser.add_argument("--binary-timeout", type=float,
                        default=float(os.environ.get("TEST_BINARY_TIMEOUT", "600")))
    parser.add_argument("cargo_args", nargs=argparse.REMAINDER)
    args = parser.parse_args()
    cargo_args = [a for a in args.cargo_args if a != "--"]
    binaries = test_binaries(cargo_args)
    binaries.sort(key=lambda b: -KNOWN_SECONDS.get(b[0], 1))
    queue = list(binaries)
    lock = threading.Lock()
    totals = {"passed": 0, "failed": 0, "ignored": 0}
    failures = []
    started = time.monotonic()

    def lane():
        while True:
            with lock:
                if not queue:
                    return
                name, kind, exe = queue.pop(0)
            begin = time.monotonic()
            argv = [exe] + (["--test-threads=1"] if name in ONE_TEST_AT_A_TIME else [])
            out, returncode, timed_out = run_binary(argv, args.binary_timeout)
            took = time.monotonic() - begin
            with lock:
                sys.stdout.write(f"     Running {kind} {name} ({exe}) [{took:.1f} s]\n")
                sys.stdout.write(out)
                if not out.endswith("\n"):
                    sys.stdout.write("\n")
                sys.stdout.flush()
                for line in out.splitlines():
                    m = RESULT.match(line)
                    if m:
                        totals["passed"] += int(m.group(2))
                        totals["failed"] += int(m.group(3))
                        totals["ignored"] += int(m.group(4))
                if timed_out:
                    failures.append(f"{kind} {name} (killed after {args.binary_timeout:.0f} s: "
                                    "see its 'running for over 60 seconds' lines)")
                elif returncode != 0:
                    failures.append(f"{kind} {name} (exit {returncode})")

    lanes = [threading.Thread(target=lane) for _ in range(max(1, args.jobs))]
    for t in lanes:
        t.start()
    for t in lanes:
        t.join()
    wall = time.monotonic() - started
    print(f"\n{len(binaries)} test binaries, {args.jobs} at a time, in {wall:.0f} s")
    for f in failures:
        print(f"error: test failed: {f}")
    print(f"{totals['passed']} passed, {totals['failed']} failed, {totals['ignored']} skipped")
    sys.exit(1 if failures else 0)


if __name__ == "__main__":
    main()
