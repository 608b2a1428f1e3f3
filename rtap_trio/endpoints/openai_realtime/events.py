"""The session's messages as Realtime server events: items committed, transcribed or failed.

RTAP's sessions speak in typed events (:mod:`rtap_trio.events`)
and :class:`~rtap_trio.transport.schemas.TranscriptMessage`\\ s;
:class:`RealtimeEvents` turns them into the API's events and keeps the
bookkeeping that takes: which item each utterance is (a speech the VAD heard,
or a manual commit, oldest first), and that every committed item gets exactly
one ``...transcription.completed`` (empty when no words were heard) or
``...transcription.failed``. Apart from the connection because it is the one
place that knows both vocabularies; the connection only tells it of manual
commits and of the session's end.
"""

from __future__ import annotations

from collections import deque
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import trio

from ...events import (
    Event,
    SessionFailed,
    SpeechEnd,
    SpeechStart,
    SttTimeout,
    TranscriptPartial,
    UtteranceDiscarded,
    UtteranceDropped,
)
from ...transport.outbox import Published
from ...transport.schemas import TranscriptMessage
from .client_error import ClientError
from .client_socket import ClientSocket, new_id
from .config import SessionConfig

__all__ = ["RealtimeEvents"]


@dataclass(slots=True)
class _Item:
    """A committed item: an utterance the VAD ended, or a manual commit."""

    item_id: str
    start_ms: int = 0
    end_ms: int = 0
    #: a manual commit's length, exactly; None: the speech's, from the session
    seconds: float | None = None


def _ms(offset_s: float) -> int:
    """An offset in the session's stream, as the API gives it: whole milliseconds."""
    return round(1000 * offset_s)


class RealtimeEvents:
    """One connection's translation; ``config``: its configuration (fixed once the session runs)."""

    def __init__(self, socket: ClientSocket, config: Callable[[], SessionConfig]) -> None:
        self._socket = socket
        self._config = config
        self._last_item: str | None = None
        self._speech: _Item | None = None
        #: committed items by the utterance they are, until answered
        self._items: dict[str, _Item] = {}
        #: manual commits whose utterance the session has not ended yet, oldest first
        self._turns: deque[_Item] = deque()
        #: set once the session's messages have all been forwarded
        self.forwarded = trio.Event()

    async def forward(self, messages: trio.MemoryReceiveChannel[Published]) -> None:
        """The session's events and transcripts as Realtime events, as they happen."""
        async for item in messages:
            message = item.message
            if isinstance(message, TranscriptMessage):
                answered = self._answered(message.utterance_id)
                language = message.stt_language or message.language
                seconds = answered.seconds
                if seconds is None:
                    seconds = max(0.0, message.audio_end_s - message.audio_start_s)
                await self._completed(answered.item_id, message.text, seconds, language)
            elif item.event is not None:
                await self._forward_event(item.event, message.utterance_id)
        self.forwarded.set()

    async def manual_commit(self, seconds: float) -> None:
        """A manual commit of ``seconds`` of audio: committed now, answered with its utterance."""
        item = _Item(new_id("item"), seconds=seconds)
        self._turns.append(item)
        await self._committed(item.item_id)

    async def fail_unanswered(self) -> None:
        """Every committed item gets its answer: one the session could not give is a failure."""
        unanswered = [*self._items.values(), *self._turns]
        self._items.clear()
        self._turns.clear()
        for item in unanswered:
            await self._failed(
                item.item_id,
                "transcription_failed",
                "the session ended before this item was transcribed",
            )

    def _answered(self, utterance_id: str | None) -> _Item:
        """The item an utterance's answer is for (no longer waiting for one)."""
        found = self._items.pop(utterance_id or "", None)
        return found or _Item(new_id("item"))

    async def _forward_event(self, event: Event, utterance_id: str | None) -> None:
        td = self._config().turn_detection
        manual = td is None  # fixed once the session runs
        match event:
            case SpeechEnd() if manual:
                # The client's commit ended this utterance: it was committed then.
                turn = self._turns.popleft() if self._turns else _Item(new_id("item"))
                self._items[utterance_id or ""] = turn
            case SpeechStart(offset_s=offset_s) if not manual:
                # The API's start includes the prefix padding, as RTAP's utterance does.
                start_ms = max(0, _ms(offset_s) - (td.prefix_padding_ms if td else 0))
                self._speech = _Item(new_id("item"), start_ms)
                await self._socket.send(
                    "input_audio_buffer.speech_started",
                    audio_start_ms=start_ms,
                    item_id=self._speech.item_id,
                )
            case TranscriptPartial(newly_stable=newly):
                # Words as they become stable (never retracted): the API's deltas add up.
                if newly and self._speech is not None:
                    await self._socket.send(
                        "conversation.item.input_audio_transcription.delta",
                        item_id=self._speech.item_id,
                        content_index=0,
                        delta=newly + " ",
                    )
            case SpeechEnd(offset_s=offset_s):
                end_ms = _ms(offset_s)
                speech, self._speech = self._speech or _Item(new_id("item"), end_ms), None
                speech.end_ms = end_ms
                self._items[utterance_id or ""] = speech
                await self._socket.send(
                    "input_audio_buffer.speech_stopped", audio_end_ms=end_ms, item_id=speech.item_id
                )
                await self._committed(speech.item_id)
            case UtteranceDiscarded():
                # Too short, no words, no speech: committed, so answered, with nothing.
                answered = self._answered(utterance_id)
                seconds = answered.seconds
                if seconds is None:
                    seconds = max(0, answered.end_ms - answered.start_ms) / 1000
                await self._completed(answered.item_id, "", seconds, None)
            case UtteranceDropped():
                await self._failed(
                    self._answered(utterance_id).item_id,
                    "queue_full",
                    "transcription fell behind the speech: this utterance was dropped",
                )
            case SttTimeout(budget_ms=budget_ms):
                await self._failed(
                    self._answered(utterance_id).item_id,
                    "stt_timeout",
                    f"the transcription took over {budget_ms} ms and was aborted",
                )
            case SessionFailed():
                await self._socket.error(
                    ClientError("the session failed", code="session_failed", kind="server_error")
                )

    async def _committed(self, item_id: str) -> None:
        previous, self._last_item = self._last_item, item_id
        await self._socket.send(
            "input_audio_buffer.committed", item_id=item_id, previous_item_id=previous
        )

    async def _completed(
        self, item_id: str, text: str, seconds: float, language: str | None
    ) -> None:
        fields: dict[str, Any] = {
            "item_id": item_id,
            "content_index": 0,
            "transcript": text,
            "usage": {"type": "duration", "seconds": round(seconds, 3)},
        }
        if language:
            fields["languages"] = [{"code": language}]
        await self._socket.send("conversation.item.input_audio_transcription.completed", **fields)

    async def _failed(self, item_id: str, code: str, message: str) -> None:
        await self._socket.send(
            "conversation.item.input_audio_transcription.failed",
            item_id=item_id,
            content_index=0,
            error={"type": "server_error", "code": code, "message": message, "param": None},
        )
