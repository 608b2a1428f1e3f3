"""Opening ``stt.engine: remote``: the shared client, the pool's engines, and
with ``stt.fallback`` the local engines behind them, all at start.

The fallback is loaded here, before the service serves, rather than on the
first failure: loading and warming up tiny.en takes ~1.1 s of CPU here (base
3.3 s; tests/support.py), which a first failure would add to an utterance
already late, on a machine that may then be busiest. The cost is its memory
(138 MB of RSS for pc2's tiny.en, loaded and warmed up), held while the remote
answers.
"""

from __future__ import annotations

from collections.abc import Callable
from urllib.parse import urlsplit

import httpx
import trio
from loguru import logger

from ...settings import SttSettings
from ..circuit import CircuitBreaker
from ..engine import EngineCapabilities, SttEngine
from ..fallback import FallbackEngine
from .client import RemoteClient
from .engine import RemoteEngine

__all__ = ["START_CHECK_S", "open_remote_engines"]

#: How long the start-up asks the remote for its models: a LAN answers in
#: milliseconds; a remote that is down must not hold the start (it may come
#: up later: the circuit finds out).
START_CHECK_S = 2.0

#: The name OpenAI's clients send, which RTAP (and others) accept for their model.
_ALIAS = "whisper-1"


async def open_remote_engines(settings: SttSettings) -> list[SttEngine]:
    """``stt.workers`` remote engines, each behind a fallback engine if one is set."""
    remote = settings.remote
    local: list[SttEngine] = []
    if settings.fallback == "whispercpp":
        from ..whispercpp import open_whispercpp_engines

        local = list(await open_whispercpp_engines(settings))
    namer = local[0].language_name if local else None
    client = RemoteClient(remote, _language_codes(remote.languages, namer))
    try:
        name = await _model_name(client, remote.model)
    except BaseException:
        await client.aclose()
        for engine in local:
            await engine.aclose()
        raise
    first = urlsplit(remote.urls[0])
    capabilities = EngineCapabilities(
        name=name,
        languages=tuple(remote.languages),
        multilingual=len(remote.languages) > 1,
        speculative=True,  # a request and a socket to close: see .engine
        origin=", ".join(remote.urls),
        device=f"remote:{first.netloc}"
        + (f"+{len(remote.urls) - 1}" if len(remote.urls) > 1 else ""),
    )
    engines: list[SttEngine] = [
        RemoteEngine(client, capabilities, namer) for _ in range(settings.workers)
    ]
    log = logger.bind(component="stt")
    if not local:
        log.info("STT on {} ({}), no fallback", remote.urls, name)
        return engines
    circuit = CircuitBreaker(
        remote.failures_to_open, remote.retry_initial_ms / 1000, remote.retry_max_ms / 1000
    )
    log.info(
        "STT on {} ({}), falling back to whisper.cpp {} on the {}",
        remote.urls,
        name,
        local[0].capabilities.name,
        local[0].capabilities.device.upper(),
    )
    return [
        FallbackEngine(
            primary,
            fallback,
            circuit,
            names=("remote", "whispercpp"),
            timeout_s=remote.timeout_ms / 1000,
            reserve_s=remote.fallback_reserve_ms / 1000,
        )
        for primary, fallback in zip(engines, local, strict=True)
    ]


async def _model_name(client: RemoteClient, model: str) -> str:
    """The name transcripts publish: the remote's own model when ``model`` is
    OpenAI's alias for it (RTAP lists its model first), else ``model``. Asked of
    the first URL that answers; an unreachable remote is a warning, not a failed
    start."""
    for url in client.urls:
        with trio.move_on_after(START_CHECK_S):
            try:
                ids = await client.models(url)
            except (httpx.HTTPError, ValueError) as exc:
                logger.bind(component="stt").warning(
                    "remote STT {} did not list its models at start ({}): "
                    "it is tried at the first utterance",
                    url,
                    exc,
                )
                continue
            if model == _ALIAS and ids and ids[0] != _ALIAS:
                return ids[0]
            return model
    return model


def _language_codes(
    languages: list[str], namer: Callable[[str], str] | None
) -> Callable[[str], str | None]:
    """Reads the language a remote heard as one of ``languages``: OpenAI's API
    names it ("english"); a name is matched through ``namer`` (the fallback's
    names), a code as it is, anything else is unknown."""
    names = {namer(code).lower(): code for code in languages} if namer else {}

    def code(heard: str) -> str | None:
        heard = heard.lower()
        return heard if heard in languages else names.get(heard)

    return code
