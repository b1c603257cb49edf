#!/usr/bin/env python3
"""Two clients on aiortc, an independent WebRTC stack, meet through a real ting.

The client below is written from docs/protocol.md alone: join, one offer with the
publish m-lines and receive slots named, the answer applied as it comes (aiortc's own ICE
handling: no candidates added by hand), `media` and `layout` after. Each client sends a
synthetic camera and microphone, A shares a screen through its screen m-line too, and the
test passes when each decodes video frames and audio of the other through its receive
slots, and B decodes A's screen through its screen slot.

    tests/interop/.venv/bin/python tests/interop/meeting.py [path/to/ting]

    meeting.py join ORIGIN ROOM NAME
        One client alone, for the browser tests: joins ROOM at ORIGIN (http://host:port),
        publishes camera, microphone and screen, and prints one JSON line a second
        ({"id": its participant id, "decoded": {participant: {source: frames}}}) until
        its stdin closes.

The ting binary defaults to target/debug/ting. Exits 0 when every check passed, 1
otherwise; every wait has a deadline. scripts/test.sh makes the virtual environment
(tests/interop/requirements.txt) when it is missing.
"""

import asyncio
import fractions
import json
import os
import re
import subprocess
import sys
import time

import numpy
import websockets
from aiortc import (
    AudioStreamTrack,
    RTCConfiguration,
    RTCPeerConnection,
    RTCSessionDescription,
    VideoStreamTrack,
)
from aiortc.rtcconfiguration import RTCBundlePolicy
from av import AudioFrame, VideoFrame

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
ROOM = "interop-aiortc"
# How long the whole meeting may take to get media flowing both ways.
MEDIA_DEADLINE = 30.0


def log(msg):
    print(f"[{time.monotonic() - STARTED:6.1f}s] {msg}", flush=True)


STARTED = time.monotonic()


class Camera(VideoStreamTrack):
    """A moving test picture: 320x240, 15 frames a second."""

    def __init__(self, shade):
        super().__init__()
        self.shade = shade
        self.n = 0

    async def recv(self):
        pts, time_base = await self.next_timestamp()
        self.n += 1
        img = numpy.full((240, 320, 3), self.shade, dtype=numpy.uint8)
        img[:, (self.n * 4) % 320, :] = 255
        frame = VideoFrame.from_ndarray(img, format="bgr24")
        frame.pts, frame.time_base = pts, time_base
        return frame


class Microphone(AudioStreamTrack):
    """A 440 Hz tone, 20 ms frames at 48 kHz."""

    def __init__(self):
        super().__init__()
        self.t = 0

    async def recv(self):
        samples = 960
        if getattr(self, "_start", None) is None:
            self._start = time.time()
        wait = self._start + self.t / 48000 - time.time()
        if wait > 0:
            await asyncio.sleep(wait)
        x = numpy.arange(self.t, self.t + samples) / 48000
        pcm = (numpy.sin(2 * numpy.pi * 440 * x) * 8000).astype(numpy.int16)
        frame = AudioFrame.from_ndarray(pcm.reshape(1, -1), format="s16", layout="mono")
        frame.sample_rate = 48000
        frame.pts = self.t
        frame.time_base = fractions.Fraction(1, 48000)
        self.t += samples
        return frame


class Client:
    """One participant, as docs/protocol.md describes a client."""

    def __init__(self, label, shade, screen=False):
        self.label = label
        self.shade = shade
        self.share_screen = screen
        self.ws = None
        self.pc = None
        self.welcome = None
        self.slots = {}  # mid -> {"participant", "source", "paused"}
        self.receivers = {}  # mid -> kind ("audio" | "video" | "screen")
        self.frames = {}  # mid -> video frames decoded
        self.audio_frames = {}  # mid -> audio frames decoded
        self.tasks = []

    async def send(self, msg):
        await self.ws.send(json.dumps(msg))

    async def reply(self, types, timeout=15.0):
        """The next message of one of `types`, handling the others meanwhile."""
        deadline = time.monotonic() + timeout
        while True:
            left = deadline - time.monotonic()
            if left <= 0:
                raise TimeoutError(f"{self.label}: no {types} within {timeout} s")
            msg = json.loads(await asyncio.wait_for(self.ws.recv(), left))
            if msg["type"] == "error":
                raise RuntimeError(f"{self.label}: server error {msg}")
            self.handle(msg)
            if msg["type"] in types:
                return msg

    def handle(self, msg):
        if msg["type"] == "slots":
            self.slots = {s["mid"]: s for s in msg["slots"]}

    async def listen(self):
        try:
            async for text in self.ws:
                self.handle(json.loads(text))
        except websockets.ConnectionClosed:
            pass

    async def join(self, url):
        self.ws = await websockets.connect(url, max_size=1 << 20)
        await self.send({"type": "join", "protocol": 1, "room": ROOM, "name": self.label})
        self.welcome = await self.reply(["welcome"])
        limits = self.welcome["limits"]
        log(f"{self.label} joined as {self.welcome['participant']}; limits {limits}")

        # The bundle policy the document prescribes: one transport for every m-line.
        self.pc = RTCPeerConnection(RTCConfiguration(bundlePolicy=RTCBundlePolicy.MAX_BUNDLE))
        self.pc.on("track", self.on_track)
        mic = self.pc.addTransceiver(Microphone(), direction="sendonly")
        cam = self.pc.addTransceiver(Camera(self.shade), direction="sendonly")
        screen = None
        if self.share_screen:
            # A mid-grey screen: tests tell it from the cameras by its brightness.
            screen = self.pc.addTransceiver(Camera(128), direction="sendonly")
        slots = []
        for kind, n in (
            ("audio", limits["audio_slots"]),
            ("video", min(limits["video_slots"], 4)),
            ("screen", min(limits["screen_slots"], 1)),
        ):
            for _ in range(n):
                t = self.pc.addTransceiver("audio" if kind == "audio" else "video", direction="recvonly")
                slots.append((t, kind))
        await self.pc.setLocalDescription(await self.pc.createOffer())
        for t, kind in slots:
            self.receivers[t.mid] = kind
        offer = {
            "type": "offer",
            "sdp": self.pc.localDescription.sdp,
            "publish": {"microphone": mic.mid, "camera": cam.mid,
                        **({"screen": screen.mid} if screen else {})},
            "receive": {
                "audio": [t.mid for t, k in slots if k == "audio"],
                "camera": [t.mid for t, k in slots if k == "video"],
                "screen": [t.mid for t, k in slots if k == "screen"],
            },
        }
        await self.send(offer)
        answer = await self.reply(["answer"])
        # As it comes: no candidates added by hand, no end-of-candidates signalled by us.
        await self.pc.setRemoteDescription(RTCSessionDescription(sdp=answer["sdp"], type="answer"))
        await self.send({"type": "media", "audio": True, "video": True,
                         "screen": self.share_screen})
        self.tasks.append(asyncio.create_task(self.listen()))
        self.tasks.append(asyncio.create_task(self.ping()))

    async def ping(self):
        every = self.welcome["limits"].get("ping_interval_ms", 5000) / 1000
        while True:
            await asyncio.sleep(every)
            await self.send({"type": "ping"})

    def on_track(self, track):
        mid = next((t.mid for t in self.pc.getTransceivers() if t.receiver.track is track), None)
        counts = self.frames if track.kind == "video" else self.audio_frames

        async def drain():
            counts[mid] = 0
            while True:
                try:
                    await track.recv()
                except Exception:
                    return
                counts[mid] += 1

        self.tasks.append(asyncio.create_task(drain()))

    def decoded_from(self, other, source):
        """Frames decoded on the slot that carries `source` of `other` now."""
        return self.decoded_from_id(other.welcome["participant"], source)

    def decoded_from_id(self, participant, source):
        for mid, s in self.slots.items():
            if s.get("participant") == participant and s.get("source") == source:
                counts = self.frames if source != "microphone" else self.audio_frames
                return counts.get(mid, 0)
        return 0

    async def close(self):
        for t in self.tasks:
            t.cancel()
        if self.pc:
            await self.pc.close()
        if self.ws:
            await self.ws.close()


async def meet(url):
    a, b = Client("Aiortc A", 40, screen=True), Client("Aiortc B", 200)
    try:
        await a.join(url)
        await b.join(url)
        start = time.monotonic()
        while True:
            states = (a.pc.connectionState, b.pc.connectionState)
            seen = {
                "A sees B": a.decoded_from(b, "camera"),
                "B sees A": b.decoded_from(a, "camera"),
                "A hears B": a.decoded_from(b, "microphone"),
                "B hears A": b.decoded_from(a, "microphone"),
                "B sees A's screen": b.decoded_from(a, "screen"),
            }
            if all(n >= 10 for n in seen.values()):
                log(f"media both ways after {time.monotonic() - start:.1f} s: {seen} (connections {states})")
                return
            if time.monotonic() - start > MEDIA_DEADLINE:
                raise TimeoutError(f"no media both ways within {MEDIA_DEADLINE} s: {seen}, "
                                   f"connections {states}, slots A {a.slots} B {b.slots}")
            await asyncio.sleep(0.25)
    finally:
        await a.close()
        await b.close()


def start_ting(binary, log_path, room, extra=()):
    """Starts ting on loopback ports the system picks; returns it and its http:// origin."""
    proc = subprocess.Popen(
        [binary, "--http-listen", "127.0.0.1:0", "--media-port", "0", "--room", room, *extra],
        cwd=ROOT, stdout=subprocess.PIPE, stderr=open(log_path, "w"), text=True,
    )
    deadline = time.monotonic() + 20
    while time.monotonic() < deadline:
        line = proc.stdout.readline()
        if not line:
            break
        m = re.search(r"Meeting link: (http://[^\s]+)", line)
        if m:
            return proc, re.match(r"http://[^/]+", m.group(1)).group(0)
    proc.kill()
    raise RuntimeError(f"ting printed no meeting link within 20 s; log: {log_path}")


async def join_alone(origin, room, name):
    """The `join` mode: one client in `room` on `origin`, printing what it decodes each second until stdin closes."""
    global ROOM
    ROOM = room
    client = Client(name, 40, screen=True)
    await client.join(origin.replace("http://", "ws://").replace("https://", "wss://") + "/ws")
    stdin_closed = asyncio.get_running_loop().run_in_executor(None, sys.stdin.read)
    try:
        while not stdin_closed.done():
            decoded = {}
            for s in client.slots.values():
                who = s.get("participant")
                if who:
                    decoded.setdefault(who, {})[s["source"]] = client.decoded_from_id(who, s["source"])
            print(json.dumps({"id": client.welcome["participant"], "decoded": decoded}), flush=True)
            await asyncio.wait([stdin_closed], timeout=1.0)
    finally:
        await client.send({"type": "leave"})
        await client.close()


def main():
    if len(sys.argv) == 5 and sys.argv[1] == "join":
        asyncio.run(join_alone(sys.argv[2], sys.argv[3], sys.argv[4]))
        return 0
    binary = sys.argv[1] if len(sys.argv) > 1 else os.path.join(ROOT, "target/debug/ting")
    log_path = os.path.join(ROOT, "target", "interop-aiortc-ting.log")
    os.makedirs(os.path.dirname(log_path), exist_ok=True)
    proc, origin = start_ting(binary, log_path, ROOM)
    url = origin.replace("http://", "ws://") + "/ws"
    log(f"ting at {url} (log {log_path})")
    try:
        asyncio.run(asyncio.wait_for(meet(url), MEDIA_DEADLINE + 60))
    except Exception as e:
        print(f"\nFAIL: {e}", flush=True)
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
