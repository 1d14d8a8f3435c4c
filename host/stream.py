"""Streaming pipeline: source -> bounded queue -> pack -> accelerate -> unpack -> sink.

A producer thread reads ``(index, frame)`` pairs from the source into a bounded
:class:`queue.Queue`. ``process`` is one callable, or offers ``stages()``: named steps
(a :class:`~fluorofpga.host.FrameRestorer` has pack, accelerate and unpack). Each stage
but the last runs on its own thread, with a bounded queue (one frame) to the next, so
frame n+1 is packed and frame n−1 unpacked while the accelerator works on frame n; the
calling thread runs the last stage and writes the result to the sink. Frames are only
ever dropped at the first queue, before any work on them. When processing is slower than
the source, the drop policy decides:

- ``"block"`` (a file): the producer waits for room; nothing is dropped.
- ``"drop-oldest"`` (a live camera, the usual choice): a frame arriving at a full queue
  replaces the oldest frame waiting in it, so the output stays as close to "now" as
  possible.
- ``"drop-newest"``: a frame arriving at a full queue is itself dropped.

Every dropped frame is counted in :attr:`StreamStats.dropped` and its source index
listed in :attr:`StreamStats.dropped_indices`. Nothing is dropped silently. (The names
with underscores, ``drop_oldest`` / ``drop_newest``, are accepted too.)

:class:`StreamStats` also carries per-stage timing (read, each processing stage, write),
the overall and rolling frame rate and latency percentiles (p50/p95/p99 from a log-spaced
histogram: memory stays constant however long the stream runs).

Errors in any stage, in the sink or in the source stop the producer and the stages and
are re-raised from :meth:`StreamPipeline.run` (frames already past a failing stage are
still written first). The sink is closed in every case (a sink
with ``abort()`` is aborted after an error, leaving clearly marked partial output).
:meth:`StreamPipeline.stop` ends a stream early but cleanly (the frames already read
are processed and the sink is closed normally).
"""

from __future__ import annotations

import math
import queue
import threading
import time
import warnings
from collections import deque
from collections.abc import Callable, Iterable
from dataclasses import asdict, dataclass, field
from typing import Any, Literal, Protocol

import numpy as np

__all__ = [
    "DROP_POLICIES",
    "DropPolicy",
    "FrameSink",
    "LatencyHistogram",
    "StreamPipeline",
    "StreamStats",
    "normalize_drop_policy",
]

DropPolicy = Literal["block", "drop-oldest", "drop-newest"]
#: The drop policies a user can choose (see the module docstring).
DROP_POLICIES: tuple[str, ...] = ("block", "drop-oldest", "drop-newest")
_END = object()  # end-of-stream marker put by the producer
_POLL_S = 0.05  # how often a blocked producer checks for a stop request
_JOIN_TIMEOUT_S = 5.0  # how long to wait for the producer after an error
#: Output frames over which :attr:`StreamStats.fps_rolling` is measured.
ROLLING_FRAMES = 30
#: How often (s) the latency percentiles are recomputed while streaming.
_PERCENTILE_EVERY_S = 0.25


def normalize_drop_policy(policy: str) -> str:
    """``"drop_oldest"`` -> ``"drop-oldest"``; ValueError for an unknown policy."""
    name = str(policy).strip().lower().replace("_", "-")
    if name not in DROP_POLICIES:
        raise ValueError(
            f"drop policy {policy!r} unknown; choose one of {', '.join(DROP_POLICIES)} "
            "(block: wait, lose nothing; drop-oldest: a live camera keeps the newest frames)"
        )
    return name


class FrameSink(Protocol):
    """What a sink must offer (see :mod:`fluorofpga.host.sinks`)."""

    def write(self, index: int, frame: np.ndarray) -> None:
        """Take one output frame."""

    def close(self) -> None:
        """Finish writing."""


class LatencyHistogram:
    """Percentiles of a stream of durations in constant memory.

    Durations (ms) fall into log-spaced bins of ratio :attr:`RATIO` between
    :attr:`LOW_MS` and :attr:`HIGH_MS` (values outside are clamped to the end bins);
    a percentile is the geometric centre of its bin, clamped to the exact minimum and
    maximum seen, so it is within ``sqrt(RATIO) - 1`` (0.5 %) of the exact value.
    """

    LOW_MS = 1e-3
    HIGH_MS = 1e7
    RATIO = 1.01

    def __init__(self) -> None:
        self._log_ratio = math.log(self.RATIO)
        n = int(math.ceil(math.log(self.HIGH_MS / self.LOW_MS) / self._log_ratio)) + 1
        self.counts = np.zeros(n, dtype=np.int64)
        self.n = 0
        self.min = math.inf
        self.max = 0.0
        self.total = 0.0

    def add(self, ms: float) -> None:
        """Record one duration in milliseconds."""
        value = max(float(ms), 0.0)
        k = int(math.log(max(value, self.LOW_MS) / self.LOW_MS) / self._log_ratio)
        self.counts[min(k, len(self.counts) - 1)] += 1
        self.n += 1
        self.total += value
        self.min = min(self.min, value)
        self.max = max(self.max, value)

    @property
    def mean(self) -> float:
        """Mean duration, ms (0 when empty)."""
        return self.total / self.n if self.n else 0.0

    def percentile(self, q: float) -> float:
        """The ``q``-th percentile (0-100), ms; 0 when empty."""
        if not 0 <= q <= 100:
            raise ValueError(f"percentile must be in [0, 100], got {q}")
        if self.n == 0:
            return 0.0
        rank = max(1, int(math.ceil(q / 100.0 * self.n)))
        k = int(np.searchsorted(np.cumsum(self.counts), rank))
        centre = self.LOW_MS * self.RATIO ** (k + 0.5)
        return float(min(max(centre, self.min), self.max))


class _Aborted(Exception):
    """Internal: another thread's error stopped the stream."""


def _stages_of(process: Any) -> list[tuple[str, Callable[[Any], Any]]]:
    """``process.stages()`` checked (names unique, not ``read``/``write``), or
    ``[("process", process)]`` for a plain callable."""
    stages = getattr(process, "stages", None)
    if not callable(stages):
        if not callable(process):
            raise TypeError(f"process must be callable, got {type(process).__name__}")
        return [("process", process)]
    found = [(str(name), fn) for name, fn in stages()]
    names = [name for name, _ in found]
    if not found or len(set(names)) != len(names) or {"read", "write"} & set(names) or (
            not all(callable(fn) for _, fn in found)):
        raise ValueError(f"process.stages() must give uniquely named callables (not read or "
                         f"write), got {names}")
    return found


@dataclass
class StreamStats:
    """Counters of one pipeline run.

    Attributes:
        frames_in: Frames read from the source.
        frames_out: Frames processed and written to the sink.
        dropped: Frames dropped because the queue was full (``drop-*`` policies).
        dropped_indices: Source indices of the dropped frames, in the order dropped.
        drop_policy: The policy in force.
        seconds: Wall-clock duration of the run so far, s.
        fps: ``frames_out / seconds``, frames/s.
        fps_rolling: Output rate over the last :data:`ROLLING_FRAMES` frames, frames/s.
        latency_ms_mean: Mean time from a frame leaving the source to its output being
            written, ms.
        latency_ms_max: Largest such time, ms.
        latency_ms_p50, latency_ms_p95, latency_ms_p99: Its percentiles, ms.
        read_ms_mean: Mean time the source took to give a frame (waiting for the camera
            included), ms.
        process_ms_mean: Mean processing time per frame (all stages), ms.
        write_ms_mean: Mean time of ``sink.write`` per frame, ms.
        stage_ms_mean: Mean time per frame of each processing stage (``{"process": …}``
            for a single callable; ``pack`` / ``accelerate`` / ``unpack`` for a
            restorer), ms. Stages overlap: the frame rate follows the slowest, not the sum.
        queued: Frames waiting between source and processing right now.
        stopped_early: :meth:`StreamPipeline.stop` ended the stream before the source did.

    After a completed run ``frames_in == frames_out + dropped``.
    """

    frames_in: int = 0
    frames_out: int = 0
    dropped: int = 0
    dropped_indices: list[int] = field(default_factory=list)
    drop_policy: str = "block"
    seconds: float = 0.0
    fps: float = 0.0
    fps_rolling: float = 0.0
    latency_ms_mean: float = 0.0
    latency_ms_max: float = 0.0
    latency_ms_p50: float = 0.0
    latency_ms_p95: float = 0.0
    latency_ms_p99: float = 0.0
    read_ms_mean: float = 0.0
    process_ms_mean: float = 0.0
    write_ms_mean: float = 0.0
    stage_ms_mean: dict[str, float] = field(default_factory=dict)
    queued: int = 0
    stopped_early: bool = False

    def to_dict(self) -> dict[str, Any]:
        """Plain-JSON dictionary of all fields."""
        return asdict(self)

    def summary(self) -> str:
        """One line for logs and terminals."""
        return (
            f"frames in {self.frames_in}  out {self.frames_out}  dropped {self.dropped}  "
            f"{self.fps:.1f} fps (now {self.fps_rolling:.1f})  latency p50/p95/p99 "
            f"{self.latency_ms_p50:.1f}/{self.latency_ms_p95:.1f}/{self.latency_ms_p99:.1f} ms"
            f"  read/process/write {self.read_ms_mean:.1f}/{self.process_ms_mean:.1f}/"
            f"{self.write_ms_mean:.1f} ms"
        )


class StreamPipeline:
    """Run ``process`` over every frame of ``source`` and write the results to ``sink``.

    Args:
        source: Iterable of ``(index, frame)`` pairs (see :mod:`.sources`).
        process: Frame in, frame out (for example a :class:`~fluorofpga.host.FrameRestorer`);
            if it has ``stages()`` (``[(name, fn), ...]``, each fn taking the previous
            one's result), they run as a pipeline of threads.
        sink: Object with ``write(index, frame)`` and ``close()`` (see :mod:`.sinks`).
        queue_size: Frames buffered between source and processing (>= 1).
        drop_policy: ``"block"``, ``"drop-oldest"`` or ``"drop-newest"`` (see the
            module docstring).
        progress: Called with the live :class:`StreamStats` after every output
            frame (read it, do not modify it), e.g. a :mod:`.display`.
        staged: run ``process.stages()`` on their own threads (default); False calls
            ``process`` itself on the calling thread.

    A pipeline runs once; :meth:`run` closes the sink.
    """

    def __init__(
        self,
        source: Iterable[tuple[int, np.ndarray]],
        process: Callable[[np.ndarray], np.ndarray],
        sink: FrameSink,
        queue_size: int = 4,
        drop_policy: str = "drop-newest",
        progress: Callable[[StreamStats], None] | None = None,
        staged: bool = True,
    ) -> None:
        policy = normalize_drop_policy(drop_policy)
        if int(queue_size) != queue_size or queue_size < 1:
            raise ValueError(f"queue_size must be an integer >= 1, got {queue_size!r}")
        self.source = source
        self.process = process
        self.sink = sink
        self.queue_size = int(queue_size)
        self.drop_policy = policy
        self.progress = progress
        self.stats = StreamStats(drop_policy=policy)
        self.latency = LatencyHistogram()
        self._done_times: deque[float] = deque(maxlen=ROLLING_FRAMES)
        self._ran = False
        self._lock = threading.Lock()
        self._stop = threading.Event()  # stop the producer (error or stop())
        self._stop_requested = False
        self._queue: queue.Queue[Any] = queue.Queue(maxsize=self.queue_size)
        self._source_error: BaseException | None = None
        self.stages = _stages_of(process) if staged else [("process", process)]
        self._stage_ms = {"read": 0.0, "write": 0.0, **{name: 0.0 for name, _ in self.stages}}
        # one bounded queue (a frame) in front of every stage but the first
        self._queues = [self._queue] + [queue.Queue(maxsize=1) for _ in self.stages[1:]]
        self._stage_error: BaseException | None = None

    def stop(self) -> None:
        """End the stream early but cleanly: no new frame is read; those read are finished.

        Safe to call from another thread or a signal handler; :meth:`run` then returns
        normally (``stats.stopped_early``) and the sink is closed, not aborted.
        """
        self._stop_requested = True
        self._stop.set()

    # -- producer ------------------------------------------------------------------------

    def _aborting(self) -> bool:
        """An error stops the stream (not a clean :meth:`stop`)."""
        return self._stop.is_set() and not self._stop_requested

    def _put_blocking(self, item: object, target: queue.Queue[Any] | None = None) -> bool:
        """Put ``item`` (into the first queue, or ``target``), waiting for room; False if
        the stream is aborted meanwhile."""
        target = self._queue if target is None else target
        while not self._aborting():
            try:
                target.put(item, timeout=_POLL_S)
                return True
            except queue.Full:
                continue
        return False

    def _drop(self, index: int) -> None:
        with self._lock:
            self.stats.dropped += 1
            self.stats.dropped_indices.append(int(index))

    def _put_dropping_oldest(self, item: tuple[int, np.ndarray, float]) -> None:
        while True:
            try:
                self._queue.put_nowait(item)
                return
            except queue.Full:
                pass
            try:
                oldest = self._queue.get_nowait()  # only frames: _END is put last
            except queue.Empty:
                continue  # the consumer took one meanwhile: there is room now
            self._drop(oldest[0])

    def _produce(self) -> None:
        iterator = iter(self.source)
        try:
            while not self._stop.is_set():
                t0 = time.perf_counter()
                try:
                    index, frame = next(iterator)
                except StopIteration:
                    break
                t_read = time.perf_counter()
                with self._lock:
                    self.stats.frames_in += 1
                    self._stage_ms["read"] += (t_read - t0) * 1e3
                    self.stats.read_ms_mean = self._stage_ms["read"] / self.stats.frames_in
                if self._aborting():
                    break
                item = (index, frame, t_read)
                if self.drop_policy == "block":
                    if not self._put_blocking(item):
                        break
                elif self.drop_policy == "drop-oldest":
                    self._put_dropping_oldest(item)
                else:
                    try:
                        self._queue.put_nowait(item)
                    except queue.Full:
                        self._drop(index)
        except BaseException as exc:  # re-raised by run() in the calling thread
            self._source_error = exc
        finally:
            close = getattr(iterator, "close", None)
            if close is not None:
                try:
                    close()
                except Exception as exc:  # keep the first error; report this one
                    if self._source_error is None:
                        self._source_error = exc
            self._put_end()

    def _put_end(self) -> None:
        """Queue the end marker; after stop() there is always a consumer draining."""
        while True:
            try:
                self._queue.put(_END, timeout=_POLL_S)
                return
            except queue.Full:
                if self._aborting():
                    return  # error shutdown: nobody reads any more

    # -- consumer ------------------------------------------------------------------------

    def _update_timing(self, t_start: float, now: float) -> None:
        stats = self.stats
        stats.seconds = now - t_start
        if stats.seconds > 0:
            stats.fps = stats.frames_out / stats.seconds
        times = self._done_times
        if len(times) >= 2 and times[-1] > times[0]:
            stats.fps_rolling = (len(times) - 1) / (times[-1] - times[0])
        else:
            stats.fps_rolling = stats.fps

    def _update_percentiles(self) -> None:
        stats, hist = self.stats, self.latency
        stats.latency_ms_p50 = hist.percentile(50)
        stats.latency_ms_p95 = hist.percentile(95)
        stats.latency_ms_p99 = hist.percentile(99)

    def _get(self, q: queue.Queue[Any]) -> Any:
        """Next item of ``q``; ``_Aborted`` if the stream is aborted meanwhile."""
        while True:
            try:
                return q.get(timeout=_POLL_S)
            except queue.Empty:
                if self._aborting():
                    raise _Aborted from None

    def _run_stage(self, k: int) -> None:
        """Thread of stage ``k`` (not the last): queue ``k`` -> fn -> queue ``k + 1``.

        After an error here the source stops, the frames already past this stage still
        reach the sink, and the ones before it are discarded; :meth:`run` then raises it.
        """
        name, fn = self.stages[k]
        source, target = self._queues[k], self._queues[k + 1]
        failed = False
        try:
            while True:
                item = self._get(source)
                if item is not _END:
                    if failed:
                        continue  # after an error: drain to the end marker
                    index, payload, t_in = item
                    t0 = time.perf_counter()
                    try:
                        item = (index, fn(payload), t_in)
                    except BaseException as exc:  # re-raised by run() in the calling thread
                        with self._lock:
                            if self._stage_error is None:
                                self._stage_error = exc
                        failed = True
                        self._stop_requested = True  # no new frames; the rest drains
                        self._stop.set()
                        continue
                    with self._lock:
                        self._stage_ms[name] += (time.perf_counter() - t0) * 1e3
                if not self._put_blocking(item, target) or item is _END:
                    return
        except _Aborted:  # the calling thread failed: it is shutting the stream down
            return

    def run(self) -> StreamStats:
        """Stream every frame; return the counters once the source is exhausted.

        Raises:
            RuntimeError: The pipeline already ran.
            Exception: Whatever a processing stage, the sink or the source raised; the
                producer and the stages are stopped and the sink aborted (or closed) first.
        """
        if self._ran:
            raise RuntimeError("this StreamPipeline already ran; create a new one")
        self._ran = True
        stats = self.stats
        threads = [threading.Thread(target=self._produce, name="fluorofpga-source",
                                    daemon=True)]
        threads += [threading.Thread(target=self._run_stage, args=(k,), daemon=True,
                                     name=f"fluorofpga-{name}")
                    for k, (name, _) in enumerate(self.stages[:-1])]
        last, process = self.stages[-1]
        t_start = time.perf_counter()
        for thread in threads:
            thread.start()
        next_percentiles = t_start
        try:
            while True:
                item = self._get(self._queues[-1])
                if item is _END:
                    break
                index, payload, t_in = item
                t0 = time.perf_counter()
                out = process(payload)
                t1 = time.perf_counter()
                self.sink.write(index, out)
                t2 = time.perf_counter()
                latency_ms = (t2 - t_in) * 1e3
                self.latency.add(latency_ms)
                self._done_times.append(t2)
                stats.frames_out += 1
                with self._lock:
                    self._stage_ms[last] += (t1 - t0) * 1e3
                    self._stage_ms["write"] += (t2 - t1) * 1e3
                    stats.stage_ms_mean = {name: self._stage_ms[name] / stats.frames_out
                                           for name, _ in self.stages}
                stats.process_ms_mean = sum(stats.stage_ms_mean.values())
                stats.write_ms_mean = self._stage_ms["write"] / stats.frames_out
                stats.latency_ms_mean = self.latency.mean
                stats.latency_ms_max = self.latency.max
                stats.queued = self._queue.qsize()
                if t2 >= next_percentiles:
                    self._update_percentiles()
                    next_percentiles = t2 + _PERCENTILE_EVERY_S
                self._update_timing(t_start, t2)
                if self.progress is not None:
                    self.progress(stats)
            for thread in threads:
                thread.join()
            if self._stage_error is not None:
                raise self._stage_error
            if self._source_error is not None:
                raise self._source_error
        except BaseException:
            self._shutdown(threads)
            raise
        stats.stopped_early = self._stop_requested
        stats.queued = 0
        self._update_percentiles()
        self.sink.close()
        self._update_timing(t_start, time.perf_counter())
        return stats

    def _shutdown(self, threads: list[threading.Thread]) -> None:
        """Stop the producer and the stages and abort the sink while an error propagates.

        A sink with ``abort()`` (``TiffSink``, ``OmeZarrSink``, ``ZmqSink``) keeps what
        it wrote as clearly marked partial output instead of completing it.
        """
        self._stop_requested = False
        self._stop.set()
        deadline = time.perf_counter() + _JOIN_TIMEOUT_S
        for thread in threads:
            thread.join(timeout=max(0.0, deadline - time.perf_counter()))
            if thread.is_alive():
                warnings.warn(
                    f"thread {thread.name} did not stop within {_JOIN_TIMEOUT_S} s (blocked "
                    "in the source or a stage?); it is left running as a daemon",
                    RuntimeWarning,
                    stacklevel=3,
                )
        self._update_percentiles()
        try:
            getattr(self.sink, "abort", self.sink.close)()
        except Exception as close_error:  # the original error is the one to raise
            warnings.warn(
                f"closing the sink after an error failed too: {close_error!r}",
                RuntimeWarning,
                stacklevel=3,
            )
