"""`smithers web`: a real headless Chromium (Debian's package; `make test` installs it) opens the
page that textual-serve serves, the page's terminal connects, and the runs list of the real app
arrives in it, with the run made before. Chromium is driven over its DevTools protocol; a script
added to the page records what the page's terminal receives over its websocket, and the test waits
on a promise that resolves when the run's id has arrived. No name resolution leaves the machine
(--host-resolver-rules)."""
from __future__ import annotations

import asyncio
import base64
import itertools
import json
import re
import shutil
import signal
import socket
import subprocess
from pathlib import Path
from typing import Any

import aiohttp

from tests.support import Smithers, clean_env

HOOK = """
(() => {
  let text = "";
  const waiters = [];
  const decoder = new TextDecoder();
  const feed = (chunk) => { text += chunk; for (const w of waiters.splice(0)) w(); };
  const Native = window.WebSocket;
  function Recording(...args) {
    const ws = new Native(...args);
    ws.addEventListener("message", async (ev) => {
      const d = ev.data;
      if (typeof d === "string") feed(d);
      else if (d instanceof ArrayBuffer) feed(decoder.decode(d, {stream: true}));
      else if (d instanceof Blob) feed(decoder.decode(await d.arrayBuffer(), {stream: true}));
    });
    return ws;
  }
  Recording.prototype = Native.prototype;
  Object.assign(Recording, {CONNECTING: 0, OPEN: 1, CLOSING: 2, CLOSED: 3});
  window.WebSocket = Recording;
  window.__terminalShows = (needles) => new Promise((resolve) => {
    const check = () => needles.every((n) => text.includes(n)) ? resolve(text.length) : waiters.push(check);
    check();
  });
})();
"""


def chromium() -> str:
    found = shutil.which("chromium") or shutil.which("chromium-browser")
    assert found, "Chromium is missing: `make test` installs it (scripts/system-deps.sh: Debian's chromium package)"
    return found


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


async def listening(port: int, proc: subprocess.Popen) -> None:
    """Wait until the server accepts connections (each refused attempt is answered at once)."""
    for _ in range(600):
        assert proc.poll() is None, f"smithers web exited: {proc.communicate()}"
        try:
            _, writer = await asyncio.open_connection("127.0.0.1", port)
            writer.close()
            return
        except OSError:
            await asyncio.sleep(0.05)
    raise AssertionError("smithers web never listened")


class DevTools:
    def __init__(self, ws: aiohttp.ClientWebSocketResponse) -> None:
        self.ws, self.ids = ws, itertools.count(1)

    async def call(self, method: str, **params: Any) -> dict[str, Any]:
        msg_id = next(self.ids)
        await self.ws.send_json({"id": msg_id, "method": method, "params": params})
        async for msg in self.ws:
            data = json.loads(msg.data)
            if data.get("id") == msg_id:
                assert "error" not in data, data
                return data["result"]
        raise AssertionError(f"DevTools closed during {method}")


async def test_the_app_opens_in_a_browser_and_shows_the_runs(tmp_path: Path):
    project = tmp_path / "project"
    project.mkdir()
    cli = Smithers(project, project / ".smithers" / "smithers.db")
    done = cli("run", "hello", "--input", '{"times": 1}', "--json")
    assert done.returncode == 0, done.stderr
    run_id = json.loads(done.stdout)["run_id"]

    port = free_port()
    web = cli.spawn("web", "--port", str(port), env=clean_env(), stdout=subprocess.DEVNULL)
    browser = None
    try:
        await listening(port, web)
        browser = subprocess.Popen(
            [chromium(), "--headless", "--no-sandbox", "--disable-gpu", "--remote-debugging-port=0",
             f"--user-data-dir={tmp_path / 'chromium'}", "--window-size=1400,900", "--no-first-run",
             "--host-resolver-rules=MAP * ~NOTFOUND, EXCLUDE 127.0.0.1", "--disable-background-networking",
             "--disable-component-update", "--disable-sync", "--disable-default-apps", "--disable-extensions",
             "about:blank"], stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
        devtools_port = None
        for line in browser.stderr:  # Chromium says where its DevTools listen once they do
            m = re.search(r"DevTools listening on ws://127\.0\.0\.1:(\d+)/", line)
            if m:
                devtools_port = int(m.group(1))
                break
        assert devtools_port, "Chromium did not start its DevTools"
        async with aiohttp.ClientSession() as http:
            async with http.get(f"http://127.0.0.1:{devtools_port}/json/list") as r:
                page = next(t for t in await r.json() if t["type"] == "page")
            async with http.ws_connect(page["webSocketDebuggerUrl"], max_msg_size=0) as ws:
                dt = DevTools(ws)
                await dt.call("Page.enable")
                await dt.call("Page.addScriptToEvaluateOnNewDocument", source=HOOK)
                nav = await dt.call("Page.navigate", url=f"http://127.0.0.1:{port}/")
                assert "errorText" not in nav, nav
                shown = await asyncio.wait_for(dt.call(
                    "Runtime.evaluate", expression=f"window.__terminalShows({json.dumps([run_id, 'hello'])})",
                    awaitPromise=True, returnByValue=True), 120)
                assert shown["result"]["value"] > 0
                shot = await dt.call("Page.captureScreenshot", format="png")
                (tmp_path / "web.png").write_bytes(base64.b64decode(shot["data"]))
                await ws.send_json({"id": 0, "method": "Browser.close", "params": {}})
    finally:
        if browser is not None:
            try:
                browser.wait(timeout=30)
            except subprocess.TimeoutExpired:
                browser.kill()
                browser.wait()
        web.send_signal(signal.SIGINT)
        try:
            web.wait(timeout=30)
        except subprocess.TimeoutExpired:
            web.kill()
            web.wait()
