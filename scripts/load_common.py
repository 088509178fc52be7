"""What the load scripts (overload.py, agent_faults.py, soak.py) share: finding
the baton binary, the common command-line options and folders, RSS sampling,
sanitizer reports, free ports and agent processes."""
import argparse
import os
import shutil
import signal
import socket
import subprocess
import sys
import tempfile

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
SANITIZER_MARKS = ("ERROR: AddressSanitizer", "ERROR: LeakSanitizer", "WARNING: ThreadSanitizer", "runtime error:")


def find_baton():
    for d in ("build/release", "build/ci"):
        p = os.path.join(ROOT, d, "tools/baton/baton")
        if os.path.exists(p):
            return p
    return shutil.which("baton")


def parser(doc):
    """An argument parser with --baton, --smoke and --out."""
    ap = argparse.ArgumentParser(description=doc.split("\n")[0])
    ap.add_argument("--baton", default=None, help="the baton binary (default: build/release, else build/ci)")
    ap.add_argument("--smoke", action="store_true", help="the short CI run")
    ap.add_argument("--out", default=None, help="where configs, reports and logs go (default: a new temp folder)")
    return ap


def setup(args, name):
    """(baton, out, env) for parsed `args`; exits 2 without a baton binary."""
    baton = args.baton or find_baton()
    if not baton:
        print(f"{name}: no baton binary; build first (cmake --build build/release) or give --baton", file=sys.stderr)
        sys.exit(2)
    out = args.out or tempfile.mkdtemp(prefix=f"baton_{name.split('.')[0]}_")
    os.makedirs(out, exist_ok=True)
    env = dict(os.environ)
    env.setdefault("BATON_CACHE_DIR", os.path.join(out, "cache"))
    return baton, out, env


def has_sanitizer_report(text):
    return any(mark in text for mark in SANITIZER_MARKS)


def rss_mb(pid):
    try:
        with open(f"/proc/{pid}/status") as f:
            for line in f:
                if line.startswith("VmRSS:"):
                    return int(line.split()[1]) / 1024.0
    except OSError:
        return None
    return None


def free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class Agent:
    """A `baton agent` on 127.0.0.1:port with `folder`/agent.yaml, logging to `folder`/agent.log."""

    def __init__(self, baton, port, folder, env):
        self.cmd = [baton, "agent", "--listen", f"127.0.0.1:{port}", "--config", os.path.join(folder, "agent.yaml")]
        self.log_path = os.path.join(folder, "agent.log")
        self.log = open(self.log_path, "a")
        self.env = env
        self.proc = None

    def start(self, wait=True):
        self.proc = subprocess.Popen(self.cmd, stdout=subprocess.PIPE, stderr=self.log, env=self.env, text=True)
        if wait:
            line = self.proc.stdout.readline()
            if "listening on" not in line:
                print(f"the agent did not start: {line!r} (see {self.log_path})", file=sys.stderr)
                sys.exit(2)

    def signal(self, sig):
        if self.proc and self.proc.poll() is None:
            self.proc.send_signal(sig)

    def kill(self):
        self.signal(signal.SIGKILL)
        if self.proc:
            self.proc.wait()

    def stop(self):
        """SIGCONT + SIGTERM; returns its exit status."""
        if self.proc and self.proc.poll() is None:
            self.proc.send_signal(signal.SIGCONT)
            self.proc.terminate()
            try:
                self.proc.wait(timeout=10)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
        return self.proc.returncode if self.proc else None


def run_problems(report, run_output, agents, agent_codes):
    """What the fault scripts require of a verified `baton run --json` report
    with agents: no sanitizer report from the run or an agent, every agent
    exits 0 on SIGTERM, nothing lost (abandoned) or answered twice, every
    answer verified, nothing failed."""
    problems = []
    if has_sanitizer_report(run_output):
        problems.append("baton run printed a sanitizer report")
    for a in agents:
        with open(a.log_path) as f:
            if has_sanitizer_report(f.read()):
                problems.append(f"an agent printed a sanitizer report (see {a.log_path})")
    if any(code != 0 for code in agent_codes):
        problems.append(f"agents exited {agent_codes} on SIGTERM (want 0)")
    if report["abandoned"] != 0:
        problems.append(f"{report['abandoned']} requests were lost (abandoned at the drain limit)")
    if report["answered_twice"] != 0:
        problems.append(f"{report['answered_twice']} requests were answered twice")
    if report["verify"]["checked"] <= 0 or report["verify"]["mismatches"] != 0:
        problems.append(f"verification: {report['verify']}")
    failed = sum(m["failed"] for m in report["models"])
    if failed != 0:
        problems.append(f"{failed} requests failed: " + "; ".join(m.get("first_error", "") for m in report["models"]))
    return problems


def report_problems(problems):
    """Prints each problem; the exit status (1 when there is one)."""
    for p in problems:
        print("FAIL " + p)
    return 1 if problems else 0
