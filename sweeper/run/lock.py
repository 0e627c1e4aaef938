"""One driver per study, across hosts: a lease kept in the study's own Optuna storage.

Two drivers on one study would each ask Optuna for trials and launch them, and each would take the
other's RUNNING trials for ones a dead driver left behind (and re-queue them: duplicates). A lock
file sees only the drivers of its own host, so the lease lives where every driver of a study must
look anyway: its Optuna storage (a SQLite file, a journal file on a shared filesystem, a database
server). It works the same for every storage, because it uses one operation each of them makes
atomic: creating a study whose name is new.

**Layout.** A lease is a marker study ``<study>:driver-lease:<g>`` (``g`` = 0, 1, 2, ...: its
generation; study names cannot contain ``:``, so it never collides with a user's study) whose
system attr ``sweeper_driver_lease`` holds the owner: ``host``, ``pid``, ``process_start`` (the
pid's start time in ``/proc``, against pid reuse), ``machine`` (boot id and pid namespace),
``token`` (random, per process), ``acquired`` and ``ttl``; the attr ``sweeper_driver_heartbeat``
holds the last heartbeat: ``{"seq": n, "time": wall-clock seconds}`` (alone, so that a heartbeat appends
little to a journal; ``seq`` counts the heartbeats).
The study's lease is its highest generation; a released lease is deleted, so a storage holds a
marker only while a driver runs.

**Acquire** (:meth:`StudyLease.acquire`):

1. Read the highest generation ``g``. None: the candidate is 0. Held by a live owner: refused
   (:class:`LeaseHeld`, naming the owner and when the refusal ends). Stale: the candidate is
   ``g + 1``.
2. ``create_new_study("<study>:driver-lease:<candidate>")``. A name that exists is refused by
   every Optuna storage (a unique column in RDB storages; the order of the log in the journal
   storage), so of two drivers that start at the same moment, or take over the same stale lease,
   exactly one creates the candidate; the other re-reads and is refused.
3. Write the owner record; check that no higher generation appeared meanwhile; delete the older
   generations.

**Live or stale.** Seen from the same machine (equal boot id and pid namespace, whatever the host
names): live while the owner's pid runs the process that took the lease, so a driver killed on this
machine is taken over at once. Seen from another host: live while its heartbeat is younger than its
ttl (default :data:`DEFAULT_TTL_S`, env ``SWEEPER_DRIVER_LEASE_TTL``); the holder refreshes it every
ttl / 6 from a thread. The hosts' wall clocks only decide a refusal (a heartbeat 0 to ttl s old: live):
a lease they call stale (or stamped in the future) is taken over only after this driver has *watched*
its heartbeat count not move for a whole ttl on its own monotonic clock (:meth:`StudyLease.acquire`), so
a host whose clock runs ahead cannot take over a live lease. A generation
without an owner record (its creator is between steps 2 and 3) is awaited for up to
:data:`OWNERLESS_GRACE_S`, then stale.

**Holding.** Each heartbeat also confirms ownership: our generation holds our token and no higher
one exists. A driver paused for longer than the ttl (SIGSTOP, a hung filesystem) may have been taken
over; it finds the newer generation and is *lost*: :meth:`StudyLease.check` (which the driver calls
every loop round, and which confirms synchronously when the thread has not confirmed for two
heartbeats) raises :class:`LeaseLost`, and the driver stops without touching its trials (their jobs
belong to the new driver, which re-attaches to them).

This module imports optuna only inside functions; it never imports torch.
"""

from __future__ import annotations

import os
import socket
import sys
import threading
import time
import uuid
import warnings
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path
from typing import Any, Callable

from sweeper.study.schema import SpecError

LEASE_INFIX = ":driver-lease:"
LEASE_ATTR = "sweeper_driver_lease"
HEARTBEAT_ATTR = "sweeper_driver_heartbeat"
TTL_ENV = "SWEEPER_DRIVER_LEASE_TTL"
DEFAULT_TTL_S = 60.0
OWNERLESS_GRACE_S = 10.0
MIN_HEARTBEAT_S = 0.2
ACQUIRE_ATTEMPTS = 5


class LeaseHeld(SpecError):
    """Another live driver holds the study's lease: this one must not run it."""


class LeaseLost(SpecError):
    """This driver's lease was taken over (it was stale): it must stop without touching the trials."""


def lease_ttl(environ: dict[str, str] | None = None) -> float:
    """The lease ttl in seconds: env ``SWEEPER_DRIVER_LEASE_TTL`` or :data:`DEFAULT_TTL_S`."""
    raw = (os.environ if environ is None else environ).get(TTL_ENV)
    if not raw:
        return DEFAULT_TTL_S
    try:
        ttl = float(raw)
    except ValueError:
        ttl = float("nan")
    if not ttl > 0:
        raise SpecError(f"{TTL_ENV}={raw!r}: give the driver lease's ttl in seconds, > 0 (default {DEFAULT_TTL_S:g})")
    return ttl


def lease_study_name(study_name: str, generation: int) -> str:
    return f"{study_name}{LEASE_INFIX}{int(generation)}"


def is_lease_study(name: str) -> bool:
    """True for the marker studies of this module (for listings of a storage's studies)."""
    return LEASE_INFIX in name


# --------------------------------------------------------------------------- who holds it


def machine_id() -> str | None:
    """Boot id + pid namespace: two processes with the same value can see each other's pids."""
    try:
        boot = Path("/proc/sys/kernel/random/boot_id").read_text().strip()
        pid_namespace = os.stat("/proc/self/ns/pid").st_ino
    except OSError:
        return None
    return f"{boot}/{pid_namespace}"


def process_start_time(pid: int) -> int | None:
    """Field 22 of ``/proc/<pid>/stat`` (clock ticks after boot); None if unreadable."""
    try:
        fields = Path(f"/proc/{int(pid)}/stat").read_text().rsplit(")", 1)[1].split()
    except (OSError, IndexError):
        return None
    return int(fields[19]) if len(fields) > 19 else None


def process_alive(pid: int, start: int | None = None) -> bool:
    """True if ``pid`` runs (not a zombie) and, when ``start`` is given, is the process that started then."""
    try:
        os.kill(int(pid), 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        pass
    try:
        state = Path(f"/proc/{int(pid)}/stat").read_text().rsplit(")", 1)[1].split()[0]
        if state in ("Z", "X"):
            return False
    except (OSError, IndexError):
        return True
    return start is None or process_start_time(pid) in (None, start)


@dataclass(frozen=True)
class Owner:
    """Who takes a lease. :meth:`this_process` for a real driver; tests build others."""

    host: str
    pid: int
    process_start: int | None
    machine: str | None
    token: str

    @classmethod
    def this_process(cls) -> "Owner":
        pid = os.getpid()
        return cls(socket.gethostname(), pid, process_start_time(pid), machine_id(), uuid.uuid4().hex)

    def judge(self, record: dict[str, Any], now: float) -> tuple[bool | None, str]:
        """(live, why) for a lease ``record`` seen by this owner at wall time ``now``; live None: the wall
        clocks say stale (or disagree), which only watching the heartbeat count can confirm."""
        if record.get("machine") and record.get("machine") == self.machine:
            if process_alive(int(record["pid"]), record.get("process_start")):
                return True, "its process runs on this machine"
            return False, "its process is gone"
        age = now - float(record.get("heartbeat", 0.0))
        ttl = float(record.get("ttl") or DEFAULT_TTL_S)
        if 0.0 <= age <= ttl:
            return True, f"last heartbeat {age:.0f} s ago, ttl {ttl:g} s"
        return None, (f"its heartbeat is stamped {-age:.0f} s in the future (clocks differ)" if age < 0 else
                      f"no heartbeat for {age:.0f} s by the wall clocks (ttl {ttl:g} s)")


def _with_heartbeat(system_attrs: dict[str, Any]) -> dict[str, Any] | None:
    """The owner record with ``heartbeat`` (wall time of the last one) and ``beats`` (their count)."""
    record = system_attrs.get(LEASE_ATTR)
    if record is None:
        return None
    beat = system_attrs.get(HEARTBEAT_ATTR)
    if isinstance(beat, dict):
        return {**record, "heartbeat": beat.get("time", record.get("acquired", 0.0)), "beats": beat.get("seq", 0)}
    return {**record, "heartbeat": beat if beat is not None else record.get("acquired", 0.0), "beats": beat}


def describe_holder(record: dict[str, Any]) -> str:
    since = datetime.fromtimestamp(float(record.get("acquired", 0))).strftime("%Y-%m-%d %H:%M:%S")
    return f"pid {record.get('pid')} on host {record.get('host')} (since {since})"


# --------------------------------------------------------------------------- the lease


class StudyLease:
    """The driver lease of one study in one Optuna storage. See the module docstring.

    ::

        lease = StudyLease(storage, "my-study").acquire()    # LeaseHeld if another driver runs it
        lease.start_heartbeat()
        ...  lease.check()  ...                              # each loop round: LeaseLost if taken over
        lease.release()

    Args:
        storage: an Optuna storage (its own instance: the heartbeat thread uses it).
        study_name: the study.
        ttl: seconds without a heartbeat after which another host may take the lease over
            (None: :func:`lease_ttl`).
        owner: who takes it (None: this process).
        label: the storage as shown in messages (a redacted URL).
        log: where take-overs and heartbeat trouble are reported (None: stderr).
        ownerless_grace: seconds to wait for the owner record of a freshly created generation.
    """

    def __init__(self, storage: Any, study_name: str, *, ttl: float | None = None, owner: Owner | None = None,
                 label: str | None = None, log: Callable[[str], None] | None = None,
                 ownerless_grace: float = OWNERLESS_GRACE_S):
        self.storage = storage
        self.study_name = study_name
        self.ttl = float(ttl) if ttl is not None else lease_ttl()
        self.owner = owner or Owner.this_process()
        self.heartbeat_s = max(MIN_HEARTBEAT_S, self.ttl / 6)
        self.label = label
        self.ownerless_grace = ownerless_grace
        self.generation: int | None = None
        self.lost: str | None = None
        self._log = log or (lambda message: print(message, file=sys.stderr, flush=True))
        self._study_id: int | None = None
        self._record: dict[str, Any] = {}
        self._confirmed = 0.0
        self._mutex = threading.RLock()
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self._heartbeat_failing = False
        self._beats = 0

    # ---- reading

    def generations(self) -> dict[int, Any]:
        """{generation: FrozenStudy} of this study's lease markers."""
        prefix = self.study_name + LEASE_INFIX
        found = {}
        for study in self.storage.get_all_studies():
            suffix = study.study_name[len(prefix):] if study.study_name.startswith(prefix) else ""
            if suffix.isdigit():
                found[int(suffix)] = study
        return found

    def _record_of(self, generation: int) -> dict[str, Any] | None:
        """The owner record of a generation (None: none yet); KeyError if the generation is gone."""
        study_id = self.storage.get_study_id_from_name(lease_study_name(self.study_name, generation))
        return _with_heartbeat(self.storage.get_study_system_attrs(study_id))

    def _await_owner(self, generation: int) -> dict[str, Any] | None:
        """The owner record of a generation just created by someone else; None if none came in time."""
        deadline = time.monotonic() + self.ownerless_grace
        while True:
            record = self._record_of(generation)
            if record is not None or time.monotonic() >= deadline:
                return record
            time.sleep(0.05)

    def _watch(self, generation: int, record: dict[str, Any], why: str) -> tuple[bool | None, str]:
        """Watch a lease the wall clocks call stale for its ttl, on this host's monotonic clock: live if its
        heartbeat count moves; stale if it does not; None if the generation went or a newer one came."""
        ttl = float(record.get("ttl") or DEFAULT_TTL_S)
        self._log(f"study {self.study_name}: the driver lease of {describe_holder(record)} looks stale ({why}); "
                  f"watching its heartbeat for {ttl:g} s before taking it over")
        started = time.monotonic()
        while time.monotonic() - started < ttl:
            time.sleep(min(0.5, ttl / 10))
            try:
                current = self._record_of(generation)
            except KeyError:
                return None, "the lease was released"
            try:
                self._record_of(generation + 1)
                return None, "a newer lease appeared"
            except KeyError:
                pass
            if current is not None and current.get("beats") != record.get("beats"):
                return True, f"its heartbeat moved while this driver watched ({why})"
        return False, f"its heartbeat did not move for {ttl:g} s on this host's clock ({why})"

    # ---- acquire / refresh / release

    def acquire(self) -> "StudyLease":
        """Take the lease or raise :class:`LeaseHeld`."""
        import optuna

        for _ in range(ACQUIRE_ATTEMPTS):
            leases = self.generations()
            candidate = 0
            if leases:
                top = max(leases)
                try:
                    record = _with_heartbeat(leases[top].system_attrs) or self._await_owner(top)
                except KeyError:
                    continue  # released or taken over while we looked: read again
                if record is not None:
                    live, why = self.owner.judge(record, time.time())
                    if live is None:
                        live, why = self._watch(top, record, why)
                        if live is None:
                            continue  # released or taken over while we watched: read again
                    if live:
                        raise LeaseHeld(self._held_message(record, why))
                    self._log(f"study {self.study_name}: taking over the driver lease of {describe_holder(record)}: {why}")
                candidate = top + 1
            try:
                study_id = self.storage.create_new_study(
                    [optuna.study.StudyDirection.MINIMIZE], lease_study_name(self.study_name, candidate))
            except optuna.exceptions.DuplicatedStudyError:
                continue  # another driver created this generation first: read again
            now = time.time()
            o = self.owner
            self._record = {"host": o.host, "pid": o.pid, "process_start": o.process_start, "machine": o.machine,
                            "token": o.token, "acquired": now, "ttl": self.ttl}
            with self._mutex:
                self.storage.set_study_system_attr(study_id, LEASE_ATTR, self._record)
                self.generation, self._study_id = candidate, study_id
                if not self._confirm():
                    lost, self.lost = self.lost, None
                    self._delete_own()
                    raise LeaseHeld(f"study {self.study_name!r}: another driver took the lease at the same moment "
                                    f"({lost}); this one stops")
            for generation, study in leases.items():
                if generation < candidate:
                    self._delete_quietly(study._study_id)
            return self
        raise LeaseHeld(f"study {self.study_name!r}: other drivers kept taking its lease in {self._where()} at the "
                        f"same moment ({ACQUIRE_ATTEMPTS} attempts); run one driver per study")

    def _confirm(self) -> bool:
        """Still ours (our generation holds our token, no higher one exists)? Sets :attr:`lost` if not."""
        try:
            newer = self._record_of(self.generation + 1)
        except KeyError:
            pass
        else:
            self.lost = f"{describe_holder(newer) if newer else 'another driver'} took the lease over"
            return False
        try:
            record = self.storage.get_study_system_attrs(self._study_id).get(LEASE_ATTR) or {}
        except KeyError:
            record = {}
        if record.get("token") != self.owner.token:
            self.lost = "its lease marker was deleted or replaced"
            return False
        self._confirmed = time.monotonic()
        return True

    def refresh(self) -> None:
        """Confirm ownership and write a fresh heartbeat (the heartbeat thread calls this)."""
        with self._mutex:
            if self.lost is not None or self._study_id is None:
                return
            if not self._confirm():
                return
            self._beats += 1  # a count the other hosts watch: their clocks need not agree with ours
            self.storage.set_study_system_attr(self._study_id, HEARTBEAT_ATTR, {"seq": self._beats, "time": time.time()})

    def start_heartbeat(self) -> "StudyLease":
        def beat() -> None:
            while not self._stop.wait(self.heartbeat_s):
                try:
                    self.refresh()
                    if self._heartbeat_failing:
                        self._log(f"study {self.study_name}: the driver lease's heartbeat works again")
                    self._heartbeat_failing = False
                except Exception as error:  # noqa: BLE001 - keep beating; check() reports a loss
                    if not self._heartbeat_failing:
                        self._log(f"study {self.study_name}: could not refresh the driver lease in {self._where()} "
                                  f"({type(error).__name__}: {str(error).splitlines()[0] if str(error) else ''}); retrying")
                    self._heartbeat_failing = True
                if self.lost is not None:
                    return

        self._thread = threading.Thread(target=beat, name=f"sweeper-lease-{self.study_name}", daemon=True)
        self._thread.start()
        return self

    def check(self) -> None:
        """Raise :class:`LeaseLost` if the lease was taken over. Cheap: it reads the storage only when
        the heartbeat thread has not confirmed ownership for two heartbeats (e.g. after a pause)."""
        if self.lost is None and time.monotonic() - self._confirmed > 2 * self.heartbeat_s:
            try:
                self.refresh()
            except Exception:  # noqa: BLE001 - an unreachable storage is reported by the driver's own calls
                pass
        if self.lost is not None:
            raise LeaseLost(
                f"study {self.study_name!r}: this driver lost its lease in {self._where()}: {self.lost} (this driver "
                f"did not refresh it for more than {self.ttl:g} s). It stops without touching its trials: the other "
                f"driver re-attaches to them."
            )

    def release(self) -> None:
        """Stop the heartbeat and delete our lease marker (if it is still ours)."""
        self._stop.set()
        if self._thread is not None and self._thread is not threading.current_thread():
            self._thread.join(timeout=10)
        with self._mutex:
            if self._study_id is None:
                return
            try:
                self._delete_own()
            except Exception as error:  # noqa: BLE001
                self._log(f"study {self.study_name}: could not delete the driver lease marker "
                          f"({type(error).__name__}: {error}); the next driver takes it over once it is stale")
            self._study_id = None

    def _delete_own(self) -> None:
        record = self.storage.get_study_system_attrs(self._study_id).get(LEASE_ATTR) or {}
        if record.get("token") == self.owner.token:
            self._delete_quietly(self._study_id)

    def _delete_quietly(self, study_id: int) -> None:
        """Delete a lease marker; another driver may delete the same one at the same moment (a new
        holder deletes older generations): not an error, and SQLAlchemy's "expected to delete 1 row(s);
        0 were matched" warning is not shown."""
        with warnings.catch_warnings():
            warnings.filterwarnings("ignore", message=".*expected to delete")
            try:
                self.storage.delete_study(study_id)
            except Exception:  # noqa: BLE001 - gone already; a marker left behind is taken over once stale
                pass

    def __enter__(self) -> "StudyLease":
        return self.acquire().start_heartbeat()

    def __exit__(self, *exc: Any) -> None:
        self.release()

    # ---- messages

    def _where(self) -> str:
        return self.label or "the study's storage"

    def _held_message(self, record: dict[str, Any], why: str) -> str:
        ttl = float(record.get("ttl") or DEFAULT_TTL_S)
        return (
            f"study {self.study_name!r} is already being run by another driver: {describe_holder(record)}; {why}. "
            f"Two drivers on one study would launch duplicate trials, so this one does not start. Wait for that "
            f"driver to finish, or stop it. If it died, its lease (in {self._where()}) is taken over by the next "
            f"`sweeper run`: on the same machine as soon as its process is gone, from another host once it has "
            f"had no heartbeat for {ttl:g} s."
        )


def acquire_driver_lease(spec: Any, *, log: Callable[[str], None] | None = None) -> StudyLease:
    """The driver's lease on ``spec``'s study, heartbeat running (:class:`LeaseHeld` if another driver has it).
    It opens its own storage instance: the heartbeat thread must not share the driver's."""
    from sweeper.run.storage import check_cluster_storage, make_storage, redact_url

    if spec.executor.trials_on_other_nodes:  # refuse SQLite on a network filesystem before opening it (driver.preflight)
        check_cluster_storage(spec.study.storage, field="study.storage")
    storage = make_storage(spec.study.storage)
    lease = StudyLease(storage, spec.study.name, label=redact_url(spec.study.storage), log=log)
    return lease.acquire().start_heartbeat()
