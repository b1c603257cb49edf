#!/usr/bin/env python3
"""WHIP and WHEP with aiortc, an independent WebRTC stack, against a real ting.

    tests/interop/.venv/bin/python tests/interop/whip.py [path/to/ting]
        The whole check: ting starts with a token secret; a meeting client (the one of
        meeting.py, written from docs/protocol.md) joins; a WHIP publisher (aiortc) publishes
        a bright picture and the meeting client decodes it; a WHEP viewer (aiortc) decodes
        the active speaker: the meeting client while it talks, the WHIP publisher once it
        talks instead, with no renegotiation, and a screen share while there is one;
        DELETE ends both. Exits 0 when every check
        passed, 1 otherwise; every wait has a deadline.

    whip.py publish ORIGIN ROOM TOKEN [SHADE]
    whip.py watch ORIGIN ROOM TOKEN
        One side alone, for the browser tests: publish until stdin closes, or watch and
        print one JSON line a second ({"frames": n, "brightness": mean of the last frame}).

Tokens are HS256 join tokens signed with the secret ting was started with, as the
organisation's own system would sign them.
"""

import asyncio
import base64
import hashlib
import hmac
import json
import os
import subprocess
import sys
import time
import urllib.error
import urllib.request

from aiortc import RTCConfiguration, RTCPeerConnection, RTCSessionDescription
from aiortc.rtcconfiguration import RTCBundlePolicy

import meeting
from meeting import Camera, Client, Microphone, log

ROOM = "interop-whip"
SECRET = "interop-token-secret-0123456789abcdef"
DEADLINE = 30.0


def b64(data):
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode()


def token(room, name=None, role="participant", secret=SECRET):
    claims = {"room": room, "exp": int(time.time()) + 600, "role": role,
              "jti": b64(os.urandom(9))}
    if name:
        claims["name"] = name
    head = b64(json.dumps({"alg": "HS256", "typ": "JWT"}).encode())
    body = b64(json.dumps(claims).encode())
    sig = hmac.new(secret.encode(), f"{head}.{body}".encode(), hashlib.sha256).digest()
    return f"{head}.{body}.{b64(sig)}"


def http(method, url, token=None, body=None, content_type=None):
    """(status, headers, body) of one request; HTTP errors are answers, not exceptions."""
    req = urllib.request.Request(url, data=body.encode() if body is not None else None,
                                 method=method)
    if token:
        req.add_header("Authorization", f"Bearer {token}")
    if content_type:
        req.add_header("Content-Type", content_type)
    try:
        with urllib.request.urlopen(req, timeout=15) as r:
            return r.status, dict(r.headers), r.read().decode()
    except urllib.error.HTTPError as e:
        return e.code, dict(e.headers), e.read().decode()


class Voice(Microphone):
    """A tone that can be switched to silence: who talks decides the active speaker."""

    def __init__(self, talking):
        super().__init__()
        self.talking = talking

    async def recv(self):
        frame = await super().recv()
        if not self.talking:
            for plane in frame.planes:
                plane.update(bytes(plane.buffer_size))
        return frame


class Whip:
    """A WHIP publisher: one POST, the answer as it comes, DELETE to leave."""

    def __init__(self, origin, room, token, shade, talking):
        self.url = f"{origin}/whip/{room}"
        self.token = token
        self.voice = Voice(talking)
        self.camera = Camera(shade)
        self.pc = None
        self.location = None

    async def start(self):
        self.pc = RTCPeerConnection(RTCConfiguration(bundlePolicy=RTCBundlePolicy.MAX_BUNDLE))
        self.pc.addTransceiver(self.voice, direction="sendonly")
        self.pc.addTransceiver(self.camera, direction="sendonly")
        await self.pc.setLocalDescription(await self.pc.createOffer())
        status, headers, answer = await asyncio.to_thread(
            http, "POST", self.url, self.token, self.pc.localDescription.sdp, "application/sdp")
        if status != 201:
            raise RuntimeError(f"WHIP POST answered {status}: {answer}")
        self.location = headers.get("Location") or headers.get("location")
        await self.pc.setRemoteDescription(RTCSessionDescription(sdp=answer, type="answer"))
        return self.location

    async def stop(self, origin):
        if self.location:
            status, _, body = await asyncio.to_thread(
                http, "DELETE", origin + self.location, self.token)
            if status != 200:
                raise RuntimeError(f"WHIP DELETE answered {status}: {body}")
        if self.pc:
            await self.pc.close()


class Whep:
    """A WHEP viewer: one recvonly audio and video pair; counts frames, measures them."""

    def __init__(self, origin, room, token):
        self.url = f"{origin}/whep/{room}"
        self.token = token
        self.pc = None
        self.location = None
        self.frames = 0
        self.audio_frames = 0
        self.brightness = None
        self.tasks = []

    async def start(self):
        self.pc = RTCPeerConnection(RTCConfiguration(bundlePolicy=RTCBundlePolicy.MAX_BUNDLE))
        self.pc.addTransceiver("audio", direction="recvonly")
        self.pc.addTransceiver("video", direction="recvonly")
        self.pc.on("track", self.on_track)
        await self.pc.setLocalDescription(await self.pc.createOffer())
        status, headers, answer = await asyncio.to_thread(
            http, "POST", self.url, self.token, self.pc.localDescription.sdp, "application/sdp")
        if status != 201:
            raise RuntimeError(f"WHEP POST answered {status}: {answer}")
        self.location = headers.get("Location") or headers.get("location")
        await self.pc.setRemoteDescription(RTCSessionDescription(sdp=answer, type="answer"))

    def state(self):
        return (f"(WHEP: {self.frames} video frames, brightness {self.brightness}, "
                f"{self.audio_frames} audio frames, connection {self.pc.connectionState})")

    def on_track(self, track):
        async def drain():
            while True:
                try:
                    frame = await track.recv()
                except Exception:
                    return
                if track.kind == "video":
                    self.frames += 1
                    self.brightness = float(frame.to_ndarray(format="gray").mean())
                else:
                    self.audio_frames += 1

        self.tasks.append(asyncio.create_task(drain()))

    async def stop(self, origin):
        for t in self.tasks:
            t.cancel()
        if self.location:
            status, _, body = await asyncio.to_thread(
                http, "DELETE", origin + self.location, self.token)
            if status != 200:
                raise RuntimeError(f"WHEP DELETE answered {status}: {body}")
        if self.pc:
            await self.pc.close()


async def until(what, check, deadline=DEADLINE, state=lambda: ""):
    start = time.monotonic()
    while not check():
        if time.monotonic() - start > deadline:
            raise TimeoutError(f"{what}: not within {deadline} s {state()}")
        await asyncio.sleep(0.2)
    log(f"{what} after {time.monotonic() - start:.1f} s")


async def whole(origin):
    ws = origin.replace("http://", "ws://") + "/ws"
    meeting.ROOM = ROOM
    dark = Client("Aiortc meeting client", 40)
    whip = Whip(origin, ROOM, token(ROOM, "Hall camera"), shade=220, talking=False)
    whep = Whep(origin, ROOM, token(ROOM, "Lobby screen"))
    people = {}  # participant id -> name, as the meeting client is told

    def handle(msg, base=dark.handle):
        base(msg)
        if msg["type"] == "participant_joined":
            people[msg["participant"]["id"]] = msg["participant"]
        elif msg["type"] == "participant_left":
            people.pop(msg["participant"], None)
        elif msg["type"] == "active_speaker":
            log(f"{msg}")

    dark.handle = handle
    try:
        await dark.join(ws)
        # The meeting client talks; the publisher is silent.
        await whip.start()
        log(f"WHIP resource {whip.location}")
        await until("the meeting is told of the publisher",
                    lambda: any(p["name"] == "Hall camera" for p in people.values()))
        whip_id = next(i for i, p in people.items() if p["name"] == "Hall camera")
        if not (people[whip_id]["media"]["audio"] and people[whip_id]["media"]["video"]):
            raise AssertionError(f"the publisher shows with its sources off: {people[whip_id]}")

        def decoded(source):
            for mid, s in dark.slots.items():
                if s.get("participant") == whip_id and s.get("source") == source:
                    counts = dark.frames if source == "camera" else dark.audio_frames
                    return counts.get(mid, 0)
            return 0

        await until("the meeting client decodes the WHIP camera", lambda: decoded("camera") >= 10)
        await until("the meeting client hears the WHIP microphone",
                    lambda: decoded("microphone") >= 10)

        await whep.start()
        log(f"WHEP resource {whep.location}")
        if any(p["name"] == "Lobby screen" for p in people.values()):
            raise AssertionError("the WHEP viewer was shown to the meeting")
        await until("the WHEP viewer decodes the speaker (the meeting client, dark)",
                    lambda: whep.frames >= 10 and whep.brightness is not None
                    and whep.brightness < 110, state=whep.state)
        await until("the WHEP viewer hears audio", lambda: whep.audio_frames >= 10,
                    state=whep.state)

        # The speaker changes: the viewer's one video follows, without renegotiation.
        whip.voice.talking = True
        for t in dark.pc.getTransceivers():
            track = t.sender.track
            if isinstance(track, Microphone):
                track.recv = silenced(track.recv)
        before = whep.frames
        await until("the WHEP viewer's video switches to the new speaker (bright)",
                    lambda: whep.frames > before and whep.brightness > 150, state=whep.state)
        if any(p["name"] == "Lobby screen" for p in people.values()):
            raise AssertionError("the WHEP viewer was shown to the meeting")

        # Someone shares a screen: the viewer's one video shows it (mid-grey) while the
        # share lasts, then the speaker again.
        sharer = Client("Aiortc sharer", 40, screen=True)
        try:
            await sharer.join(ws)
            await until("the WHEP viewer's video shows the screen share",
                        lambda: whep.brightness is not None and 100 < whep.brightness < 160,
                        state=whep.state)
        finally:
            await sharer.send({"type": "leave"})
            await sharer.close()
        await until("the WHEP viewer's video shows the speaker again after the share",
                    lambda: whep.brightness > 180, state=whep.state)

        await whep.stop(origin)
        whep.location = None
        await whip.stop(origin)
        whip.location = None
        await until("the meeting is told the publisher left", lambda: whip_id not in people)
    finally:
        await whep.stop(origin)
        await whip.stop(origin)
        await dark.close()


def silenced(recv):
    async def quiet():
        frame = await recv()
        for plane in frame.planes:
            plane.update(bytes(plane.buffer_size))
        return frame

    return quiet


async def one_side(mode, origin, room, tok, shade):
    if mode == "publish":
        side = Whip(origin, room, tok, shade=shade, talking=True)
        print(json.dumps({"location": await side.start()}), flush=True)
    else:
        side = Whep(origin, room, tok)
        await side.start()
        print(json.dumps({"location": side.location}), flush=True)
    loop = asyncio.get_running_loop()
    stdin_closed = loop.run_in_executor(None, sys.stdin.read)
    try:
        while not stdin_closed.done():
            if mode == "watch":
                print(json.dumps({"frames": side.frames, "brightness": side.brightness,
                                  "audio_frames": side.audio_frames}), flush=True)
            await asyncio.wait([stdin_closed], timeout=1.0)
    finally:
        await side.stop(origin)


def main():
    if len(sys.argv) >= 5 and sys.argv[1] in ("publish", "watch"):
        shade = int(sys.argv[5]) if len(sys.argv) > 5 else 220
        asyncio.run(one_side(sys.argv[1], sys.argv[2], sys.argv[3], sys.argv[4], shade))
        return 0
    binary = os.path.abspath(sys.argv[1]) if len(sys.argv) > 1 else os.path.join(meeting.ROOT, "target/debug/ting")
    log_path = os.path.join(meeting.ROOT, "target", "interop-whip-ting.log")
    os.makedirs(os.path.dirname(log_path), exist_ok=True)
    proc, origin = meeting.start_ting(binary, log_path, ROOM, ["--tokens-secret", SECRET])
    log(f"ting at {origin} (log {log_path})")
    try:
        asyncio.run(asyncio.wait_for(whole(origin), 4 * DEADLINE))
    except Exception as e:
        print(f"\nFAIL: {type(e).__name__}: {e}", flush=True)
        with open(log_path) as f:
            tail = f.read().splitlines()[-20:]
        print("last lines of the server log:\n" + "\n".join(tail))
        return 1
    finally:
        proc.terminate()
        try:
            proc.wait(10)
        except subprocess.TimeoutExpired:
            proc.kill()
    print("\nPASS", flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
