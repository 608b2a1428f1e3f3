"""The remote engine: an :class:`~rtap_trio.stt.engine.SttEngine` whose words
come from another machine's OpenAI-compatible endpoint (:mod:`.client`).

Nothing runs here but the upload: the engine's "model" is wherever
``stt.remote.urls`` points (main_pc's GPU, another RTAP, speaches). It takes
speculative work: a partial transcript costs this machine a WAV and a
request, and stopping it is closing a socket (measured: the remote sees the
connection close within a millisecond of the cancellation, tests/test_remote_stt.py),
so a final never waits for a guess here. Whether the remote's GPU can afford
the guesses is the remote's call: its own pool runs them after every final.
"""

from __future__ import annotations

from collections.abc import Callable

from ...items import Float32
from ..engine import EngineCapabilities, EngineRequest, EngineResult, SttEngine
from .client import RemoteClient
from .wav import wav_bytes

__all__ = ["RemoteEngine"]


class RemoteEngine(SttEngine):
    """One request at a time (the pool lends it like any engine), over a shared client."""

    def __init__(
        self,
        client: RemoteClient,
        capabilities: EngineCapabilities,
        language_name: Callable[[str], str] | None = None,
    ) -> None:
        self._client = client
        self.capabilities = capabilities
        self._language_name = language_name

    async def transcribe(self, audio: Float32, request: EngineRequest) -> EngineResult:
        # Cancelling (the pool's budget, a preemption) cancels the request:
        # httpx closes its connection, the next request opens another.
        return await self._client.transcribe(wav_bytes(audio), request.language)

    def language_name(self, code: str) -> str:
        return self._language_name(code) if self._language_name else code

    async def aclose(self) -> None:
        await self._client.aclose()
