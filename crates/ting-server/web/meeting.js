// One ting meeting session: the signalling WebSocket and the RTCPeerConnection.
//
// This module knows the protocol (docs/protocol.md) and WebRTC, nothing about the page.
// The UI (app.js) reads the state below and listens for `change`, `error` and `ended`.
//
// The shape of the media connection is fixed when joining and never renegotiated: one offer
// holds three publish m-lines (microphone, camera, screen; sendonly) and a set of receive
// slots (recvonly) sized by the server's limits. The server tells us in `slots` messages
// whose track each receive slot carries now; a slot's track object never changes, only what
// flows in it.

export const PROTOCOL_VERSION = 1;

/** What a room name may be (docs/protocol.md, `join`). */
export const ROOM_NAME = /^[A-Za-z0-9_-]{1,64}$/;

/** Camera capture settings, for the pre-join preview and for turning the camera back on. */
export const CAMERA_CONSTRAINTS = {
  width: { ideal: 640 },
  height: { ideal: 480 },
  frameRate: { ideal: 30 },
};

/** How long to wait for the server's `welcome` and `answer`. The server gives its media
 *  worker 10 s to answer an offer, so wait a little longer than that. */
const REPLY_TIMEOUT_MS = 15000;

/**
 * Offers only the codecs the server negotiates (docs/protocol.md: Opus and VP8, with RTX
 * for repair). Left alone, Chromium lists about 20 video codecs on every video m-line, which
 * makes an offer with the default slots about 66 KB instead of about 20 KB. Browsers without
 * `setCodecPreferences` send their full list; the server accepts that too.
 */
function preferServerCodecs(transceiver, kind) {
  if (typeof transceiver.setCodecPreferences !== 'function') return;
  const caps = globalThis.RTCRtpReceiver?.getCapabilities?.(kind);
  if (!caps) return;
  const wanted = kind === 'audio' ? ['audio/opus'] : ['video/vp8', 'video/rtx'];
  const codecs = caps.codecs.filter((c) => wanted.includes(c.mimeType.toLowerCase()));
  if (!codecs.some((c) => c.mimeType.toLowerCase() !== 'video/rtx')) return;
  try {
    transceiver.setCodecPreferences(codecs);
  } catch {
    // Some browser refused this list: keep its own, which the server also understands.
  }
}

/** An error the server reported, or one of ours phrased the same way. */
export class MeetingError extends Error {
  constructor(code, message, fatal = false) {
    super(message);
    this.name = 'MeetingError';
    this.code = code;
    this.fatal = fatal;
  }
}

/**
 * A participant's session in one room.
 *
 * Events (all `CustomEvent`):
 * - `change`: anything shown may have changed (participants, slots, speaking, local media,
 *   connection state); `detail.what` says what, as a hint.
 * - `error`: `detail` is a MeetingError the user should see; the session goes on unless an
 *   `ended` follows.
 * - `ended`: the session is over; `detail.reason` is `left` or a MeetingError.
 */
export class Meeting extends EventTarget {
  /**
   * @param {object} opts
   * @param {string} opts.room the room name
   * @param {string} opts.name the display name
   * @param {MediaStream} [opts.stream] microphone and/or camera to publish; the meeting takes
   *   ownership of its tracks and stops them when it ends.
   */
  constructor({ room, name, stream }) {
    super();
    this.room = room;
    this.name = name;
    /** Our participant id, known after `welcome`. */
    this.participantId = null;
    /** Everyone else, in the order they joined: id -> {id, name, media}. */
    this.participants = new Map();
    /** Receive slots: mid -> {mid, kind: 'audio'|'video'|'screen', track, stream}. */
    this.receivers = new Map();
    /** The latest `slots` message: mid -> {participant, source}. */
    this.slots = new Map();
    /** Who is speaking now (participant ids, possibly our own). */
    this.speaking = new Set();
    this.limits = null;
    /** `connecting`, `connected` (media flows), `closed`. */
    this.state = 'connecting';
    /** The RTCPeerConnection, once built. */
    this.pc = null;

    this.micTrack = stream?.getAudioTracks()[0] ?? null;
    this.cameraTrack = stream?.getVideoTracks()[0] ?? null;
    this.screenTrack = null;
    /** The microphone is "on" unless muted; a muted track sends silence. */
    this.micEnabled = this.micTrack ? this.micTrack.enabled : false;

    this._ws = null;
    this._senders = { microphone: null, camera: null, screen: null };
    this._waiting = null;
    this._pingTimer = null;
    this._closed = false;
  }

  /** What we send in `media` messages: which of our sources are switched on. */
  get media() {
    return {
      audio: Boolean(this.micTrack && this.micEnabled),
      video: Boolean(this.cameraTrack),
      screen: Boolean(this.screenTrack),
    };
  }

  /** A stream of just our camera, for our own tile; null while the camera is off. */
  get cameraStream() {
    if (!this.cameraTrack) return null;
    if (this._cameraStream?.getVideoTracks()[0] !== this.cameraTrack) {
      this._cameraStream = new MediaStream([this.cameraTrack]);
    }
    return this._cameraStream;
  }

  get screenStream() {
    if (!this.screenTrack) return null;
    if (this._screenStream?.getVideoTracks()[0] !== this.screenTrack) {
      this._screenStream = new MediaStream([this.screenTrack]);
    }
    return this._screenStream;
  }

  /** The receive slot carrying `source` of `participant` now, or null. */
  receiverFor(participant, source) {
    for (const [mid, s] of this.slots) {
      if (s.participant === participant && s.source === source) {
        return this.receivers.get(mid) ?? null;
      }
    }
    return null;
  }

  /**
   * Joins the room and sets up media. Resolves once the server's answer is applied (media
   * then connects on its own); rejects with a MeetingError if the server refuses.
   */
  async join() {
    try {
      await this._open();
      const welcome = await this._request(
        { type: 'join', protocol: PROTOCOL_VERSION, room: this.room, name: this.name },
        'welcome',
      );
      this._welcome(welcome);
      const offer = await this._buildOffer();
      // Say what we publish before media connects, so others see the right state at once.
      this.sendMedia();
      const answer = await this._request(offer, 'answer');
      await this.pc.setRemoteDescription({ type: 'answer', sdp: answer.sdp });
    } catch (e) {
      const err = e instanceof MeetingError ? e : new MeetingError('client', String(e.message ?? e), true);
      // The caller learns of this failure from the rejection; no `ended` event as well.
      this._close(err, false);
      throw err;
    }
  }

  /** Leaves the room: tells the server, then closes everything. */
  leave() {
    this._send({ type: 'leave' });
    this._close('left');
  }

  /** Mutes or unmutes the microphone. A muted track stays on the sender and sends silence,
   *  so unmuting is instant. */
  setMicEnabled(on) {
    if (!this.micTrack) return;
    this.micEnabled = on;
    this.micTrack.enabled = on;
    this.sendMedia();
    this._changed('local');
  }

  /** Turns the camera off (releasing the device, so its light goes off) or on again. */
  async setCameraEnabled(on) {
    const sender = this._senders.camera;
    if (on === Boolean(this.cameraTrack)) return;
    if (!on) {
      const track = this.cameraTrack;
      this.cameraTrack = null;
      this.sendMedia();
      this._changed('local');
      await sender?.replaceTrack(null);
      track.stop();
      return;
    }
    const stream = await navigator.mediaDevices.getUserMedia({ video: CAMERA_CONSTRAINTS });
    const track = stream.getVideoTracks()[0];
    if (this._closed) {
      track.stop();
      return;
    }
    await sender?.replaceTrack(track);
    this.cameraTrack = track;
    this.sendMedia();
    this._changed('local');
  }

  /** Starts sharing the screen. Call from a click handler: browsers ask for a user gesture. */
  async startScreenShare() {
    if (this.screenTrack) return;
    const stream = await navigator.mediaDevices.getDisplayMedia({ video: true, audio: false });
    const track = stream.getVideoTracks()[0];
    if (this._closed) {
      track.stop();
      return;
    }
    // Text on a screen must stay sharp; let the encoder drop frames rather than resolution.
    if ('contentHint' in track) track.contentHint = 'detail';
    // The browser's own "Stop sharing" ends the track without going through our button.
    track.addEventListener('ended', () => {
      if (this.screenTrack === track) this.stopScreenShare();
    });
    await this._senders.screen?.replaceTrack(track);
    this.screenTrack = track;
    this.sendMedia();
    this._changed('local');
  }

  async stopScreenShare() {
    const track = this.screenTrack;
    if (!track) return;
    this.screenTrack = null;
    this.sendMedia();
    this._changed('local');
    await this._senders.screen?.replaceTrack(null).catch(() => {});
    track.stop();
  }

  /** Tells the server (and so everyone) which of our sources are on. */
  sendMedia() {
    if (this.participantId) this._send({ type: 'media', ...this.media });
  }

  // ---- signalling ---------------------------------------------------------------------

  _open() {
    const scheme = location.protocol === 'https:' ? 'wss:' : 'ws:';
    const ws = new WebSocket(`${scheme}//${location.host}/ws`);
    this._ws = ws;
    ws.addEventListener('message', (e) => this._onMessage(e.data));
    ws.addEventListener('close', (e) => this._onSocketClosed(e));
    return new Promise((resolve, reject) => {
      ws.addEventListener('open', () => resolve(), { once: true });
      ws.addEventListener('error', () => reject(
        new MeetingError('connection', 'Cannot reach the server. Check your connection and try again.', true),
      ), { once: true });
    });
  }

  _send(msg) {
    if (this._ws?.readyState === WebSocket.OPEN) this._ws.send(JSON.stringify(msg));
  }

  /** Sends `msg` and waits for a reply of type `replyType`. An `error` from the server in
   *  the meantime is the answer to this request and rejects it. */
  _request(msg, replyType) {
    return new Promise((resolve, reject) => {
      const timer = setTimeout(() => {
        this._waiting = null;
        reject(new MeetingError('timeout', `The server did not answer (${replyType}) in time.`, true));
      }, REPLY_TIMEOUT_MS);
      this._waiting = {
        type: replyType,
        resolve: (m) => { clearTimeout(timer); resolve(m); },
        reject: (e) => { clearTimeout(timer); reject(e); },
      };
      this._send(msg);
    });
  }

  _onMessage(data) {
    let msg;
    try {
      msg = JSON.parse(data);
    } catch {
      return; // not ours to fix; the server only sends JSON
    }
    const waiting = this._waiting;
    if (waiting && (msg.type === waiting.type || msg.type === 'error')) {
      this._waiting = null;
      if (msg.type === 'error') {
        waiting.reject(new MeetingError(msg.code, msg.message, true));
      } else {
        waiting.resolve(msg);
      }
      return;
    }
    switch (msg.type) {
      case 'participant_joined': {
        const p = msg.participant;
        this.participants.set(p.id, { id: p.id, name: p.name, media: { ...p.media } });
        this._changed('participants');
        break;
      }
      case 'participant_updated': {
        const p = this.participants.get(msg.participant);
        if (p) {
          p.media = { ...msg.media };
          this._changed('participants');
        }
        break;
      }
      case 'participant_left':
        this.participants.delete(msg.participant);
        this.speaking.delete(msg.participant);
        this._changed('participants');
        break;
      case 'slots':
        this.slots = new Map(msg.slots.map((s) => [s.mid, { participant: s.participant, source: s.source }]));
        this._changed('slots');
        break;
      case 'speaking':
        this.speaking = new Set(msg.participants);
        this._changed('speaking');
        break;
      case 'pong':
        break;
      case 'error': {
        const err = new MeetingError(msg.code, msg.message, Boolean(msg.fatal));
        if (err.fatal) {
          this._close(err);
        } else {
          this._emit('error', err);
        }
        break;
      }
      default:
        break; // later revisions may add messages; ignore what we do not know
    }
  }

  _onSocketClosed() {
    if (this._closed) return;
    const err = new MeetingError('connection', 'The connection to the server was lost.', true);
    if (this._waiting) {
      const w = this._waiting;
      this._waiting = null;
      w.reject(err);
      return; // join() closes with this error
    }
    this._close(err);
  }

  _welcome(w) {
    this.participantId = w.participant;
    this.limits = w.limits;
    for (const p of w.participants) {
      this.participants.set(p.id, { id: p.id, name: p.name, media: { ...p.media } });
    }
    // The server removes us after `participant_timeout_secs` of silence.
    const every = Math.max(1000, Number(w.limits.ping_interval_ms) || 5000);
    this._pingTimer = setInterval(() => this._send({ type: 'ping' }), every);
    this._changed('participants');
  }

  // ---- media --------------------------------------------------------------------------

  /** Builds the PeerConnection with its publish m-lines and receive slots, and returns the
   *  `offer` message. */
  async _buildOffer() {
    // No ICE servers: the server is ICE-lite and names its one reachable address in its
    // answer. One bundled transport for all m-lines.
    const pc = new RTCPeerConnection({ bundlePolicy: 'max-bundle' });
    this.pc = pc;
    pc.addEventListener('connectionstatechange', () => this._onConnectionState());

    const stream = new MediaStream([this.micTrack, this.cameraTrack].filter(Boolean));
    // Publish m-lines exist even without a track (no microphone, camera off, not sharing
    // yet), so that turning a source on later is a replaceTrack, never a renegotiation.
    const publish = (track, kind) => {
      const t = pc.addTransceiver(track ?? kind, {
        direction: 'sendonly',
        streams: track ? [stream] : [],
      });
      preferServerCodecs(t, kind);
      return t;
    };
    const mic = publish(this.micTrack, 'audio');
    const camera = publish(this.cameraTrack, 'video');
    const screen = publish(null, 'video');
    this._senders = { microphone: mic.sender, camera: camera.sender, screen: screen.sender };

    const slots = [];
    const addSlots = (count, trackKind, kind) => {
      for (let i = 0; i < count; i++) {
        const t = pc.addTransceiver(trackKind, { direction: 'recvonly' });
        preferServerCodecs(t, trackKind);
        slots.push({ transceiver: t, kind });
      }
    };
    addSlots(this.limits.audio_slots, 'audio', 'audio');
    addSlots(this.limits.video_slots, 'video', 'video');
    addSlots(this.limits.screen_slots, 'video', 'screen');

    await pc.setLocalDescription(await pc.createOffer());
    // Mids are assigned by setLocalDescription; only now can we name them.
    for (const { transceiver, kind } of slots) {
      const track = transceiver.receiver.track;
      this.receivers.set(transceiver.mid, {
        mid: transceiver.mid,
        kind,
        track,
        stream: new MediaStream([track]),
      });
    }
    const mids = (kind) => slots.filter((s) => s.kind === kind).map((s) => s.transceiver.mid);
    this._changed('receivers');
    return {
      type: 'offer',
      sdp: pc.localDescription.sdp,
      publish: { microphone: mic.mid, camera: camera.mid, screen: screen.mid },
      receive: { audio: mids('audio'), video: mids('video'), screen: mids('screen') },
    };
  }

  _onConnectionState() {
    const s = this.pc?.connectionState;
    if (s === 'connected') {
      this.state = 'connected';
      this._changed('state');
    } else if (s === 'failed') {
      // The server notices too and removes us; say it plainly rather than wait for that.
      this._close(new MeetingError('media_failed', 'The media connection failed. Join again to retry.', true));
    } else if (s === 'disconnected') {
      // Often recovers by itself (a brief network hiccup); show it, do not give up yet.
      this.state = 'connecting';
      this._changed('state');
    }
  }

  // ---- ending -------------------------------------------------------------------------

  _close(reason, emit = true) {
    if (this._closed) return;
    this._closed = true;
    this.state = 'closed';
    clearInterval(this._pingTimer);
    this._pingTimer = null;
    if (this._ws) {
      // Closing our side is also how the server learns we left if `leave` was not sent.
      this._ws.close();
    }
    this.pc?.close();
    for (const t of [this.micTrack, this.cameraTrack, this.screenTrack]) t?.stop();
    if (emit) this._emit('ended', { reason });
  }

  // ---- events -------------------------------------------------------------------------

  _changed(what) {
    this._emit('change', { what });
  }

  _emit(type, detail) {
    this.dispatchEvent(new CustomEvent(type, { detail }));
  }
}
