"""Streaming pipeline: source -> bounded queue -> process -> sink.

A producer thread reads ``(index, frame)`` pairs from the source into a bounded
:class:`queue.Queue`; the calling thread takes them out, applies ``process`` and
writes the result to the sink. When processing is slower than the source:

- ``"drop_newest"`` (a live camera): a frame arriving at a full queue is dropped,
  counted in :attr:`StreamStats.dropped` and listed in
  :attr:`StreamStats.dropped_indices`. Nothing is dropped silently.
- ``"block"`` (a file): the producer waits for room; nothing is dropped.

Errors in ``process``, in the sink or in the source stop the producer and are
re-raised from :meth:`StreamPipeline.run`. The sink is closed in every case.
"""

from __future__ import annotations

import queue
import threading
import time
import warnings
from collections.abc import Callable, Iterable
from dataclasses import asdict, dataclass, field
from typing import Any, Literal, Protocol

import numpy as np

__all__ = ["DropPolicy", "FrameSink", "StreamPipeline", "StreamStats"]

DropPolicy = Literal["drop_newest", "block"]
_DROP_POLICIES = ("drop_newest", "block")
_END = object()  # end-of-stream marker put by the producer
_POLL_S = 0.05  # how often a blocked producer checks for a stop request
_JOIN_TIMEOUT_S = 5.0  # how long to wait for the producer after an error


class FrameSink(Protocol):
    """What a sink must offer (see :mod:`fluorofpga.host.sinks`)."""

    def write(self, index: int, frame: np.ndarray) -> None:
        """Take one output frame."""

    def close(self) -> None:
        """Finish writing."""


@dataclass
class StreamStats:
    """Counters of one pipeline run.

    Attributes:
        frames_in: Frames read from the source.
        frames_out: Frames processed and written to the sink.
        dropped: Frames dropped because the queue was full (``drop_newest``).
        dropped_indices: Source indices of the dropped frames, in order.
        seconds: Wall-clock duration of the run so far, s.
        fps: ``frames_out / seconds``, frames/s.
        latency_ms_mean: Mean time from a frame leaving the source to its
            output being written, ms.
        latency_ms_max: Largest such time, ms.

    After a completed run ``frames_in == frames_out + dropped``.
    """

    frames_in: int = 0
    frames_out: int = 0
    dropped: int = 0
    dropped_indices: list[int] = field(default_factory=list)
    seconds: float = 0.0
    fps: float = 0.0
    latency_ms_mean: float = 0.0
    latency_ms_max: float = 0.0

    def to_dict(self) -> dict[str, Any]:
        """Plain-JSON dictionary of all fields."""
        return asdict(self)


class StreamPipeline:
    """Run ``process`` over every frame of ``source`` and write the results to ``sink``.

    Args:
        source: Iterable of ``(index, frame)`` pairs (see :mod:`.sources`).
        process: Frame in, frame out (for example from :func:`.accelerator.frame_processor`).
        sink: Object with ``write(index, frame)`` and ``close()`` (see :mod:`.sinks`).
        queue_size: Frames buffered between source and processing (>= 1).
        drop_policy: ``"drop_newest"`` or ``"block"`` (see the module docstring).
        progress: Called with the live :class:`StreamStats` after every output
            frame (read it, do not modify it), e.g. to advance a progress bar.

    A pipeline runs once; :meth:`run` closes the sink.
    """

    def __init__(
        self,
        source: Iterable[tuple[int, np.ndarray]],
        process: Callable[[np.ndarray], np.ndarray],
        sink: FrameSink,
        queue_size: int = 4,
        drop_policy: DropPolicy = "drop_newest",
        progress: Callable[[StreamStats], None] | None = None,
    ) -> None:
        if drop_policy not in _DROP_POLICIES:
            raise ValueError(f"drop_policy must be one of {_DROP_POLICIES}, got {drop_policy!r}")
        if int(queue_size) != queue_size or queue_size < 1:
            raise ValueError(f"queue_size must be an integer >= 1, got {queue_size!r}")
        self.source = source
        self.process = process
        self.sink = sink
        self.queue_size = int(queue_size)
        self.drop_policy = drop_policy
        self.progress = progress
        self.stats = StreamStats()
        self._ran = False
        self._lock = threading.Lock()
        self._stop = threading.Event()
        self._queue: queue.Queue[Any] = queue.Queue(maxsize=self.queue_size)
        self._source_error: BaseException | None = None

    # -- producer ------------------------------------------------------------------------

    def _put_blocking(self, item: object) -> bool:
        """Put ``item``, waiting for room; False if a stop was requested meanwhile."""
        while not self._stop.is_set():
            try:
                self._queue.put(item, timeout=_POLL_S)
                return True
            except queue.Full:
                continue
        return False

    def _produce(self) -> None:
        iterator = iter(self.source)
        try:
            for index, frame in iterator:
                if self._stop.is_set():
                    break
                item = (index, frame, time.perf_counter())
                with self._lock:
                    self.stats.frames_in += 1
                if self.drop_policy == "block":
                    if not self._put_blocking(item):
                        break
                    continue
                try:
                    self._queue.put_nowait(item)
                except queue.Full:
                    with self._lock:
                        self.stats.dropped += 1
                        self.stats.dropped_indices.append(int(index))
        except BaseException as exc:  # re-raised by run() in the calling thread
            self._source_error = exc
        finally:
            close = getattr(iterator, "close", None)
            if close is not None:
                close()
            self._put_blocking(_END)

    # -- consumer ------------------------------------------------------------------------

    def _update_timing(self, t_start: float) -> None:
        self.stats.seconds = time.perf_counter() - t_start
        if self.stats.seconds > 0:
            self.stats.fps = self.stats.frames_out / self.stats.seconds

    def run(self) -> StreamStats:
        """Stream every frame; return the counters once the source is exhausted.

        Raises:
            RuntimeError: The pipeline already ran.
            Exception: Whatever ``process``, the sink or the source raised; the
                producer is stopped and the sink closed first.
        """
        if self._ran:
            raise RuntimeError("this StreamPipeline already ran; create a new one")
        self._ran = True
        stats = self.stats
        producer = threading.Thread(target=self._produce, name="fluorofpga-source", daemon=True)
        t_start = time.perf_counter()
        producer.start()
        try:
            latency_sum = 0.0
            while True:
                item = self._queue.get()
                if item is _END:
                    break
                index, frame, t_in = item
                out = self.process(frame)
                self.sink.write(index, out)
                latency_ms = (time.perf_counter() - t_in) * 1e3
                latency_sum += latency_ms
                stats.frames_out += 1
                stats.latency_ms_mean = latency_sum / stats.frames_out
                stats.latency_ms_max = max(stats.latency_ms_max, latency_ms)
                self._update_timing(t_start)
                if self.progress is not None:
                    self.progress(stats)
            producer.join()
            if self._source_error is not None:
                raise self._source_error
        except BaseException:
            self._shutdown(producer)
            raise
        self.sink.close()
        self._update_timing(t_start)
        return stats

    def _shutdown(self, producer: threading.Thread) -> None:
        """Stop the producer and abort the sink while an error propagates.

        A sink with ``abort()`` (``TiffSink``) keeps what it wrote as a clearly-marked
        partial file instead of completing it under the final name.
        """
        self._stop.set()
        producer.join(timeout=_JOIN_TIMEOUT_S)
        if producer.is_alive():
            warnings.warn(
                f"source thread did not stop within {_JOIN_TIMEOUT_S} s (blocked in the "
                "source?); it is left running as a daemon",
                RuntimeWarning,
                stacklevel=3,
            )
        try:
            getattr(self.sink, "abort", self.sink.close)()
        except Exception as close_error:  # the original error is the one to raise
            warnings.warn(
                f"closing the sink after an error failed too: {close_error!r}",
                RuntimeWarning,
                stacklevel=3,
            )
