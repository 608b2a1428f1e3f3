"""OpenAI Realtime transcription over WebSocket: ``/v1/realtime?intent=transcription``.

What the ``openai`` SDK's ``client.realtime.connect(extra_query={"intent":
"transcription"})`` (and browser or pipecat clients of the Realtime API) talk
to, with their ``base_url`` pointed at the HTTP port. The ``openai`` package's
``types/realtime`` (GA) and ``types/beta/realtime`` are the specification.

Each connection is one session of kind ``openai_realtime`` (``sessions.max``
applies), fed by a :class:`~rtap_trio.audio.network.PushSource`: ``pcm16`` is
16-bit little-endian mono PCM at 24 kHz, resampled to the pipeline's 16 kHz.

* The server speaks first: ``session.created`` (GA), or
  ``transcription_session.created`` for a beta client (``OpenAI-Beta:
  realtime=v1``), with the effective configuration.
* ``session.update`` / ``transcription_session.update`` answer with
  ``session.updated`` / ``transcription_session.updated`` in the shape of the
  request's dialect. Both the GA nesting (``audio.input.format``,
  ``.transcription``, ``.turn_detection``) and the beta flat fields
  (``input_audio_format``, ``input_audio_transcription``, ``turn_detection``)
  are read.
* ``turn_detection`` server_vad (the default): RTAP's own VAD and endpointer
  segment the stream; ``silence_duration_ms`` and ``prefix_padding_ms`` become
  the session's ``vad.hangover_ms`` and ``vad.pre_roll_ms``. Its
  ``speech_start`` / ``speech_end`` events become
  ``input_audio_buffer.speech_started`` / ``speech_stopped`` and
  ``committed``, its transcripts
  ``conversation.item.input_audio_transcription.completed``.
* ``turn_detection: null``: audio accumulates until
  ``input_audio_buffer.commit``; the whole buffer is then one utterance of the
  session (``committed``, then ``completed``), ended by the client
  (:meth:`~rtap_trio.session_bridge.SessionBridge.end_turn`) rather than the VAD, and
  goes through the same stages as the VAD's: STT, language analysis, ZeroMQ,
  the console, catch-up. ``clear`` empties the buffer.
* Every committed item gets exactly one ``completed`` (an empty transcript
  when RTAP heard no words) or ``...transcription.failed`` (dropped, over the
  STT budget, an engine failure). Where the profile makes partial
  transcripts, ``...transcription.delta`` events carry the words as they
  become stable (never retracted).

The connection holds its session's slot from the start (the session bridge
opened with ``start=False``); the session runs from the first
``input_audio_buffer.append``, with the configuration as it is then: from then
on ``turn_detection`` (and, under server_vad, the language) are fixed, and an
update that would change them is refused. A session that never ran gives its
slot back unrun (the service's stop ends it at once). Bad input gets an
``error`` event in the Realtime shape and the connection reads on; a client
silent for ``sessions.idle_timeout_s`` is answered, then closed; a client that
disconnects ends its session at once, transcriptions included.

The package, one concept a module: :mod:`.endpoint` (the Starlette entry),
:mod:`.connection` (lifecycle, client events, the bridge), :mod:`.config` (the
effective configuration and its echo in both formats), :mod:`.session_update`
(the GA and beta update formats as pydantic models), :mod:`.events` (session
messages as Realtime events), :mod:`.client_socket` (sending and closing) and
:mod:`.client_error` (the ``error`` event's fields).
"""

from __future__ import annotations

from .connection import KIND
from .endpoint import REALTIME_PATH, RealtimeEndpoint

__all__ = ["KIND", "REALTIME_PATH", "RealtimeEndpoint"]
