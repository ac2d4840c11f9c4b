"""Turn token bytes into text deltas: never half a UTF-8 character, never part of a stop string."""
from __future__ import annotations

import codecs
from collections.abc import Sequence


def find_stop(text: str, stops: Sequence[str]) -> int | None:
    """Where the earliest stop string in ``text`` begins; None if none occurs."""
    hits = [i for i in (text.find(s) for s in stops if s) if i >= 0]
    return min(hits) if hits else None


def partial_stop_suffix(text: str, stops: Sequence[str]) -> int:
    """Length of the longest suffix of ``text`` that is a proper prefix of a stop string: the text
    to hold back, since the next piece may complete the stop string."""
    best = 0
    for s in stops:
        for k in range(min(len(s) - 1, len(text)), best, -1):
            if text.endswith(s[:k]):
                best = k
                break
    return best


class TextStream:
    """Feed token pieces (bytes); get back text that is safe to show.

    Incomplete UTF-8 sequences are held until complete. Text that could be the start of a
    stop sequence is held until it is known not to be; when a stop sequence appears,
    ``stopped`` turns true and nothing from it onward is ever returned.
    """

    def __init__(self, stop: Sequence[str] = ()):
        self._decoder = codecs.getincrementaldecoder("utf-8")(errors="replace")
        self._stop = [s for s in stop if s]
        self._held = ""
        self.text = ""  # everything returned so far
        self.stopped = False

    def push(self, piece: bytes) -> str:
        """Add one token's bytes; return the new safe text (may be empty)."""
        if self.stopped:
            return ""
        return self._emit(self._held + self._decoder.decode(piece))

    def finish(self) -> str:
        """End of generation: flush everything still held (bad trailing bytes become U+FFFD)."""
        if self.stopped:
            return ""
        pending = self._held + self._decoder.decode(b"", final=True)
        self._held = ""
        cut = find_stop(pending, self._stop)
        if cut is not None:
            self.stopped = True
            pending = pending[:cut]
        self.text += pending
        return pending

    def _emit(self, pending: str) -> str:
        cut = find_stop(pending, self._stop)
        if cut is not None:
            self.stopped = True
            self._held = ""
            out = pending[:cut]
        else:
            keep = partial_stop_suffix(pending, self._stop)
            out, self._held = pending[: len(pending) - keep], pending[len(pending) - keep:]
        self.text += out
        return out
