"""Frames over the network with ZeroMQ: :class:`ZmqSink` (board) -> :class:`ZmqSource` (PC).

Wire format (protocol ``fluorofpga-frames/1``), one ZeroMQ message per frame with two
parts: a UTF-8 JSON header ``{"type": "frame", "protocol", "seq", "index", "shape",
"dtype", "meta"}`` and the frame's bytes (C order). ``seq`` counts messages sent
(0, 1, 2, ...: a gap means messages lost on the way, which only PUB/SUB can do);
``index`` is the source's frame index (a gap there means frames dropped upstream, and
counted there); ``meta`` is the frames' calibration (``ImageMeta.as_dict()``) or null.
The stream ends with a one-part ``{"type": "end", "complete": true|false, "frames": n,
"reason": ...}``: ``complete: false`` when the sender failed or was interrupted.

Patterns: PUSH/PULL (default) delivers every frame to one receiver and makes the sender
wait (up to ``send_timeout_s``) while the receiver is slow or absent, so nothing is lost
without an error; PUB/SUB lets any number of viewers listen and never slows the sender,
at the price of frames lost by slow subscribers (seen as ``seq`` gaps, counted by
:class:`ZmqSource`). ``pyzmq`` is imported when a socket is made.
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from typing import Any

import numpy as np

from .sinks import _Sink

__all__ = ["PROTOCOL", "StreamIncomplete", "ZmqSink", "ZmqSource"]

PROTOCOL = "fluorofpga-frames/1"
PATTERNS = ("push", "pub")
RECEIVE_PATTERNS = ("pull", "sub")
#: dtypes a frame message may carry.
WIRE_DTYPES = ("uint8", "uint16", "float32")


class StreamIncomplete(RuntimeError):
    """The sender ended without completing the stream, or stopped sending."""


def _import_zmq() -> Any:
    try:
        import zmq
    except ImportError as e:
        raise ImportError(f"a ZeroMQ stream needs the 'pyzmq' package: pip install pyzmq ({e})"
                          ) from None
    return zmq


def _check_address(address: str) -> str:
    if not isinstance(address, str) or not address.startswith(("tcp://", "ipc://", "inproc://")):
        raise ValueError(f"{address!r}: a ZeroMQ address looks like tcp://HOST:PORT "
                         "(tcp://*:5555 to listen on every interface)")
    if address.startswith("tcp://"):
        port = address.rsplit(":", 1)[-1] if address.count(":") >= 2 else ""
        if port != "*" and not (port.isdigit() and 1 <= int(port) <= 65535):
            raise ValueError(f"{address!r}: the port must be a number in 1..65535 "
                             "(tcp://HOST:PORT, e.g. tcp://192.168.2.99:5555)")
    return address


class ZmqSink(_Sink):
    """Sends every frame with its index, shape, dtype and calibration over ZeroMQ.

    Args:
        address: ``tcp://*:PORT`` to listen (``bind``, the usual case on the board),
            or ``tcp://HOST:PORT`` of a receiver that listens (``bind=False``).
        pattern: ``"push"`` (one receiver, nothing lost silently) or ``"pub"``.
        bind: bind (True) or connect (False) the socket.
        meta: the frames' calibration, sent with every frame.
        send_timeout_s: how long a PUSH send may wait for a receiver before
            ``TimeoutError`` (the stream then fails and says so).
        linger_s: how long :meth:`close` waits for queued messages to leave.
        hwm: messages queued per peer before a PUSH send waits / PUB drops.

    Raises:
        ImportError: pyzmq is not installed.
        fluorofpga.microscope.OutputError: the address cannot be bound / connected.
    """

    def __init__(
        self, address: str, *, pattern: str = "push", bind: bool = True, meta: Any = None,
        send_timeout_s: float = 30.0, linger_s: float = 10.0, hwm: int = 16,
    ) -> None:
        from fluorofpga.microscope.io import OutputError

        super().__init__()
        zmq = _import_zmq()
        self._zmq = zmq
        _check_address(address)
        if pattern not in PATTERNS:
            raise ValueError(f"pattern {pattern!r}: choose one of {', '.join(PATTERNS)}")
        self.address, self.pattern, self.meta = address, pattern, meta
        self.send_timeout_s, self.linger_s = float(send_timeout_s), float(linger_s)
        self.frames_written = 0
        self._context = zmq.Context()
        self._socket = self._context.socket(zmq.PUSH if pattern == "push" else zmq.PUB)
        self._socket.setsockopt(zmq.SNDHWM, int(hwm))
        self._socket.setsockopt(zmq.SNDTIMEO, int(self.send_timeout_s * 1000))
        self._socket.setsockopt(zmq.LINGER, int(self.linger_s * 1000))
        try:
            (self._socket.bind if bind else self._socket.connect)(address)
        except zmq.ZMQError as e:
            self._release(0)
            raise OutputError(f"{address}: cannot {'listen' if bind else 'connect'} ({e}); "
                              "choose another port or address") from None
        #: The endpoint really bound (a ``tcp://*:0`` address gets a free port).
        self.endpoint = self._socket.getsockopt_string(zmq.LAST_ENDPOINT)

    def _meta_dict(self) -> dict[str, Any] | None:
        if self.meta is None:
            return None
        return self.meta.as_dict() if hasattr(self.meta, "as_dict") else dict(self.meta)

    def write(self, index: int, frame: np.ndarray) -> None:
        """Send one frame (copied into the message: the buffer may be reused at once)."""
        frame = np.ascontiguousarray(self._accept(index, frame))
        if frame.dtype.name not in WIRE_DTYPES:
            raise ValueError(f"frame {index}: {frame.dtype} cannot be sent; one of "
                             f"{', '.join(WIRE_DTYPES)}")  # fmt: skip
        header = {"type": "frame", "protocol": PROTOCOL, "seq": self.frames_written,
                  "index": int(index), "shape": list(frame.shape), "dtype": frame.dtype.name,
                  "meta": self._meta_dict()}  # fmt: skip
        try:
            self._socket.send_multipart([json.dumps(header).encode(), frame], copy=True)
        except self._zmq.Again:
            raise TimeoutError(
                f"no receiver took frame {index} within {self.send_timeout_s:g} s on "
                f"{self.endpoint}; start `fluorofpga receive --connect tcp://BOARD:PORT "
                "--out FILE` on the PC (PUSH waits for a receiver and loses nothing)"
            ) from None
        self.frames_written += 1

    def _send_end(self, complete: bool, reason: str, flags: int = 0) -> None:
        end = {"type": "end", "protocol": PROTOCOL, "complete": complete,
               "frames": self.frames_written, "reason": reason}  # fmt: skip
        self._socket.send(json.dumps(end).encode(), flags=flags)

    def _release(self, linger_ms: int) -> None:
        self._socket.close(linger=linger_ms)
        self._context.term()

    def close(self) -> None:
        """Send the end-of-stream message (``complete: true``) and close the socket.

        Waits up to ``linger_s`` for queued messages to leave.
        """
        if self.closed:
            return
        self.closed = True
        try:
            self._send_end(True, "the source ended")
        except self._zmq.Again:
            self._release(0)
            raise TimeoutError(f"{self.endpoint}: no receiver took the end-of-stream message "
                               f"within {self.send_timeout_s:g} s") from None
        self._release(int(self.linger_s * 1000))

    def abort(self) -> None:
        """Tell the receiver the stream is incomplete (best effort) and close the socket."""
        if self.closed:
            return
        self.closed = True
        try:
            self._send_end(False, "the sender failed or was interrupted", self._zmq.NOBLOCK)
        except self._zmq.ZMQError:
            pass  # no receiver: it sees the stream stop (receive timeout) instead
        self._release(int(min(self.linger_s, 1.0) * 1000))


class ZmqSource:
    """Receives the frames of a :class:`ZmqSink`: yields ``(index, frame)``.

    Iteration ends at the sender's end-of-stream message, or after ``n_frames``.

    Args:
        address: ``tcp://HOST:PORT`` of the sender (``connect``, the usual case), or
            ``tcp://*:PORT`` to listen (``bind=True``).
        pattern: ``"pull"`` (the sender uses PUSH) or ``"sub"`` (PUB).
        timeout_s: seconds without a message before :class:`StreamIncomplete`.
        n_frames: stop after this many frames (None: until the end message).

    Attributes (after or during iteration):
        meta: the calibration sent with the frames (a dict, or None).
        complete: True once the sender's end message said the stream was complete.
        missed: messages lost on the way (``seq`` gaps; PUB/SUB only).
        frames_received: frames yielded.

    Raises (from iteration):
        StreamIncomplete: the sender ended with ``complete: false`` or went silent.
        ValueError: a malformed message (wrong protocol, size not matching its header).
    """

    def __init__(
        self, address: str, *, pattern: str = "pull", bind: bool = False,
        timeout_s: float = 30.0, n_frames: int | None = None,
    ) -> None:
        self._zmq = _import_zmq()
        _check_address(address)
        if pattern not in RECEIVE_PATTERNS:
            raise ValueError(f"pattern {pattern!r}: choose one of {', '.join(RECEIVE_PATTERNS)}")
        if not timeout_s > 0:
            raise ValueError(f"timeout_s must be > 0, got {timeout_s!r}")
        self.address, self.pattern, self.bind = address, pattern, bind
        self.timeout_s = float(timeout_s)
        self.n_frames = n_frames
        self.meta: dict[str, Any] | None = None
        self.complete = False
        self.missed = 0
        self.frames_received = 0
        self.first_seq: int | None = None

    def _socket(self, context: Any) -> Any:
        zmq = self._zmq
        sock = context.socket(zmq.PULL if self.pattern == "pull" else zmq.SUB)
        if self.pattern == "sub":
            sock.setsockopt(zmq.SUBSCRIBE, b"")
        sock.setsockopt(zmq.LINGER, 0)
        (sock.bind if self.bind else sock.connect)(self.address)
        return sock

    def __iter__(self) -> Iterator[tuple[int, np.ndarray]]:
        zmq = self._zmq
        context = zmq.Context()
        sock = self._socket(context)
        last_seq: int | None = None
        try:
            while self.n_frames is None or self.frames_received < self.n_frames:
                if not sock.poll(int(self.timeout_s * 1000)):
                    raise StreamIncomplete(
                        f"no message from {self.address} for {self.timeout_s:g} s after "
                        f"{self.frames_received} frame(s); is the sender running "
                        "(`fluorofpga stream --sink tcp://*:PORT`)?")
                parts = sock.recv_multipart(copy=True)
                header = self._header(parts[0])
                if header["type"] == "end":
                    self.complete = bool(header.get("complete"))
                    if not self.complete:
                        raise StreamIncomplete(
                            f"{self.address}: the sender ended the stream incomplete after "
                            f"{header.get('frames')} frame(s) ({header.get('reason')})")
                    return
                seq = int(header["seq"])
                if last_seq is None:
                    self.first_seq = seq
                elif seq > last_seq + 1:
                    self.missed += seq - last_seq - 1
                last_seq = seq
                frame = self._frame(header, parts)
                if self.meta is None:
                    self.meta = header.get("meta")
                self.frames_received += 1
                yield int(header["index"]), frame
            self.complete = True  # the frames asked for were received
        finally:
            sock.close(linger=0)
            context.term()

    @staticmethod
    def _header(raw: bytes) -> dict[str, Any]:
        try:
            header = json.loads(raw.decode())
        except (UnicodeDecodeError, json.JSONDecodeError) as e:
            raise ValueError(f"not a fluorofpga frame message ({e})") from None
        if not isinstance(header, dict) or header.get("protocol") != PROTOCOL:
            raise ValueError(f"not a {PROTOCOL} message: {str(header)[:80]}")
        if header.get("type") not in ("frame", "end"):
            raise ValueError(f"unknown message type {header.get('type')!r}")
        return header

    @staticmethod
    def _frame(header: dict[str, Any], parts: list[bytes]) -> np.ndarray:
        dtype, shape = header.get("dtype"), tuple(int(n) for n in header.get("shape", ()))
        if dtype not in WIRE_DTYPES or len(shape) != 2 or len(parts) != 2:
            raise ValueError(f"frame {header.get('index')}: bad header (dtype {dtype!r}, "
                             f"shape {shape}, {len(parts)} parts)")  # fmt: skip
        expected = shape[0] * shape[1] * np.dtype(dtype).itemsize
        if len(parts[1]) != expected:
            raise ValueError(f"frame {header.get('index')}: {len(parts[1])} bytes for "
                             f"{shape} {dtype} ({expected} expected)")  # fmt: skip
        return np.frombuffer(parts[1], dtype=dtype).reshape(shape)


def free_tcp_port(host: str = "127.0.0.1") -> int:
    """A TCP port free right now on ``host`` (for tests and examples)."""
    import socket

    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind((host, 0))
        return int(s.getsockname()[1])

