#!/usr/bin/python3
"""A WHIP publisher and a WHEP viewer on GStreamer's webrtcbin (Debian's GStreamer and
libnice), a third WebRTC stack besides Chromium and aiortc.

    /usr/bin/python3 tests/interop/webrtcbin.py publish ORIGIN ROOM TOKEN
        Publishes a white test picture (VP8) and a tone (Opus) to ORIGIN/whip/ROOM, prints
        {"location": ...} once the answer is applied, and {"state": ...} as ICE and the
        connection change; ends its session (DELETE) when stdin closes.

    /usr/bin/python3 tests/interop/webrtcbin.py watch ORIGIN ROOM TOKEN
        Watches ORIGIN/whep/ROOM with one recvonly audio and video pair and prints one JSON
        line a second: {"frames": video frames decoded, "audio_buffers": audio decoded}.

It offers as webrtcbin does by itself (bundle-policy max-bundle, the candidates it gathers,
no trickle: it waits for gathering to complete, as a WHIP client without trickle does) and
applies ting's answer as it comes. Every wait has a deadline; exits 1 on any failure.
"""

import json
import os
import sys
import threading
import urllib.error
import urllib.request

import gi

gi.require_version("Gst", "1.0")
gi.require_version("GstWebRTC", "1.0")
gi.require_version("GstSdp", "1.0")
from gi.repository import GLib, Gst, GstSdp, GstWebRTC  # noqa: E402

GATHER_TIMEOUT_S = 15
ANSWER_TIMEOUT_S = 15

PUBLISH = (
    "webrtcbin name=w bundle-policy=max-bundle "
    "videotestsrc is-live=true pattern=white ! video/x-raw,width=320,height=240,framerate=15/1 "
    "! videoconvert ! vp8enc deadline=1 keyframe-max-dist=30 ! rtpvp8pay picture-id-mode=15-bit "
    "! application/x-rtp,media=video,encoding-name=VP8,payload=96,clock-rate=90000 ! w. "
    "audiotestsrc is-live=true wave=sine volume=0.3 ! audioconvert ! audioresample ! opusenc "
    "! rtpopuspay ! application/x-rtp,media=audio,encoding-name=OPUS,payload=111,"
    "clock-rate=48000,encoding-params=(string)2 ! w."
)


_say_lock = threading.Lock()


def say(**kv):
    """One JSON object a line. GStreamer's threads and GLib's main loop both report, and
    print() writes a line's text and its newline separately: two reports at once could
    share a line, which the reader cannot parse."""
    with _say_lock:
        sys.stdout.write(json.dumps(kv) + "\n")
        sys.stdout.flush()


def http(method, url, token, body=None, content_type=None):
    req = urllib.request.Request(url, data=body.encode() if body is not None else None,
                                 method=method)
    req.add_header("Authorization", f"Bearer {token}")
    if content_type:
        req.add_header("Content-Type", content_type)
    try:
        with urllib.request.urlopen(req, timeout=ANSWER_TIMEOUT_S) as r:
            return r.status, dict(r.headers), r.read().decode()
    except urllib.error.HTTPError as e:
        return e.code, dict(e.headers), e.read().decode()


class Session:
    def __init__(self, mode, origin, room, token):
        self.mode = mode
        self.origin = origin
        self.url = f"{origin}/{'whip' if mode == 'publish' else 'whep'}/{room}"
        self.token = token
        self.location = None
        self.loop = GLib.MainLoop()
        self.failed = None
        self.frames = 0
        self.audio_buffers = 0
        self.offered = False
        if mode == "publish":
            self.pipe = Gst.parse_launch(PUBLISH)
            self.w = self.pipe.get_by_name("w")
        else:
            self.pipe = Gst.Pipeline.new("whep")
            self.w = Gst.ElementFactory.make("webrtcbin", "w")
            self.w.set_property("bundle-policy", "max-bundle")
            self.pipe.add(self.w)
            recv = GstWebRTC.WebRTCRTPTransceiverDirection.RECVONLY
            for caps in (
                "application/x-rtp,media=audio,encoding-name=OPUS,payload=111,clock-rate=48000,"
                "encoding-params=(string)2",
                "application/x-rtp,media=video,encoding-name=VP8,payload=96,clock-rate=90000",
            ):
                self.w.emit("add-transceiver", recv, Gst.Caps.from_string(caps))
            self.w.connect("pad-added", self.on_pad)
        self.w.connect("on-negotiation-needed", self.on_negotiation_needed)
        self.w.connect("notify::ice-gathering-state", self.on_gathering)
        self.w.connect("notify::ice-connection-state", self.on_state)
        self.w.connect("notify::connection-state", self.on_state)
        bus = self.pipe.get_bus()
        bus.add_signal_watch()
        bus.connect("message::error", self.on_error)

    def fail(self, why):
        if self.failed is None:
            self.failed = why
            say(error=why)
        self.loop.quit()

    def on_error(self, _bus, msg):
        err, debug = msg.parse_error()
        self.fail(f"GStreamer: {err.message} ({debug})")

    def on_state(self, *_):
        say(state={
            "ice": self.w.get_property("ice-connection-state").value_nick,
            "connection": self.w.get_property("connection-state").value_nick,
        })

    def on_negotiation_needed(self, _w):
        if self.offered:
            return
        self.offered = True
        if self.mode == "publish":
            send = GstWebRTC.WebRTCRTPTransceiverDirection.SENDONLY
            i = 0
            while True:
                t = self.w.emit("get-transceiver", i)
                if t is None:
                    break
                t.set_property("direction", send)
                i += 1
        promise = Gst.Promise.new_with_change_func(self.on_offer, None)
        self.w.emit("create-offer", None, promise)

    def on_offer(self, promise, _data):
        reply = promise.get_reply()
        offer = reply.get_value("offer") if reply else None
        if offer is None:
            GLib.idle_add(self.fail, "webrtcbin made no offer")
            return
        self.w.emit("set-local-description", offer, Gst.Promise.new())

    def on_gathering(self, *_):
        state = self.w.get_property("ice-gathering-state")
        if state == GstWebRTC.WebRTCICEGatheringState.COMPLETE and self.location is None:
            sdp = self.w.get_property("local-description").sdp.as_text()
            threading.Thread(target=self.post, args=(sdp,), daemon=True).start()

    def post(self, sdp):
        if os.environ.get("WEBRTCBIN_SHOW_SDP"):
            print(sdp, file=sys.stderr)
        status, headers, body = http("POST", self.url, self.token, sdp, "application/sdp")
        if os.environ.get("WEBRTCBIN_SHOW_SDP"):
            print(body, file=sys.stderr)
        if status != 201:
            GLib.idle_add(self.fail, f"POST answered {status}: {body}")
            return
        GLib.idle_add(self.apply_answer, headers.get("Location") or headers.get("location"), body)

    def apply_answer(self, location, answer):
        self.location = location
        ok, msg = GstSdp.SDPMessage.new_from_text(answer)
        if ok != GstSdp.SDPResult.OK:
            self.fail("ting's answer is not SDP GStreamer reads")
            return False
        desc = GstWebRTC.WebRTCSessionDescription.new(GstWebRTC.WebRTCSDPType.ANSWER, msg)
        self.w.emit("set-remote-description", desc, Gst.Promise.new())
        say(location=location)
        return False

    def on_pad(self, _w, pad):
        if pad.direction != Gst.PadDirection.SRC:
            return
        decode = Gst.ElementFactory.make("decodebin")
        decode.connect("pad-added", self.on_decoded)
        self.pipe.add(decode)
        decode.sync_state_with_parent()
        pad.link(decode.get_static_pad("sink"))

    def on_decoded(self, _decode, pad):
        kind = pad.get_current_caps().to_string()
        sink = Gst.ElementFactory.make("fakesink")
        sink.set_property("signal-handoffs", True)
        sink.set_property("sync", False)
        if kind.startswith("video"):
            sink.connect("handoff", lambda *_: self.count("frames"))
        else:
            sink.connect("handoff", lambda *_: self.count("audio_buffers"))
        self.pipe.add(sink)
        sink.sync_state_with_parent()
        pad.link(sink.get_static_pad("sink"))

    def count(self, what):
        setattr(self, what, getattr(self, what) + 1)

    def report(self):
        if self.mode == "watch" and self.location:
            say(frames=self.frames, audio_buffers=self.audio_buffers)
        return True

    def run(self):
        self.pipe.set_state(Gst.State.PLAYING)
        GLib.timeout_add_seconds(GATHER_TIMEOUT_S + ANSWER_TIMEOUT_S, self.check_started)
        GLib.timeout_add_seconds(1, self.report)
        threading.Thread(target=self.wait_stdin, daemon=True).start()
        self.loop.run()
        if self.location:
            status, _, body = http("DELETE", self.origin + self.location, self.token)
            if status != 200:
                self.failed = self.failed or f"DELETE answered {status}: {body}"
        self.pipe.set_state(Gst.State.NULL)
        return 0 if self.failed is None else 1

    def check_started(self):
        if self.location is None:
            self.fail("no answer applied in time (ICE gathering or the POST hung)")
        return False

    def wait_stdin(self):
        sys.stdin.read()
        GLib.idle_add(self.loop.quit)


def main():
    if len(sys.argv) != 5 or sys.argv[1] not in ("publish", "watch"):
        print(__doc__, file=sys.stderr)
        return 2
    Gst.init(None)
    return Session(*sys.argv[1:5]).run()


if __name__ == "__main__":
    sys.exit(main())
