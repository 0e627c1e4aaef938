"""The driver lease (sweeper/run/lock.py) on real Optuna storages: SQLite, the journal file, and the
PostgreSQL test server (marked ``postgres``). Drivers of other hosts are other :class:`Owner`s (a
different machine id, as a process on another node has); races and killed holders are real
processes."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest

from sweeper.run.lock import (LEASE_ATTR, LeaseHeld, LeaseLost, Owner, StudyLease, lease_study_name, lease_ttl,
                          process_start_time)
from sweeper.study.spec import SpecError
from sweeper.run.storage import make_storage

REPO = Path(__file__).resolve().parents[1]


@pytest.fixture(params=["sqlite", "journal", pytest.param("postgres", marks=pytest.mark.postgres)])
def storage_url(request, tmp_path):
    if request.param == "sqlite":
        return f"sqlite:///{tmp_path / 'optuna.db'}"
    if request.param == "journal":
        return f"journal://{tmp_path / 'optuna.journal'}"
    return request.getfixturevalue("postgres_database")("lease")


def other_host(name: str = "node7") -> Owner:
    """A driver on another machine: its pid means nothing here, only its heartbeat counts."""
    return Owner(host=name, pid=4242, process_start=None, machine=f"boot-of-{name}/1", token=f"token-{name}")


def lease_names(storage) -> list[str]:
    return sorted(s.study_name for s in storage.get_all_studies())


def test_second_driver_is_refused_while_the_first_holds_and_a_release_leaves_nothing(storage_url):
    storage = make_storage(storage_url)
    first = StudyLease(storage, "s", ttl=30).acquire()
    assert first.generation == 0 and lease_names(storage) == [lease_study_name("s", 0)]
    with pytest.raises(LeaseHeld) as refused:
        StudyLease(make_storage(storage_url), "s", ttl=30).acquire()
    message = str(refused.value)
    assert f"pid {os.getpid()} on host" in message and "its process runs on this machine" in message
    assert "as soon as its process is gone" in message and "once it has had no heartbeat for 30 s" in message
    StudyLease(storage, "other-study", ttl=30).acquire().release()      # leases are per study
    first.release()
    assert lease_names(storage) == []                                  # nothing left behind
    again = StudyLease(storage, "s", ttl=30).acquire()
    assert again.generation == 0
    again.release()


HOLDER = """
import sys, time
from sweeper.run.storage import make_storage
from sweeper.run.lock import StudyLease
lease = StudyLease(make_storage(sys.argv[1]), "s", ttl=float(sys.argv[2])).acquire().start_heartbeat()
print("held", lease.generation, flush=True)
time.sleep(600)
"""


def test_a_killed_driver_on_this_machine_is_taken_over_at_once(storage_url):
    holder = subprocess.Popen([sys.executable, "-c", HOLDER, storage_url, "600"], cwd=REPO, stdout=subprocess.PIPE, text=True)
    try:
        assert holder.stdout.readline().split() == ["held", "0"]
        with pytest.raises(LeaseHeld, match=rf"pid {holder.pid} on host"):
            StudyLease(make_storage(storage_url), "s").acquire()
    finally:
        holder.send_signal(signal.SIGKILL)
        holder.wait()
    storage = make_storage(storage_url)
    lease = StudyLease(storage, "s", ttl=600).acquire()                # its heartbeat would be fresh for 10 minutes
    assert lease.generation == 1 and lease_names(storage) == [lease_study_name("s", 1)]   # the dead one's is deleted
    lease.release()


def test_another_hosts_lease_is_live_until_its_heartbeat_is_older_than_its_ttl(storage_url):
    storage = make_storage(storage_url)
    remote = StudyLease(storage, "s", ttl=0.6, owner=other_host()).acquire().start_heartbeat()
    time.sleep(1.5)                                                    # longer than the ttl: the heartbeat keeps it live
    with pytest.raises(LeaseHeld) as refused:
        StudyLease(storage, "s").acquire()
    assert "pid 4242 on host node7" in str(refused.value) and "ttl 0.6 s" in str(refused.value)
    remote._stop.set()                                                 # the remote driver hangs: no more heartbeats
    remote._thread.join()
    time.sleep(0.8)
    taker = StudyLease(storage, "s", ttl=30).acquire()
    assert taker.generation == 1
    # the hung driver wakes up: its next check finds the newer generation and it must stop
    with pytest.raises(LeaseLost, match=r"this driver lost its lease.*took the lease over"):
        remote.check()
    remote.release()                                                   # must not delete the new holder's lease
    assert lease_names(storage) == [lease_study_name("s", 1)]
    with pytest.raises(LeaseHeld):
        StudyLease(storage, "s", owner=other_host("node8")).acquire()
    taker.release()


def test_a_generation_without_owner_is_awaited_then_taken_over(storage_url):
    import optuna

    storage = make_storage(storage_url)
    # a driver created the marker and its record follows a moment later: refused
    marker = storage.create_new_study([optuna.study.StudyDirection.MINIMIZE], lease_study_name("s", 0))
    record = {"host": "node7", "pid": 1, "machine": "boot-of-node7/1", "token": "t", "acquired": time.time(), "ttl": 30}
    writer = threading.Timer(0.2, lambda: storage.set_study_system_attr(marker, LEASE_ATTR, record))
    writer.start()
    with pytest.raises(LeaseHeld, match="host node7"):
        StudyLease(make_storage(storage_url), "s", ownerless_grace=5).acquire()
    writer.join()
    # a creator that died before writing its record: taken over after the grace period
    storage.create_new_study([optuna.study.StudyDirection.MINIMIZE], lease_study_name("t", 0))
    started = time.monotonic()
    lease = StudyLease(storage, "t", ownerless_grace=0.3).acquire()
    assert lease.generation == 1 and time.monotonic() - started >= 0.3
    lease.release()


RACER = """
import os, sys, time
from sweeper.run.storage import make_storage
from sweeper.run.lock import StudyLease, LeaseHeld
url, go, done = sys.argv[1:4]
storage = make_storage(url)
print("ready", flush=True)
while not os.path.exists(go):
    time.sleep(0.001)
try:
    lease = StudyLease(storage, "s", ttl=30).acquire()
except LeaseHeld as refused:
    print("refused", str(refused).split(";")[0], flush=True)
    sys.exit(0)
print("won", lease.generation, flush=True)
while not os.path.exists(done):
    time.sleep(0.01)
lease.release()
"""


def race(storage_url: str, tmp_path: Path, drivers: int = 3) -> list[list[str]]:
    go, done = tmp_path / "go", tmp_path / "done"
    processes = [subprocess.Popen([sys.executable, "-c", RACER, storage_url, str(go), str(done)], cwd=REPO,
                                  stdout=subprocess.PIPE, text=True) for _ in range(drivers)]
    try:
        for process in processes:
            assert process.stdout.readline().strip() == "ready"
        go.touch()                                                     # all of them start acquiring now
        results = [process.stdout.readline().split() for process in processes]
        done.touch()
        for process in processes:
            assert process.wait(60) == 0
    finally:
        for process in processes:
            if process.poll() is None:
                process.kill()
    return results


def test_drivers_starting_at_the_same_moment_one_wins(storage_url, tmp_path):
    results = race(storage_url, tmp_path)                              # on a new storage: its tables are made too
    assert sorted(r[0] for r in results) == ["refused", "refused", "won"], results
    assert [r for r in results if r[0] == "won"][0][1] == "0"
    assert lease_names(make_storage(storage_url)) == []


def test_drivers_taking_over_the_same_stale_lease_at_once_one_wins(storage_url, tmp_path):
    storage = make_storage(storage_url)
    StudyLease(storage, "s", ttl=0.3, owner=other_host()).acquire()    # a remote driver that died
    time.sleep(0.5)
    results = race(storage_url, tmp_path)
    assert sorted(r[0] for r in results) == ["refused", "refused", "won"], results
    assert [r for r in results if r[0] == "won"][0][1] == "1"


def test_pid_reuse_is_not_mistaken_for_the_holder(tmp_path):
    me = Owner.this_process()
    record = {"host": me.host, "pid": os.getpid(), "process_start": process_start_time(os.getpid()), "machine": me.machine,
              "heartbeat": 0, "ttl": 1}
    assert me.judge(record, time.time())[0] is True                    # this process: live, however old the heartbeat
    assert me.judge({**record, "process_start": record["process_start"] - 1}, time.time()) == (False, "its process is gone")
    dead = subprocess.Popen([sys.executable, "-c", "pass"])
    dead.wait()
    assert me.judge({**record, "pid": dead.pid, "process_start": None}, time.time())[0] is False


def test_lease_ttl_from_the_environment():
    assert lease_ttl({}) == 60.0
    assert lease_ttl({"SWEEPER_DRIVER_LEASE_TTL": "5"}) == 5.0
    for bad in ("soon", "0", "-3"):
        with pytest.raises(SpecError, match=rf"SWEEPER_DRIVER_LEASE_TTL='{bad}': give the driver lease's ttl in seconds"):
            lease_ttl({"SWEEPER_DRIVER_LEASE_TTL": bad})
