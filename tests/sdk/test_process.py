"""The SDK in a process of its own: exit with a pending queue (drained, never hanging) and fork."""

from __future__ import annotations

import socket
import time

from .conftest import Account, Database, Server, run_script


def _env(url: str, key: str) -> dict[str, str]:
    return {"AGENTRAIL_URL": url, "AGENTRAIL_API_KEY": key}


def test_exit_with_a_pending_queue_sends_it(server: Server, account: Account, db: Database):
    script = """
import agentrail
client = agentrail.Agentrail(flush_interval=60, batch_size=1000)  # nothing would go before exit
for n in range(500):
    client.log("exit", metadata={"n": n})
assert client.stats().acknowledged == 0
"""
    done = run_script(script, _env(server.url, account.key))
    assert done.returncode == 0, done.stderr
    keys = db.keys(account.org_id)
    assert len(keys) == 500 and len(set(keys)) == 500


def test_exit_never_hangs_on_a_server_that_does_not_answer(account: Account):
    silent = socket.socket()
    silent.bind(("127.0.0.1", 0))
    silent.listen(16)  # connections complete in the kernel; nobody ever reads or answers
    try:
        script = """
import agentrail
client = agentrail.Agentrail(drain_timeout=1.0, request_timeout=30, flush_interval=0.01)
for n in range(200):
    client.log("exit", metadata={"n": n})
"""
        started = time.monotonic()
        done = run_script(script, _env(f"http://127.0.0.1:{silent.getsockname()[1]}", account.key))
        elapsed = time.monotonic() - started
    finally:
        silent.close()
    assert done.returncode == 0, done.stderr
    assert elapsed < 8, elapsed  # drain time 1 s (+1 s grace), plus the interpreter's start
    assert "dropped 200 record(s) (shutdown" in done.stderr, done.stderr


def test_fork_child_and_parent_each_send_their_own_once(server: Server, account: Account, db: Database):
    script = """
import os, threading, time, agentrail
client = agentrail.Agentrail(flush_interval=0.01, batch_size=20)
stop = threading.Event()
def busy():  # the parent keeps logging while it forks: the sender may be mid-batch, holding its lock
    n = 0
    while not stop.is_set():
        client.log("parent-busy", metadata={"n": n})
        n += 1
        time.sleep(0.0005)
threading.Thread(target=busy, daemon=True).start()
for n in range(10):
    client.log("parent-before", metadata={"n": n})
pid = os.fork()
if pid == 0:
    for n in range(5):
        client.log("child", metadata={"n": n})
    os._exit(0 if client.flush(30) and client.stats().logged == 5 else 3)
stop.set()
for n in range(5):
    client.log("parent-after", metadata={"n": n})
ok = client.flush(30)
_, status = os.waitpid(pid, 0)
print(ok, os.waitstatus_to_exitcode(status), client.stats().logged)
"""
    done = run_script(script, _env(server.url, account.key))
    assert done.returncode == 0, done.stderr
    ok, child_status, parent_logged = done.stdout.split()
    assert (ok, child_status) == ("True", "0"), done.stdout + done.stderr
    rows = db.rows(
        "SELECT action, count(*), count(DISTINCT idempotency_key) FROM audit_logs WHERE org_id = :o GROUP BY action",
        o=account.org_id,
    )
    counts = {action: (n, distinct) for action, n, distinct in rows}
    assert counts["parent-before"] == (10, 10)
    assert counts["parent-after"] == (5, 5)
    assert counts["child"] == (5, 5)  # the child sent its own records, not the parent's queue again
    busy = counts["parent-busy"]
    assert busy[0] == busy[1] and busy[0] + 15 == int(parent_logged)
    keys = db.keys(account.org_id)
    assert len(keys) == len(set(keys))


def test_exit_drains_a_client_nobody_holds_any_more(server: Server, account: Account, db: Database):
    script = """
import agentrail
def work():
    client = agentrail.Agentrail(flush_interval=60)
    for n in range(50):
        client.log("orphan", metadata={"n": n})
work()  # the client is garbage now; its queue is not
import gc; gc.collect()
"""
    done = run_script(script, _env(server.url, account.key))
    assert done.returncode == 0, done.stderr
    assert len(set(db.keys(account.org_id))) == 50
