"""`qunguard services` runs a real server in the foreground and stops it on SIGTERM."""

import os
import signal
import subprocess
import sys
import time

import pytest

from tests.conftest import ROOT, wait_for

pytestmark = pytest.mark.slow


def test_sigterm_stops_the_server_it_started(tmp_path):
    proc = subprocess.Popen([sys.executable, "-m", "pipeline.cli", "services", "tansu", "--dir", str(tmp_path)],
                            cwd=ROOT, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    try:
        line = proc.stdout.readline()
        assert "tansu running" in line, line
        children = subprocess.run(["pgrep", "-P", str(proc.pid)], capture_output=True, text=True).stdout.split()
        assert children, "the broker runs as a child"
        proc.send_signal(signal.SIGTERM)
        assert proc.wait(20) == 0
        time.sleep(0.5)
        for pid in children:
            assert wait_for(lambda p=int(pid): not _alive(p), 10, f"broker {pid} to exit")
    finally:
        proc.kill()


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    try:  # a zombie is gone for our purposes
        with open(f"/proc/{pid}/stat") as fh:
            return fh.read().split()[2] != "Z"
    except FileNotFoundError:
        return False
