"""The hot standby: warm, following the primary, publishing only while it is gone.

A standby (pc2, ``standby.enabled``) runs the whole pipeline on the same audio
as the primary: models loaded, capturing, segmenting, transcribing. Its
sessions publish into an internal outbox; this relay decides what reaches the
outbox its subscribers see (ZeroMQ, WebSocket, the console, catch-up):

- **Following** (the primary's heartbeat is heard): nothing is published. Each
  of its own transcripts is withheld until the primary's transcript of the same
  speech arrives (matched by when it was spoken, :class:`~.transport.spans.SpeechSpan`),
  or for ``match_window_s``, after which the primary evidently chose not to
  publish it (too short, no speech) and it is dropped.
- **Taking over**: no heartbeat for ``takeover_after_ms``, or the primary said
  ``service_stopping``. A ``standby_takeover`` event first, then every withheld
  transcript the primary did not publish, oldest first; from then on everything.
- **Handing back**, the rule for exactly one active: *the primary is active
  whenever it is heard*. At the primary's first heartbeat the standby publishes
  ``standby_handback`` and follows again. Speech that began before the primary
  (re)started capturing stays the standby's to publish, since the primary
  cannot have heard it whole; everything later is the primary's.

Downstream, :mod:`rtap_trio.failover` subscribes to both and hands each
utterance to the agent once, whatever the two publish around a switch.
"""

from __future__ import annotations

import time
from collections import deque
from dataclasses import dataclass

import trio
import zmq
from loguru import logger

from .events import (
    Heartbeat,
    ServiceStopping,
    StandbyHandback,
    StandbyTakeover,
    parse_event,
)
from .metrics import Metrics
from .settings import StandbySettings
from .transport.outbox import Outbox, Published, SessionOutbox
from .transport.schemas import (
    EventMessage,
    LevelMessage,
    Stream,
    TranscriptMessage,
    parse_message,
)
from .transport.spans import SpeechSpan
from .transport.zmq_async import close, receive_multipart

__all__ = ["StandbyRelay", "StandbyStatistics"]

#: How often the heartbeat's age is checked: the take-over happens within this
#: of ``takeover_after_ms``.
_WATCH_S = 0.05
#: The primary's transcripts remembered for matching (minutes of speech).
_PRIMARY_SPANS = 512
#: The relay's queue from the internal outbox: it only forwards or withholds,
#: so it keeps up; this is room for a burst, never a policy that drops speech.
_QUEUE = 4096


@dataclass(frozen=True, slots=True)
class StandbyStatistics:
    active: bool
    primary_heard: bool
    heartbeat_age_s: float | None
    withheld: int
    takeovers: int
    handbacks: int


@dataclass(slots=True)
class _Withheld:
    message: TranscriptMessage
    span: SpeechSpan
    since: float  # trio time


class StandbyRelay:
    def __init__(
        self,
        settings: StandbySettings,
        context: zmq.Context[zmq.Socket[bytes]],
        internal: Outbox,
        public: Outbox,
        metrics: Metrics,
        service_id: str,
    ) -> None:
        self._settings = settings
        self._context = context
        self._internal = internal
        self._public = public
        self._metrics = metrics
        self._events: SessionOutbox = public.session(service_id)
        self.active = False
        self._started = 0.0
        self._last_beat: float | None = None  # trio time
        self._last_beat_wall: float | None = None
        self._primary_id: str | None = None
        self._primary_started_wall: float | None = None
        self._withheld: deque[_Withheld] = deque()
        self._primary_spans: deque[SpeechSpan] = deque(maxlen=_PRIMARY_SPANS)
        self._switches = {"takeover": 0, "handback": 0}
        self._log = logger.bind(component="standby")
        #: set when the internal outbox has closed and everything was relayed
        self.drained = trio.Event()

    async def run(self, *, task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED) -> None:
        """Relay until the internal outbox closes; follow the primary meanwhile."""
        subscription = self._internal.subscribe(
            "standby", (Stream.EVENTS, Stream.TRANSCRIPTS, Stream.LEVELS), _QUEUE
        )
        socket = self._context.socket(zmq.SUB)
        socket.setsockopt(zmq.LINGER, 0)
        host = self._settings.primary_host
        for port in (self._settings.primary_events_port, self._settings.primary_transcripts_port):
            socket.connect(f"tcp://{host}:{port}")
        for topic in (b"heartbeat", b"service_stopping", b"transcript"):
            socket.subscribe(topic)
        self._started = trio.current_time()
        self._metrics.standby_ready.set(1)
        self._log.info(
            "following the primary at {}:{} (take over after {} ms without its heartbeat)",
            host,
            self._settings.primary_events_port,
            self._settings.takeover_after_ms,
        )
        try:
            with subscription:
                async with trio.open_nursery() as nursery:
                    nursery.start_soon(self._follow, socket)
                    nursery.start_soon(self._watch)
                    task_status.started()
                    async for item in subscription.receive:
                        self._relay(item)
                    nursery.cancel_scope.cancel()
        finally:
            close(socket)
            self._metrics.standby_ready.set(0)
            self.drained.set()

    # ------------------------------------------------------------------ the primary

    async def _follow(self, socket: zmq.Socket[bytes]) -> None:
        while True:
            frames = await receive_multipart(socket)
            try:
                message = parse_message(frames[-1])
            except ValueError:
                continue  # not RTAP's: nothing to follow
            if isinstance(message, TranscriptMessage):
                self._primary_transcript(message)
            elif isinstance(message, EventMessage):
                self._primary_event(message)

    def _primary_event(self, message: EventMessage) -> None:
        try:
            event = parse_event(message)
        except ValueError:
            return  # not as RTAP writes it: nothing to follow
        match event:
            case Heartbeat(uptime_s=uptime):
                self._heartbeat(message, uptime)
            case ServiceStopping() if not self.active:
                self._take_over("the primary is stopping")

    def _heartbeat(self, beat: EventMessage, uptime: float) -> None:
        self._last_beat = trio.current_time()
        self._last_beat_wall = beat.emitted_at
        if self._primary_id != beat.session_id:  # first heard, or restarted
            self._primary_id = beat.session_id
            self._primary_started_wall = beat.emitted_at - uptime
            self._log.info("primary {} heard (up {:.1f} s)", beat.session_id, uptime)
        if self.active:
            self._hand_back(beat)

    def _primary_transcript(self, message: TranscriptMessage) -> None:
        span = SpeechSpan.of(message)
        self._primary_spans.append(span)
        for withheld in [w for w in self._withheld if w.span.same_speech(span)]:
            self._withheld.remove(withheld)
            self._metrics.standby_transcripts.labels("matched").inc()

    async def _watch(self) -> None:
        takeover_s = self._settings.takeover_after_ms / 1000
        while True:
            now = trio.current_time()
            since = self._last_beat if self._last_beat is not None else self._started
            self._metrics.standby_heartbeat_age.set(now - since)
            if not self.active:
                if now - since >= takeover_s:
                    heard = "no heartbeat" if self._last_beat is None else "heartbeat lost"
                    self._take_over(f"{heard} for {now - since:.2f} s")
                else:
                    self._expire(now)
            await trio.sleep(_WATCH_S)

    def _expire(self, now: float) -> None:
        window = self._settings.match_window_s
        while self._withheld and now - self._withheld[0].since > window:
            self._withheld.popleft()
            self._metrics.standby_transcripts.labels("expired").inc()

    # ------------------------------------------------------------------ switching

    def _take_over(self, reason: str) -> None:
        now = trio.current_time()
        since = self._last_beat if self._last_beat is not None else self._started
        self.active = True
        self._switches["takeover"] += 1
        self._metrics.standby_active.set(1)
        self._metrics.standby_switches.labels("takeover").inc()
        self._log.warning("taking over: {}; {} withheld transcripts", reason, len(self._withheld))
        self._events.event(
            StandbyTakeover(
                reason=reason,
                primary_id=self._primary_id,
                silent_ms=round((now - since) * 1000, 1),
                last_heartbeat_at=self._last_beat_wall,
                withheld=len(self._withheld),
            )
        )
        while self._withheld:
            self._publish_transcript(self._withheld.popleft().message)
            self._metrics.standby_transcripts.labels("published").inc()

    def _hand_back(self, beat: EventMessage) -> None:
        self.active = False
        self._switches["handback"] += 1
        self._metrics.standby_active.set(0)
        self._metrics.standby_switches.labels("handback").inc()
        self._log.warning("the primary {} is back: following it again", beat.session_id)
        self._events.event(
            StandbyHandback(
                primary_id=beat.session_id, primary_started_at=self._primary_started_wall
            )
        )

    # ------------------------------------------------------------------ relaying

    def _relay(self, item: Published) -> None:
        message = item.message
        if isinstance(message, TranscriptMessage):
            if self.active:
                self._publish_transcript(message)
                self._metrics.standby_transcripts.labels("published").inc()
            else:
                self._withhold(message)
        elif not self.active:
            return  # following: the standby publishes nothing
        elif item.event is not None:  # as its session made it: the same data
            self._public.event(
                item.event,
                message.session_id,
                message.utterance_id,
                session_seq=message.session_seq,
            )
        elif isinstance(message, LevelMessage):
            self._public.level(
                message.session_id,
                session_seq=message.session_seq,
                rms_dbfs=message.rms_dbfs,
                peak_dbfs=message.peak_dbfs,
                voiced=message.voiced,
                window_ms=message.window_ms,
            )

    def _withhold(self, message: TranscriptMessage) -> None:
        span = SpeechSpan.of(message)
        if any(span.same_speech(primary) for primary in self._primary_spans):
            self._metrics.standby_transcripts.labels("matched").inc()
            return
        started = self._primary_started_wall
        if started is not None and span.start < started and self._switches["handback"]:
            # Begun before the primary came back: it cannot have heard it whole.
            self._publish_transcript(message)
            self._metrics.standby_transcripts.labels("published").inc()
            return
        self._withheld.append(_Withheld(message, span, trio.current_time()))

    def _publish_transcript(self, message: TranscriptMessage) -> None:
        # Published later than made: its latency says so, which keeps its
        # speech span (emitted_at less speech_end_to_emit) where the speech was.
        late_ms = max(0.0, (time.time() - message.emitted_at) * 1000)
        latency = message.latency_ms.model_copy(
            update={"speech_end_to_emit": message.latency_ms.speech_end_to_emit + late_ms}
        )
        fields = message.model_dump(
            exclude={"schema_version", "kind", "seq", "session_seq", "emitted_at", "latency_ms"}
        )
        self._public.transcript(session_seq=message.session_seq, latency_ms=latency, **fields)

    def statistics(self) -> StandbyStatistics:
        since = self._last_beat
        return StandbyStatistics(
            active=self.active,
            primary_heard=since is not None,
            heartbeat_age_s=None if since is None else round(trio.current_time() - since, 2),
            withheld=len(self._withheld),
            takeovers=self._switches["takeover"],
            handbacks=self._switches["handback"],
        )
