"""Pieces of several videos generated as one batch (issue 18): on a GPU a decode step at batch 8 costs about what
one at batch 1 does, so `run` keeps several videos in flight, each in a thread of its own through the CPU stages
(ffmpeg, the rhythm analysis, FluidSynth release the GIL or run in subprocesses), and their generate steps meet
here and are decoded together.

Each video's thread hands its prepared request (generate/sampler.py `prepare`) to `PieceBatcher.sample` and
waits. The waiting thread that finds the batch ready becomes its leader and decodes it: ready when it is full,
when every video in flight is waiting here (nobody else will come), or when the first request has waited
`linger` seconds. Batches are always padded to `rows` rows and each video draws from its own seed's generator
(generate/sampler.py `sample_parts`), so a video's music does not depend on which videos share its batch, or
on timing — only on `rows`, which the resume marker records.
"""

from __future__ import annotations

import threading
import time

from v2m.stages.generate.sampler import GenerateConfig, Request, generate_many


class PieceBatcher:
    """Collects generation requests from the threads of the videos in flight and decodes them in batches."""

    def __init__(self, model, vocab, config: GenerateConfig, *, rows: int, compile: bool, decoders,
                 linger: float = 2.0):
        self.model, self.vocab, self.config = model, vocab, config
        self.rows, self.compile, self.decoders, self.linger = rows, compile, decoders, linger
        self.capacity = max(1, rows // config.num_samples)  # requests per batch
        self._lock = threading.Condition()
        self._pending: list[tuple[Request, dict]] = []  # (request, its slot: "pieces" or "error" once decoded)
        self._active = 0        # videos in flight (between `enter` and `leave`)
        self._busy = False      # a leader is decoding
        self._since = 0.0       # when the oldest pending request arrived
        self.batches: list[int] = []  # requests per decoded batch (for logs and the benchmark)

    def enter(self) -> None:
        with self._lock:
            self._active += 1

    def leave(self) -> None:
        with self._lock:
            self._active -= 1
            self._lock.notify_all()  # those waiting may now be everyone in flight

    def sample(self, request: Request) -> list[list[int]]:
        """The request's samples, decoded in a batch with whatever other videos' requests are waiting."""
        slot: dict = {}
        with self._lock:
            if not self._pending:
                self._since = time.monotonic()
            self._pending.append((request, slot))
            self._lock.notify_all()
            while not slot:
                if not self._busy and self._ready():
                    self._lead()
                    continue
                wait = self.linger - (time.monotonic() - self._since) if self._pending else None
                self._lock.wait(timeout=max(0.01, wait) if wait is not None else None)
        if "error" in slot:
            raise slot["error"]
        return slot["pieces"]

    def _ready(self) -> bool:
        waiting = len(self._pending)
        return waiting > 0 and (waiting >= self.capacity or waiting >= self._active
                                or time.monotonic() - self._since >= self.linger)

    def _lead(self) -> None:
        """Take up to `capacity` pending requests and decode them (the lock is released while decoding)."""
        batch, self._pending = self._pending[:self.capacity], self._pending[self.capacity:]
        self._since = time.monotonic()
        self._busy = True
        self._lock.release()
        try:
            got = generate_many(self.model, self.vocab, [request for request, _ in batch], self.config,
                                rows=self.rows, compile=self.compile, decoders=self.decoders)
            outcome = [{"pieces": pieces} for pieces in got]
        except BaseException as e:  # noqa: BLE001 — every video of the batch gets the error, and each says it
            outcome = [{"error": e} for _ in batch]
        finally:
            self._lock.acquire()
            self._busy = False
        self.batches.append(len(batch))
        for (_, slot), result in zip(batch, outcome):
            slot.update(result)
        self._lock.notify_all()
