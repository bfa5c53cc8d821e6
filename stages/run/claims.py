"""Claimed work: two `run` processes on one output folder (two terminals, two overlapping shards of a job array,
two Ray clusters) never make the same video twice.

Before a video starts, its worker takes the claim file `.NAME.claim` beside the video's outputs. The claim is
created with O_CREAT | O_EXCL, which is atomic on local file systems and on NFSv3+ (the lock-file rule of
open(2)), and records the owner: host, pid, the pid's start time (so a reused pid is not mistaken for the owner)
and a random token. It is a lease: the owner renews it (touches its mtime) every LEASE/4 seconds from a thread
while it works and deletes it when the video is finished or failed. Another process may take a claim over only
when it is stale:

- the lease has expired (mtime older than LEASE seconds: the owner stopped renewing; its machine died), or
- the owner ran on this host and its process is gone (kill -9, a crash): no need to wait out the lease.

A stale claim is taken over by renaming it to a private name (only one renamer wins), checking that the file
moved is still the stale one (same token), and creating a fresh claim with O_EXCL again. Clocks of the hosts
sharing an output folder must agree to well within the lease (NTP), as for any lease.

A video whose claim another live process holds is not made here: `process` returns it as "claimed" and the
batch looks again later (stages/run/batch.py) — by then it is finished (skipped here) or its claim is stale
(made here: a killed worker's video is redone).
"""

from __future__ import annotations

import json
import os
import socket
import threading
import time
import uuid
from dataclasses import dataclass
from pathlib import Path

LEASE_SECONDS = 60.0


def claim_path(stem: Path) -> Path:
    """The claim file of the video whose outputs are STEM.* (hidden: a finished folder holds no claims)."""
    return stem.with_name(f".{stem.name}.claim")


def _process_start(pid: int) -> str | None:
    """The process's start time in clock ticks since boot (/proc/PID/stat field 22), None off Linux or if gone."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return None
    return stat.rsplit(")", 1)[1].split()[19]


def owner_record() -> dict:
    """Who holds a claim this process takes."""
    pid = os.getpid()
    return {"host": socket.gethostname(), "pid": pid, "pid_start": _process_start(pid), "token": uuid.uuid4().hex}


def describe(owner: dict) -> str:
    return f"{owner.get('host', '?')}:{owner.get('pid', '?')}"


def _read(path: Path) -> tuple[dict, float] | None:
    """(owner, mtime) of a claim file; None if it is gone. A claim being written (empty, or cut short) reads as an
    owner of unknown identity whose lease runs from its mtime."""
    try:
        mtime = path.stat().st_mtime
        text = path.read_text()
    except OSError:
        return None
    try:
        owner = json.loads(text)
    except ValueError:
        owner = {}
    return (owner if isinstance(owner, dict) else {}), mtime


def is_stale(owner: dict, mtime: float, lease: float, now: float | None = None) -> bool:
    """Whether a claim may be taken over: its lease expired, or its owner was a process on this host that is gone."""
    if (now if now is not None else time.time()) - mtime > lease:
        return True
    if owner.get("host") != socket.gethostname() or not isinstance(owner.get("pid"), int):
        return False
    alive = _process_start(owner["pid"])
    if alive is None:  # no such process (or no /proc: then only the lease decides)
        return Path("/proc/self/stat").exists()
    return owner.get("pid_start") is not None and alive != owner["pid_start"]  # the pid now names another process


def claimable(stem: Path, lease: float = LEASE_SECONDS) -> bool:
    """Whether `take` would get the claim now: none held, or a stale one."""
    found = _read(claim_path(stem))
    return found is None or is_stale(*found, lease)


@dataclass
class Claim:
    """A claim this process holds; `renew` keeps it, `release` gives it up (only if it is still ours)."""

    path: Path
    owner: dict
    lease: float

    def renew(self) -> bool:
        """Touch the claim; False if it is no longer ours (taken over after this process stalled past the lease)."""
        found = _read(self.path)
        if found is None or found[0].get("token") != self.owner["token"]:
            return False
        try:
            os.utime(self.path)
        except OSError:
            return False
        return True

    def release(self) -> None:
        found = _read(self.path)
        if found is not None and found[0].get("token") == self.owner["token"]:
            self.path.unlink(missing_ok=True)

    def __enter__(self) -> "Claim":
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._keep, name=f"claim {self.path.name}", daemon=True)
        self._thread.start()
        return self

    def __exit__(self, *exc) -> None:
        self._stop.set()
        self._thread.join()
        self.release()

    def _keep(self) -> None:
        while not self._stop.wait(self.lease / 4):
            if not self.renew():
                return


def _create(path: Path, owner: dict) -> bool:
    """Create the claim file with O_EXCL; False if one exists."""
    path.parent.mkdir(parents=True, exist_ok=True)
    try:
        fd = os.open(path, os.O_CREAT | os.O_EXCL | os.O_WRONLY, 0o644)
    except FileExistsError:
        return False
    with os.fdopen(fd, "w") as f:
        json.dump(owner, f)
    return True


def take(stem: Path, lease: float = LEASE_SECONDS) -> Claim | str:
    """Claim the video whose outputs are STEM.*: the Claim, or who holds it (host:pid) when another live process
    does."""
    path = claim_path(stem)
    owner = owner_record()
    for _ in range(5):  # a claim released or taken over between our look and our create: look again
        if _create(path, owner):
            return Claim(path, owner, lease)
        found = _read(path)
        if found is None:
            continue
        held, mtime = found
        if not is_stale(held, mtime, lease):
            return describe(held)
        # take over the stale claim: move it aside (one renamer wins), check that we moved the stale one
        aside = path.with_name(f"{path.name}.{owner['token']}")
        try:
            os.rename(path, aside)
        except FileNotFoundError:
            continue  # another process took it over first
        moved = _read(aside)
        if moved is not None and moved[0].get("token") != held.get("token"):
            # between our look and the rename, the stale claim was replaced by a live one: put it back
            try:
                os.link(aside, path)
            except FileExistsError:
                pass  # a third process claimed meanwhile; the owner we moved finds out at its next renewal
            aside.unlink(missing_ok=True)
            return describe(moved[0])
        aside.unlink(missing_ok=True)
    return describe(_read(path)[0]) if path.exists() else "another process"
