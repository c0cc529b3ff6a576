"""Reading a script's output: a reader thread that drains the pipe and picks
out marker lines, and the sink that turns raw bytes into stored log chunks."""

from __future__ import annotations

import codecs
import json
import threading
from typing import BinaryIO

PROGRESS = b"::progress::"
RESULT = b"::result::"
MARKER_LINE_MAX = 64 * 1024


class OutputReader(threading.Thread):
    """Drains the script's stdout+stderr into memory. The buffer is bounded:
    when the supervisor falls behind, the reader stops reading and the script
    blocks on its next write, so memory stays flat whatever the log size."""

    def __init__(self, stream: BinaryIO, wake: threading.Event, max_pending: int = 1 << 19):
        super().__init__(name="taskrun-output", daemon=True)
        self.stream = stream
        self.wake = wake
        self.max_pending = max_pending
        self.cond = threading.Condition()
        self.pending: list[bytes] = []
        self.pending_size = 0
        self.closed = False
        self.eof = threading.Event()
        # Latest markers seen; the supervisor stores them.
        self.progress: int | None = None
        self.progress_message = ""
        self.result: dict | None = None
        self.markers_changed = False
        # The last bytes read, to explain a failure (a MemoryError, say).
        self.tail = b""
        self._at_line_start = True
        self._marker_line: bytearray | None = None

    def run(self) -> None:
        read = self.stream.read1
        try:
            while True:
                chunk = read(1 << 16)
                if not chunk:
                    break
                self._scan_markers(chunk)
                self.tail = self.tail[-2048:] + chunk[-2048:]
                with self.cond:
                    while self.pending_size >= self.max_pending and not self.closed:
                        self.wake.set()
                        self.cond.wait(0.5)
                    if self.closed:
                        break
                    # New output after a quiet spell wakes the supervisor
                    # (a live tail waits for it), and so does a full buffer.
                    wake = not self.pending or self.pending_size >= self.max_pending // 4
                    self.pending.append(chunk)
                    self.pending_size += len(chunk)
                    if wake:
                        self.wake.set()
        except (OSError, ValueError):
            pass  # The pipe was closed under us: the run is over.
        finally:
            if self._marker_line is not None:
                self._marker(bytes(self._marker_line))
            self.eof.set()
            self.wake.set()

    def take(self) -> bytes:
        with self.cond:
            data = b"".join(self.pending)
            self.pending.clear()
            self.pending_size = 0
            self.cond.notify_all()
        return data

    def close(self) -> None:
        with self.cond:
            self.closed = True
            self.cond.notify_all()

    # Markers are whole lines that start with "::progress::" or "::result::".
    # The scan looks only at line starts, so plain output costs one find().
    def _scan_markers(self, chunk: bytes) -> None:
        pos = 0
        if self._marker_line is not None:
            nl = chunk.find(b"\n")
            if nl < 0:
                if len(self._marker_line) < MARKER_LINE_MAX:
                    self._marker_line += chunk
                return
            self._marker_line += chunk[:nl]
            self._marker(bytes(self._marker_line))
            self._marker_line = None
            pos = nl + 1
        elif not self._at_line_start:
            nl = chunk.find(b"\n")
            if nl < 0:
                return
            pos = nl + 1
        self._at_line_start = chunk.endswith(b"\n")
        starts = []
        if chunk.startswith(b"::", pos):
            starts.append(pos)
        i = chunk.find(b"\n::", pos)
        while i >= 0:
            starts.append(i + 1)
            i = chunk.find(b"\n::", i + 1)
        for start in starts:
            end = chunk.find(b"\n", start)
            if end < 0:
                self._marker_line = bytearray(chunk[start:])
                return
            self._marker(chunk[start:end])

    def _marker(self, line: bytes) -> None:
        line = line.rstrip(b"\r\n")
        if line.startswith(PROGRESS):
            body = line[len(PROGRESS) :].decode("utf-8", "replace").strip()
            figure, _, message = body.partition(" ")
            try:
                percent = float(figure.rstrip("%"))
            except ValueError:
                return
            if percent != percent:  # NaN
                return
            self.progress = int(min(100.0, max(0.0, percent)))
            self.progress_message = message.strip()[:500]
            self.markers_changed = True
        elif line.startswith(RESULT):
            try:
                value = json.loads(line[len(RESULT) :].decode("utf-8", "replace"))
            except ValueError:
                return
            if isinstance(value, dict):
                self.result = value
                self.markers_changed = True


class LogSink:
    """Turns raw output into the run's stored log: invalid UTF-8 is replaced
    (a character split across two reads is kept whole), and past ``cap``
    bytes the log says it was cut and the rest is dropped."""

    def __init__(self, run_id: int, cap: int | None = None, start: int = 0, masker=None):
        self.run_id = run_id
        self.cap = cap
        self.size = start
        self.truncated = False
        self.masker = masker
        self._decoder = codecs.getincrementaldecoder("utf-8")("replace")

    def encode(self, raw: bytes, final: bool = False) -> bytes:
        if self.truncated:
            return b""
        text = self._decoder.decode(raw, final)
        if self.masker:
            # Secret values become ****, also when split across two reads.
            text = self.masker.feed(text) + (self.masker.flush() if final else "")
        data = text.encode("utf-8")
        if self.cap is not None and self.size + len(data) > self.cap:
            room = max(0, self.cap - self.size)
            kept = data[:room].decode("utf-8", "ignore").encode("utf-8")
            note = (
                f"\n[taskrun] output cut: the log reached its cap of "
                f"{self.cap / (1 << 20):g} MB; the rest was not kept.\n"
            ).encode()
            data = kept + note
            self.truncated = True
        return data

    def chunk(self, data: bytes) -> tuple[int, bytes] | None:
        """``data`` (already encoded) as the log's next chunk: (its offset,
        data), None when there is nothing. It is stored with the run's write
        (log_size and all); ``advance`` once that is committed."""
        return (self.size, data) if data else None

    def advance(self, chunk: tuple[int, bytes] | None) -> None:
        if chunk is not None:
            self.size += len(chunk[1])
