"""A real headless Chromium (Debian's), driven over the DevTools protocol from trio.

Nothing is downloaded: the browser is the ``chromium`` package that
``scripts/setup.sh`` installs. A fake microphone plays a WAV file (48 kHz) at
real-time pace, looped, to any page that calls ``getUserMedia``.
"""

from __future__ import annotations

import base64
import itertools
import json
import shutil
import subprocess
import tempfile
import urllib.request
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any

import trio
from trio_websocket import WebSocketConnection, open_websocket_url

__all__ = ["Page", "chromium_missing", "open_page"]

_FLAGS = [
    "--headless=new",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--no-first-run",
    "--remote-debugging-port=0",
    "--window-size=1400,1000",
    "--use-fake-ui-for-media-stream",
    "--use-fake-device-for-media-stream",
    "--autoplay-policy=no-user-gesture-required",
]


def chromium_missing() -> str | None:
    """Why the browser tests cannot run here, or None."""
    return None if shutil.which("chromium") else "chromium is not installed (scripts/setup.sh)"


class Page:
    """One tab: evaluate JavaScript in it, wait for a condition, take a screenshot."""

    def __init__(self, ws: WebSocketConnection) -> None:
        self._ws = ws
        self._ids = itertools.count(1)
        self._replies: dict[int, trio.MemorySendChannel[dict[str, Any]]] = {}
        #: uncaught JavaScript exceptions and console.error lines of the page
        self.errors: list[str] = []

    async def _read(self) -> None:
        while True:
            message = json.loads(await self._ws.get_message())
            if "id" in message:
                channel = self._replies.pop(message["id"], None)
                if channel is not None:
                    channel.send_nowait(message)
            elif message.get("method") == "Runtime.exceptionThrown":
                details = message["params"]["exceptionDetails"]
                self.errors.append(details.get("exception", {}).get("description", str(details)))
            elif message.get("method") == "Runtime.consoleAPICalled":
                params = message["params"]
                if params["type"] == "error":
                    self.errors.append(" ".join(str(a.get("value")) for a in params["args"]))

    async def call(self, method: str, **params: Any) -> dict[str, Any]:
        key = next(self._ids)
        send, receive = trio.open_memory_channel[dict[str, Any]](1)
        self._replies[key] = send
        await self._ws.send_message(json.dumps({"id": key, "method": method, "params": params}))
        with trio.fail_after(30):
            reply = await receive.receive()
        if "error" in reply:
            raise RuntimeError(f"{method}: {reply['error']}")
        result: dict[str, Any] = reply["result"]
        return result

    async def evaluate(self, expression: str) -> Any:
        """The value of ``expression`` (awaited if a promise), as from a user's click."""
        result = await self.call(
            "Runtime.evaluate",
            expression=expression,
            returnByValue=True,
            awaitPromise=True,
            userGesture=True,
        )
        if "exceptionDetails" in result:
            raise RuntimeError(f"{expression}: {result['exceptionDetails']}")
        return result["result"].get("value")

    async def wait_for(self, expression: str, limit_s: float) -> Any:
        """Until ``expression`` is truthy; its value."""
        with trio.fail_after(limit_s):
            while True:
                value = await self.evaluate(expression)
                if value:
                    return value
                await trio.sleep(0.2)

    async def goto(self, url: str) -> None:
        await self.call("Page.navigate", url=url)
        await self.wait_for(
            "document.readyState === 'complete' && location.href !== 'about:blank'", 30
        )

    async def text(self) -> str:
        return str(await self.evaluate("document.body.innerText"))

    async def screenshot(self, path: Path) -> None:
        shot = await self.call("Page.captureScreenshot", format="png")
        await trio.to_thread.run_sync(path.write_bytes, base64.b64decode(shot["data"]))


def _get_json(url: str) -> Any:
    with urllib.request.urlopen(url, timeout=5) as response:
        return json.loads(response.read())


@asynccontextmanager
async def open_page(fake_microphone: Path | None = None) -> AsyncIterator[Page]:
    """A fresh browser (its own profile) with one blank page; gone afterwards."""
    profile = Path(tempfile.mkdtemp(prefix="rtap-chromium-"))
    flags = [*_FLAGS, f"--user-data-dir={profile}"]
    if fake_microphone is not None:
        flags.append(f"--use-file-for-fake-audio-capture={fake_microphone}")
    # Starting it takes milliseconds; the wait for it below is on trio's clock.
    process = subprocess.Popen(  # noqa: ASYNC220
        ["chromium", *flags, "about:blank"],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    try:
        active = profile / "DevToolsActivePort"
        with trio.fail_after(30):
            while not active.is_file() or not active.read_text().strip():
                assert process.poll() is None, "chromium exited at start"
                await trio.sleep(0.1)
        port = int(active.read_text().split()[0])
        targets = await trio.to_thread.run_sync(_get_json, f"http://127.0.0.1:{port}/json/list")
        url = next(t["webSocketDebuggerUrl"] for t in targets if t["type"] == "page")
        async with (
            open_websocket_url(url, max_message_size=64 * 1024 * 1024) as ws,
            trio.open_nursery() as nursery,
        ):
            page = Page(ws)
            nursery.start_soon(page._read)
            await page.call("Runtime.enable")
            await page.call("Page.enable")
            await page.call(
                "Emulation.setDeviceMetricsOverride",
                width=1400,
                height=1000,
                deviceScaleFactor=1,
                mobile=False,
            )
            yield page
            nursery.cancel_scope.cancel()
    finally:
        process.terminate()
        try:
            process.wait(timeout=10)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()
        shutil.rmtree(profile, ignore_errors=True)
