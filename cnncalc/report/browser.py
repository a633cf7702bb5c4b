"""Headless Chromium for checking reports: a minimal DevTools-protocol client over
``--remote-debugging-pipe`` (no extra package, no network port).

The browser reads commands on its file descriptor 3 and writes replies and events on 4, each
one JSON message ended by a NUL byte. Used by the browser tests and the screenshot script.
"""
from __future__ import annotations

import base64
import json
import os
import select
import shutil
import subprocess
import tempfile
import time
from pathlib import Path

__all__ = ["find_chromium", "Browser", "BrowserError", "CHROMIUM_FLAGS"]

#: Flags for a quiet, offline, root-safe headless run.
CHROMIUM_FLAGS = ("--headless", "--no-sandbox", "--disable-gpu", "--disable-quic",
                  "--no-first-run", "--disable-background-networking",
                  "--disable-component-update", "--disable-sync", "--hide-scrollbars",
                  "--mute-audio")


class BrowserError(RuntimeError):
    pass


def find_chromium() -> str | None:
    """Path of a Chromium binary (``CNNCALC_CHROMIUM``, then ``chromium`` and friends on PATH)."""
    env = os.environ.get("CNNCALC_CHROMIUM")
    if env:
        return env if shutil.which(env) or os.path.isfile(env) else None
    for name in ("chromium", "chromium-browser", "google-chrome", "chrome"):
        found = shutil.which(name)
        if found:
            return found
    return None


class Browser:
    """One headless browser with one page. ``with Browser() as b: b.open(path); b.eval(js)``.

    ``errors`` collects console errors, uncaught exceptions and failed loads of the page;
    ``requests`` every URL the page asked for (a report must ask for nothing but itself).
    """

    def __init__(self, binary: str | None = None, timeout: float = 30.0):
        self.binary = binary or find_chromium()
        if not self.binary:
            raise BrowserError("no Chromium found (install Debian's chromium package)")
        self.timeout = timeout
        self.errors: list[str] = []
        self.requests: list[str] = []
        self._id = 0
        self._buf = b""
        self._events: list[dict] = []

    # -- process and pipe ----------------------------------------------------------------------
    def __enter__(self):
        self._profile = tempfile.mkdtemp(prefix="cnncalc-chromium-")
        to_chrome_r, self._to_chrome = os.pipe()
        self._from_chrome, from_chrome_w = os.pipe()
        # bash puts the pipe ends on fds 3 and 4, where Chromium expects them
        cmd = ["bash", "-c", f'exec "$@" 3<&{to_chrome_r} 4>&{from_chrome_w}', "chromium",
               self.binary, *CHROMIUM_FLAGS, f"--user-data-dir={self._profile}",
               "--remote-debugging-pipe", "about:blank"]
        self._proc = subprocess.Popen(cmd, pass_fds=(to_chrome_r, from_chrome_w),
                                      stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL,
                                      stderr=subprocess.DEVNULL)
        os.close(to_chrome_r)
        os.close(from_chrome_w)
        try:
            target = self._send("Target.createTarget", {"url": "about:blank"})["targetId"]
            self._session = self._send("Target.attachToTarget",
                                       {"targetId": target, "flatten": True})["sessionId"]
            for domain in ("Page", "Runtime", "Log", "Network"):
                self.call(f"{domain}.enable")
        except BaseException:
            self.__exit__(None, None, None)
            raise
        return self

    def __exit__(self, *exc):
        try:
            if self._proc.poll() is None:
                self._write({"id": self._next(), "method": "Browser.close"})
                self._proc.wait(timeout=10)
        except (OSError, subprocess.TimeoutExpired):
            self._proc.kill()
            self._proc.wait()
        for fd in (self._to_chrome, self._from_chrome):
            try:
                os.close(fd)
            except OSError:
                pass
        shutil.rmtree(self._profile, ignore_errors=True)

    def _next(self) -> int:
        self._id += 1
        return self._id

    def _write(self, msg: dict) -> None:
        os.write(self._to_chrome, json.dumps(msg).encode() + b"\0")

    def _read(self, deadline: float) -> dict:
        while b"\0" not in self._buf:
            left = deadline - time.monotonic()
            if left <= 0:
                raise BrowserError("Chromium did not answer in time")
            ready, _, _ = select.select([self._from_chrome], [], [], left)
            if ready:
                chunk = os.read(self._from_chrome, 1 << 20)
                if not chunk:
                    raise BrowserError("Chromium closed the pipe")
                self._buf += chunk
        raw, self._buf = self._buf.split(b"\0", 1)
        return json.loads(raw)

    def _send(self, method: str, params: dict | None = None, session: str | None = None) -> dict:
        mid = self._next()
        msg = {"id": mid, "method": method, "params": params or {}}
        if session:
            msg["sessionId"] = session
        self._write(msg)
        deadline = time.monotonic() + self.timeout
        while True:
            reply = self._read(deadline)
            if reply.get("id") == mid:
                if "error" in reply:
                    raise BrowserError(f"{method}: {reply['error'].get('message')}")
                return reply.get("result", {})
            self._event(reply)

    def _event(self, ev: dict) -> None:
        method, p = ev.get("method"), ev.get("params", {})
        if method == "Runtime.exceptionThrown":
            d = p.get("exceptionDetails", {})
            what = d.get("exception", {}).get("description") or d.get("text")
            self.errors.append(f"exception: {what}")
        elif method == "Runtime.consoleAPICalled" and p.get("type") in ("error", "assert"):
            self.errors.append("console: " + " ".join(str(a.get("value", a.get("description")))
                                                      for a in p.get("args", [])))
        elif method == "Log.entryAdded" and p.get("entry", {}).get("level") == "error":
            self.errors.append(f"log: {p['entry'].get('text')}")
        elif method == "Network.requestWillBeSent":
            self.requests.append(p.get("request", {}).get("url", ""))
        if method:
            self._events.append(ev)

    # -- page ------------------------------------------------------------------------------------
    def call(self, method: str, params: dict | None = None) -> dict:
        return self._send(method, params, self._session)

    def open(self, path, width: int = 1280, height: int = 900, dark: bool = False) -> None:
        """Load a local file at a window size and colour scheme; wait for its load event."""
        self.call("Emulation.setDeviceMetricsOverride",
                  {"width": width, "height": height, "deviceScaleFactor": 1, "mobile": False})
        self.call("Emulation.setEmulatedMedia", {"features": [
            {"name": "prefers-color-scheme", "value": "dark" if dark else "light"}]})
        self._events.clear()
        self.call("Page.navigate", {"url": Path(path).resolve().as_uri()})
        deadline = time.monotonic() + self.timeout
        while not any(e.get("method") == "Page.loadEventFired" for e in self._events):
            self._event(self._read(deadline))

    def eval(self, expression: str):
        """Value of a JavaScript expression in the page (JSON-able results only)."""
        res = self.call("Runtime.evaluate", {"expression": expression, "returnByValue": True,
                                             "awaitPromise": True})
        if "exceptionDetails" in res:
            raise BrowserError(f"{expression}: {res['exceptionDetails'].get('text')}")
        return res.get("result", {}).get("value")

    def screenshot(self, out, full_page: bool = False) -> Path:
        """A PNG of the viewport (or of the whole page)."""
        params: dict = {"format": "png"}
        if full_page:
            w, h = self.eval("[document.documentElement.scrollWidth,"
                             "document.documentElement.scrollHeight]")
            params.update(captureBeyondViewport=True,
                          clip={"x": 0, "y": 0, "width": w, "height": h, "scale": 1})
        data = self.call("Page.captureScreenshot", params)["data"]
        out = Path(out)
        out.write_bytes(base64.b64decode(data))
        return out

    def click(self, selector: str) -> None:
        """A real mouse click (press and release) at the centre of the first match."""
        box = self.eval(f"(function(){{var e=document.querySelector({json.dumps(selector)});"
                        "if(!e){return null;}e.scrollIntoView({block:'center'});"
                        "var r=e.getBoundingClientRect();"
                        "return [r.left+r.width/2,r.top+r.height/2];})()")
        if box is None:
            raise BrowserError(f"nothing matches {selector!r}")
        for kind in ("mousePressed", "mouseReleased"):
            self.call("Input.dispatchMouseEvent", {"type": kind, "x": box[0], "y": box[1],
                                                   "button": "left", "clickCount": 1})

    def pixel_stats(self, png: bytes) -> dict:
        """How much a PNG shows, measured by the browser's own decoder: its size, the number
        of distinct colours (up to 4096) and the share of pixels unlike the top-left one."""
        url = "data:image/png;base64," + base64.b64encode(png).decode()
        return self.eval(
            "new Promise(function(ok){var im=new Image();im.onload=function(){"
            "var c=document.createElement('canvas');c.width=im.width;c.height=im.height;"
            "var g=c.getContext('2d');g.drawImage(im,0,0);"
            "var d=g.getImageData(0,0,im.width,im.height).data,seen={},n=0,other=0;"
            "for(var i=0;i<d.length;i+=4){var k=d[i]+','+d[i+1]+','+d[i+2];"
            "if(n<4096&&!(k in seen)){seen[k]=1;n++;}"
            "if(d[i]!==d[0]||d[i+1]!==d[1]||d[i+2]!==d[2]){other++;}}"
            "ok({width:im.width,height:im.height,colors:n,other:other/(d.length/4)});};"
            f"im.src={json.dumps(url)};}})")
