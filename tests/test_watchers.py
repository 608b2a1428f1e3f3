"""Watching clients of the WebSocket server: what they choose, what they cannot do,
and who may connect at all. Real sockets on 127.0.0.1; the level test runs the
real pipeline on generated speech."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import trio
import trio.lowlevel
from trio_websocket import (
    ConnectionClosed,
    ConnectionRejected,
    WebSocketConnection,
    open_websocket_url,
)

from rtap_trio.audio.file import load_audio
from rtap_trio.client import open_audio_session
from rtap_trio.events import StateChanged, WakeWord
from rtap_trio.health import count_trio_tasks
from rtap_trio.metrics import Metrics
from rtap_trio.settings import OutputSettings, SecuritySettings
from rtap_trio.transport.outbox import Outbox
from rtap_trio.transport.schemas import (
    EventMessage,
    LevelMessage,
    TranscriptMessage,
    WatcherNotice,
    parse_message,
)
from rtap_trio.transport.websocket import WebSocketServer

from .support import http_get, in_process_service, service_settings

pytestmark = pytest.mark.timeout(120)

TOKEN = "correct-horse-battery-staple"
TRANSCRIPT: dict[str, Any] = {
    "text": "hello",
    "language": "en",
    "language_confidence": 0.9,
    "sentiment": "neutral",
    "sentiment_confidence": 0.9,
    "wake_word": None,
    "audio_start_s": 0.0,
    "audio_end_s": 1.0,
    "model": "test",
    "latency_ms": {},
}


async def _next(ws: WebSocketConnection) -> Any:
    with trio.fail_after(10):
        return parse_message(await ws.get_message())


async def _server(
    nursery: trio.Nursery, security: SecuritySettings | None = None, **output: Any
) -> tuple[WebSocketServer, Outbox, int]:
    outbox = Outbox()
    server = WebSocketServer(
        OutputSettings(websocket_port=0, **output),
        outbox,
        Metrics(),
        security=security,
        service_id="feedfacecafe",
    )
    port = await nursery.start(server.run)
    return server, outbox, port


async def test_a_watcher_chooses_its_topics_and_sessions_and_may_change_them() -> None:
    async with trio.open_nursery() as nursery:
        server, outbox, port = await _server(nursery)
        url = f"ws://127.0.0.1:{port}/?topics=transcripts&sessions=bbbbbbbbbbbb"
        async with open_websocket_url(url) as ws:
            hello = await _next(ws)
            assert isinstance(hello, WatcherNotice) and hello.type == "hello"
            assert hello.service_id == "feedfacecafe" and hello.sessions == ["bbbbbbbbbbbb"]
            outbox.event(WakeWord(keyword="computer", offset_s=0.0), "bbbbbbbbbbbb")
            outbox.transcript(session_id="aaaaaaaaaaaa", **TRANSCRIPT)
            outbox.transcript(session_id="bbbbbbbbbbbb", **TRANSCRIPT)
            only = await _next(ws)
            assert isinstance(only, TranscriptMessage) and only.session_id == "bbbbbbbbbbbb"
            # From now on: events, of every session.
            await ws.send_message(json.dumps({"type": "subscribe", "topics": ["events"]}))
            subscribed = await _next(ws)
            assert isinstance(subscribed, WatcherNotice) and subscribed.type == "subscribed"
            outbox.transcript(session_id="bbbbbbbbbbbb", **TRANSCRIPT)
            outbox.event(WakeWord(keyword="jarvis", offset_s=0.0), "aaaaaaaaaaaa")
            event = await _next(ws)
            assert isinstance(event, EventMessage) and event.data["keyword"] == "jarvis"
        server.close()


@pytest.mark.parametrize(
    ("send", "code"),
    [
        (b"\x00\x01binary", 1003),  # watchers send text
        ("not json", 1008),
        (json.dumps({"type": "subscribe", "topics": ["weather"]}), 1008),
        (json.dumps({"type": "subscribe", "topics": []}), 1008),
        (json.dumps({"type": "unsubscribe"}), 1008),
        ("x" * 70_000, 1009),  # over websocket_max_message_bytes
    ],
)
async def test_bad_frames_close_with_a_code_and_the_server_keeps_serving(
    send: str | bytes, code: int
) -> None:
    async with trio.open_nursery() as nursery:
        server, outbox, port = await _server(nursery)
        async with open_websocket_url(f"ws://127.0.0.1:{port}/") as ws:
            await _next(ws)  # hello
            await ws.send_message(send)
            with trio.fail_after(10), pytest.raises(ConnectionClosed) as closed:
                while True:
                    await ws.get_message()
            assert closed.value.reason.code == code, closed.value.reason
        async with open_websocket_url(f"ws://127.0.0.1:{port}/") as ws:
            await _next(ws)
            outbox.event(WakeWord(keyword="computer", offset_s=0.0), "s1")
            assert isinstance(await _next(ws), EventMessage)
        server.close()


async def test_unknown_topic_in_the_query_is_refused_at_the_handshake() -> None:
    async with trio.open_nursery() as nursery:
        server, _, port = await _server(nursery)
        with pytest.raises(ConnectionRejected) as rejected:
            async with open_websocket_url(f"ws://127.0.0.1:{port}/?topics=weather"):
                pass
        assert rejected.value.status_code == 400
        assert b"unknown topic" in (rejected.value.body or b"")
        server.close()


async def test_a_watcher_that_keeps_losing_messages_is_let_go() -> None:
    async with trio.open_nursery() as nursery:
        server, outbox, port = await _server(
            nursery, websocket_client_queue=8, websocket_client_max_dropped=50
        )
        server._send_budget_s = 60  # about drops, not about stuck sends
        blob = "x" * 40_000
        async with open_websocket_url(f"ws://127.0.0.1:{port}/") as ws:
            await _next(ws)
            for _ in range(400):  # the client reads nothing meanwhile
                outbox.event(StateChanged(from_state="IDLE", to="IDLE", reason=blob), "s1")
                await trio.lowlevel.checkpoint()
            with trio.fail_after(30), pytest.raises(ConnectionClosed) as closed:
                while True:
                    await ws.get_message()
        assert closed.value.reason.code == 1013
        assert "messages dropped" in (closed.value.reason.reason or "")
        server.close()


async def test_two_hundred_rapid_connections_leave_nothing_behind() -> None:
    async with trio.open_nursery() as nursery:
        server, outbox, port = await _server(nursery)
        baseline = count_trio_tasks()
        for i in range(200):
            if i % 2:  # a polite client: handshake, then close
                async with open_websocket_url(f"ws://127.0.0.1:{port}/?topics=events") as ws:
                    await _next(ws)
            else:  # a rude one: TCP connect and drop, mid-handshake or before it
                stream = await trio.open_tcp_stream("127.0.0.1", port)
                if i % 4 == 0:
                    await stream.send_all(b"GET / HTTP/1.1\r\nHost: x\r\nUpgrade: websocket\r\n")
                await stream.aclose()
        # Half-open handshakes are dropped after HANDSHAKE_TIMEOUT_S (5 s).
        with trio.fail_after(15):
            while server.clients or outbox.statistics().subscribers:
                await trio.sleep(0.05)
            while count_trio_tasks() > baseline:
                await trio.sleep(0.05)
        async with open_websocket_url(f"ws://127.0.0.1:{port}/") as ws:
            assert (await _next(ws)).type == "hello"
        server.close()


async def _rejected(url: str, headers: list[tuple[bytes, bytes]] | None = None) -> int:
    with pytest.raises(ConnectionRejected) as rejected:
        async with open_websocket_url(url, extra_headers=headers):
            pass
    return int(rejected.value.status_code)


async def test_a_token_and_an_origin_allow_list_guard_the_websocket_server() -> None:
    security = SecuritySettings(token=TOKEN, allowed_origins=("https://agents.example",))
    async with trio.open_nursery() as nursery:
        server, _, port = await _server(nursery, security)
        base = f"ws://127.0.0.1:{port}"
        bearer = (b"Authorization", f"Bearer {TOKEN}".encode())
        assert await _rejected(f"{base}/") == 401
        assert await _rejected(f"{base}/?token=wrong-token-wrong-token") == 401
        assert await _rejected(f"{base}/v1/audio") == 401  # audio sessions too
        # The right token from another site's page: refused all the same.
        assert await _rejected(f"{base}/", [bearer, (b"Origin", b"https://evil.example")]) == 403
        assert await _rejected(f"{base}/?token={TOKEN}", [(b"Origin", b"null")]) == 403
        for headers, url in (
            ([bearer], f"{base}/"),
            (None, f"{base}/?token={TOKEN}"),  # browsers cannot set headers
            ([bearer, (b"Origin", b"http://127.0.0.1:8080")], f"{base}/"),
            ([bearer, (b"Origin", b"https://agents.example")], f"{base}/"),
        ):
            async with open_websocket_url(url, extra_headers=headers) as ws:
                assert (await _next(ws)).type == "hello"
        # Without a token, 127.0.0.1 needs nothing, but origins still count.
        server.close()
    async with trio.open_nursery() as nursery:
        server, _, port = await _server(nursery)
        assert (
            await _rejected(f"ws://127.0.0.1:{port}/", [(b"Origin", b"http://evil.example")]) == 403
        )
        server.close()


async def test_the_token_guards_the_http_api_but_not_health_metrics_or_the_page() -> None:
    settings = service_settings("pc2", **{"audio.source": "none", "security.token": TOKEN})
    service = in_process_service(settings)
    async with trio.open_nursery() as nursery:
        ports = await nursery.start(service.run)
        assert ports.telemetry is not None and ports.websocket is not None
        http = ports.telemetry
        bearer = {"Authorization": f"Bearer {TOKEN}"}
        for path in ("/api/config", "/api/transcripts", "/v1/models"):
            status, body = await http_get(http, path)
            assert status == 401 and "token" in body, (path, status, body)
            assert (await http_get(http, path, {"Authorization": "Bearer nope"}))[0] == 401
            assert (await http_get(http, path, bearer))[0] == 200, path
        status, body = await http_get(http, "/api/config", bearer)
        assert json.loads(body)["token_required"] is True
        assert (await http_get(http, "/api/config", {**bearer, "Origin": "http://evil.example"}))[
            0
        ] == 403
        for path in ("/health", "/metrics", "/", "/console/console.js"):
            assert (await http_get(http, path))[0] == 200, path
        # The OpenAI SDK sends its api_key as the bearer token: that is all a client changes.
        import openai

        def models(key: str) -> list[str]:
            client = openai.OpenAI(
                base_url=f"http://127.0.0.1:{http}/v1", api_key=key, max_retries=0
            )
            return [model.id for model in client.models.list()]

        assert "whisper-1" in await trio.to_thread.run_sync(models, TOKEN)
        with pytest.raises(openai.AuthenticationError):
            await trio.to_thread.run_sync(models, "not-the-token")
        # The audio endpoint, with the token, works as ever.
        async with open_audio_session(ports.websocket, token=TOKEN, wake_word=False) as client:
            assert client.session_id
            await client.stop()
        service.stop()


async def test_levels_reach_only_watchers_that_ask_and_follow_the_speech(
    speech: dict[str, Any],
) -> None:
    audio = load_audio(Path(speech["dir"]) / "en_no_wake.wav", 16_000).astype(np.float32) / 32768
    settings = service_settings("pc2", **{"audio.source": "none"})
    service = in_process_service(settings)
    levels: list[LevelMessage] = []
    plain: list[Any] = []
    async with trio.open_nursery() as nursery:
        ports = await nursery.start(service.run)

        async def watch(query: str, into: list[Any]) -> None:
            async with open_websocket_url(f"ws://127.0.0.1:{ports.websocket}/{query}") as ws:
                try:
                    while True:
                        into.append(parse_message(await ws.get_message()))
                except ConnectionClosed:
                    return

        nursery.start_soon(watch, "?topics=levels", levels)
        nursery.start_soon(watch, "", plain)
        with trio.fail_after(10):
            while len(service.outbox._subscribers) < 4:  # two watchers, two ZeroMQ
                await trio.sleep(0.01)
        async with open_audio_session(ports.websocket, wake_word=False) as client:
            await client.send_audio(audio)
            await client.stop()
        service.stop()
    levels = [m for m in levels if isinstance(m, LevelMessage)]
    assert not any(isinstance(m, LevelMessage) for m in plain)
    assert levels and {m.session_id for m in levels} == {client.session_id}
    assert all(m.window_ms == 100 for m in levels)
    # Silence sits near the floor, speech well above it, and VAD agrees.
    loud = [m for m in levels if m.voiced > 0.5]
    quiet = [m for m in levels if m.voiced == 0]
    assert loud and quiet
    assert min(m.rms_dbfs for m in loud) > max(m.rms_dbfs for m in quiet[:3])
    assert max(m.rms_dbfs for m in loud) > -30
    assert [m.session_seq for m in levels] == list(range(len(levels)))
