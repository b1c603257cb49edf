// One ting meeting session: the signalling WebSocket and the RTCPeerConnection.
//
// This module knows the protocol (docs/protocol.md) and WebRTC, nothing about the page.
// The UI (app.js) reads the state below and listens for `change`, `error` and `ended`.
//
// The shape of the media connection is fixed when joining and never renegotiated: one offer
// holds three publish m-lines (microphone, camera, screen; sendonly) and a set of receive
// slots (recvonly) sized by the server's limits. The server tells us in `slots` messages
// whose track each receive slot carries now; a slot's track object never changes, only what
// flows in it. Which cameras those are follows the `layout` we report (what the page shows);
// which of our own camera's simulcast layers we send follows the server's `send_layers`.

export const PROTOCOL_VERSION = 1;

/** What a room name may be (docs/protocol.md, `join`). */
export const ROOM_NAME = /^[A-Za-z0-9_-]{1,64}$/;

/** Camera capture settings, for the pre-join preview and for turning the camera back on.
 *  720p so that all three simulcast layers exist: browsers drop the layers a smaller
 *  capture cannot fill. */
export const CAMERA_CONSTRAINTS = {
  width: { ideal: 1280 },
  height: { ideal: 720 },
  frameRate: { ideal: 30 },
};

/**
 * The camera's simulcast layers, lowest first as the server expects (docs/protocol.md,
 * Simulcast): the server forwards to each viewer the smallest layer its tile needs and its
 * connection carries, so nobody decodes 720p for a thumbnail.
 */
export const CAMERA_LAYERS = [
  { rid: 'q', scaleResolutionDownBy: 4, maxBitrate: 150_000 },
  { rid: 'h', scaleResolutionDownBy: 2, maxBitrate: 500_000 },
  { rid: 'f', scaleResolutionDownBy: 1, maxBitrate: 1_500_000 },
];

/** Remembered speakers, most recent first; enough for any thumbnail strip. */
const RECENT_SPEAKERS = 64;

/** At most one `layout` per this many milliseconds (the last change always goes out):
 *  a busy meeting reshuffles a speaker strip several times a second, and the server needs
 *  to hear about it a few times a second at most (docs/protocol.md, `layout`). */
const LAYOUT_MIN_INTERVAL_MS = 250;

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
 * - `change`: anything shown may have changed (participants, slots, speaking, the active
 *   speaker, local media, connection state); `detail.what` says what and `detail.ids`, when
 *   present, whom it concerns, so that a page of 250 people updates only what changed.
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
    /** The latest `slots` message: mid -> {participant, source, paused}. */
    this.slots = new Map();
    /** Who is speaking now (participant ids, possibly our own). */
    this.speaking = new Set();
    /** The server's active speaker (possibly us), null before anyone spoke. */
    this.activeSpeaker = null;
    /** Who spoke, most recent first (possibly us). */
    this.recentSpeakers = [];
    /** What our own sources should send, from `send_layers`: per source, one flag per
     *  layer (lowest first), or null while the server has not said. Kept while a source is
     *  off and applied again when it comes back. */
    this.sendLayers = { camera: null, screen: null };
    /** What the senders were last set to, per source (for the debug handle). */
    this.layersApplied = { camera: null, screen: null };
    /** The last `layout` sent, and how many were sent. */
    this.layout = null;
    this.layoutsSent = 0;
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
    this._answered = false;
    this._wantedLayout = null;
    this._layoutText = null;
    this._layoutSentAt = -Infinity;
    this._layoutTimer = null;
    this._layerJobs = { camera: null, screen: null };
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
    return this._slotIndex.get(`${source} ${participant}`) ?? null;
  }

  /** Whether the server holds back the slot carrying `source` of `participant` for lack
   *  of bandwidth (`paused` in `slots`). */
  isPaused(participant, source) {
    const r = this.receiverFor(participant, source);
    return Boolean(r && this.slots.get(r.mid)?.paused);
  }

  /** A lookup from (source, participant) to receiver, rebuilt per `slots` message: tiles
   *  ask for their slot on every render, and a room of 250 has 29 slots to search. */
  get _slotIndex() {
    if (this._slotIndexFor !== this.slots) {
      const index = new Map();
      for (const [mid, s] of this.slots) {
        const r = this.receivers.get(mid);
        if (r) index.set(`${s.source} ${s.participant}`, r);
      }
      this._slotIndexCache = index;
      this._slotIndexFor = this.slots;
    }
    return this._slotIndexCache;
  }

  /**
   * Tells the server what the page shows (docs/protocol.md, `layout`): `{view, page, tiles}`
   * with tiles most important first. Sends only what differs from the last one sent, so the
   * page may call this on every render; before the answer is in, keeps it for then.
   */
  setLayout(layout) {
    const max = this.limits?.video_slots ?? layout.tiles.length;
    this._wantedLayout = { view: layout.view, page: layout.page, tiles: layout.tiles.slice(0, max) };
    this._flushLayout();
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
      this._answered = true;
      this._flushLayout();
      // A `send_layers` that came before the answer was applied could not be set yet.
      this._applySendLayers('camera');
      this._applySendLayers('screen');
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
    // The server may have paused layers while the camera was off; send only what it wants.
    this._applySendLayers('camera');
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
    this._applySendLayers('screen');
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

  _flushLayout() {
    const layout = this._wantedLayout;
    if (!this._answered || !layout || this._closed) return;
    const text = JSON.stringify({ type: 'layout', ...layout });
    if (text === this._layoutText) return;
    const wait = this._layoutSentAt + LAYOUT_MIN_INTERVAL_MS - performance.now();
    if (wait > 0) {
      // Sent one just now: send the latest wish when the interval is over.
      this._layoutTimer ??= setTimeout(() => {
        this._layoutTimer = null;
        this._flushLayout();
      }, wait);
      return;
    }
    if (this._ws?.readyState !== WebSocket.OPEN) return;
    this._ws.send(text);
    this._layoutText = text;
    this._layoutSentAt = performance.now();
    this.layout = layout;
    this.layoutsSent++;
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
        this._changed('participants', [p.id]);
        break;
      }
      case 'participant_updated': {
        const p = this.participants.get(msg.participant);
        if (p) {
          p.media = { ...msg.media };
          this._changed('participants', [p.id]);
        }
        break;
      }
      case 'participant_left': {
        const id = msg.participant;
        this.participants.delete(id);
        this.speaking.delete(id);
        const i = this.recentSpeakers.indexOf(id);
        if (i >= 0) this.recentSpeakers.splice(i, 1);
        this._changed('participants', [id]);
        break;
      }
      case 'slots':
        this.slots = new Map(msg.slots.map((s) => [
          s.mid,
          { participant: s.participant, source: s.source, paused: s.paused === true },
        ]));
        this._changed('slots');
        break;
      case 'speaking': {
        const now = new Set(msg.participants);
        const changed = [];
        for (const id of now) {
          if (!this.speaking.has(id)) {
            changed.push(id);
            this._spoke(id);
          }
        }
        for (const id of this.speaking) if (!now.has(id)) changed.push(id);
        this.speaking = now;
        if (changed.length) this._changed('speaking', changed);
        break;
      }
      case 'active_speaker': {
        const before = this.activeSpeaker;
        this.activeSpeaker = msg.participant ?? null;
        if (this.activeSpeaker) this._spoke(this.activeSpeaker);
        this._changed('active_speaker', [before, this.activeSpeaker].filter(Boolean));
        break;
      }
      case 'send_layers':
        if ((msg.source === 'camera' || msg.source === 'screen') && Array.isArray(msg.active)) {
          this.sendLayers[msg.source] = msg.active.map((a) => a !== false);
          this._applySendLayers(msg.source);
        }
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

  /** Moves `id` to the front of the recent speakers. */
  _spoke(id) {
    const list = this.recentSpeakers;
    if (list[0] === id) return;
    const i = list.indexOf(id);
    if (i >= 0) list.splice(i, 1);
    list.unshift(id);
    if (list.length > RECENT_SPEAKERS) list.length = RECENT_SPEAKERS;
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
    // Simulcast layers are fixed here too: `sendEncodings` is only accepted now, and the
    // camera keeps them across replaceTrack.
    const publish = (track, kind, layers) => {
      const t = pc.addTransceiver(track ?? kind, {
        direction: 'sendonly',
        streams: track ? [stream] : [],
        ...(layers ? { sendEncodings: layers.map((l) => ({ ...l })) } : {}),
      });
      preferServerCodecs(t, kind);
      return t;
    };
    const mic = publish(this.micTrack, 'audio');
    const camera = publish(this.cameraTrack, 'video', CAMERA_LAYERS);
    // A screen is one layer: text must stay sharp, and few people share at once.
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

  /**
   * Makes the sender of `source` send the layers `send_layers` asked for. Calls are
   * serialized per sender (setParameters fails if another is in flight) and the latest
   * wish wins: a message arriving meanwhile is applied right after. While the source is off
   * there is nothing to set; the wish is kept and applied when its track comes back.
   */
  _applySendLayers(source) {
    const running = this._layerJobs[source];
    if (running) {
      running.again = true;
      return;
    }
    const job = { again: true };
    this._layerJobs[source] = job;
    (async () => {
      try {
        while (job.again && !this._closed) {
          job.again = false;
          await this._setLayersActive(source);
        }
      } finally {
        this._layerJobs[source] = null;
      }
    })();
  }

  async _setLayersActive(source) {
    const sender = this._senders[source];
    const want = this.sendLayers[source];
    if (!sender?.track || !want || !this._answered) return;
    const params = sender.getParameters();
    const encodings = params.encodings ?? [];
    let changed = false;
    encodings.forEach((e, i) => {
      // A layer the server does not mention (it saw fewer) keeps sending.
      const on = i < want.length ? want[i] : true;
      if (e.active !== on) {
        e.active = on;
        changed = true;
      }
    });
    if (changed) {
      try {
        await sender.setParameters(params);
      } catch {
        // The browser refused (e.g. the connection closed meanwhile). Sending more layers
        // than anyone watches costs bandwidth, nothing else; the next message retries.
        return;
      }
    }
    this.layersApplied[source] = encodings.map((e) => e.active !== false);
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
    clearTimeout(this._layoutTimer);
    this._layoutTimer = null;
    if (this._ws) {
      // Closing our side is also how the server learns we left if `leave` was not sent.
      this._ws.close();
    }
    this.pc?.close();
    for (const t of [this.micTrack, this.cameraTrack, this.screenTrack]) t?.stop();
    if (emit) this._emit('ended', { reason });
  }

  // ---- events -------------------------------------------------------------------------

  _changed(what, ids = null) {
    this._emit('change', { what, ids });
  }

  _emit(type, detail) {
    this.dispatchEvent(new CustomEvent(type, { detail }));
  }
}
