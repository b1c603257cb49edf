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
//
// Around the media sits the meeting's control plane: admission (a join token from the link,
// a passcode, the lobby), roles and what they permit, moderation, raised hands and chat. The
// server decides all of it; this module keeps the latest word of the server and sends the
// person's requests, and only enforces locally what concerns our own media (a moderator's
// mute, a role that may not publish).
//
// A participant outlives its WebSocket. The `welcome` holds a `resume` token, kept for this
// tab in sessionStorage; when the socket drops without our `leave` (the network changed, the
// page reloaded), a new socket sends `resume` instead of `join` and gets a fresh `welcome`
// for the same participant, while the others keep its tile (marked reconnecting). The media
// connection goes on if it still works; if it failed, or the page was reloaded, a new offer
// of the same shape replaces it. A media connection that fails while the socket is fine goes
// the same way: we drop the socket ourselves and resume, which lets us offer again.
//
// A meeting link with a key (`#key=…`) makes the meeting end-to-end encrypted (docs/e2ee.md):
// an E2eeSession (e2ee.js) announces this page's public key in `join`, hands our media keys to
// the others through `e2ee_keys` and takes theirs from `e2ee_key`; a worker (e2ee-worker.js)
// encrypts every frame we send and decrypts every frame we receive, through a transform on
// each sender and each receive slot. Chat is encrypted too. The key itself never leaves the
// page.

import { E2eeSession } from '/e2ee.js';

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

/** Roles, lowest rank first (docs/protocol.md, Roles). A moderator acts only on people of
 *  a strictly lower rank. */
export const ROLES = ['guest', 'participant', 'moderator', 'host'];

/** A role's rank: higher outranks lower. A role this page does not know counts as
 *  `participant`, which is what the server assumes when it names none. */
export function rank(role) {
  const i = ROLES.indexOf(role);
  return i < 0 ? 1 : i;
}

/** Join refusals and endings that asking again does not change: the session is over. */
export const FINAL_ERRORS = new Set(['removed', 'denied', 'meeting_ended']);

/** Waits before each attempt to resume, in milliseconds; the last one repeats until the
 *  window closes. The first is short: most drops are a socket closed on purpose (ours, a
 *  proxy's) and the server lets us back at once. */
const RESUME_BACKOFF_MS = [250, 500, 1000, 2000];

/** Answers to an attempt to resume that another attempt may change. `resume_pending`: the
 *  server has not yet noticed that the old socket closed. `resume_failed` (the participant
 *  is gone) is final. `already_connected` answers a new offer while the server still takes
 *  the old media connection for working. */
const RESUME_RETRY = new Set([
  'resume_pending', 'connection', 'timeout', 'rate_limited', 'unavailable', 'internal', 'already_connected',
]);

/** How long one attempt may take to open its socket, and then to get its `welcome`. */
const RESUME_OPEN_MS = 4000;
const RESUME_REPLY_MS = 5000;

/** The server removes a silent participant after `participant_timeout` (by default four
 *  ping intervals); we stop trying a little before that, as our last ping was up to one
 *  interval before the drop. */
const PINGS_PER_TIMEOUT = 4;
const RESUME_MARGIN_MS = 2000;
/** The window when the server does not say its ping interval (18 s, as with its defaults). */
const DEFAULT_RESUME_WINDOW_MS = 18000;

/** What a session may do when the server does not say (servers from before roles). */
const OPEN_PERMISSIONS = Object.freeze({
  publish_audio: true,
  publish_video: true,
  publish_screen: true,
  chat: true,
  admit: false,
  moderate: false,
  unmute: true,
});

/** Join refusals answered by asking the person for the room's passcode. */
const PASSCODE_ERRORS = new Set(['passcode_required', 'wrong_passcode']);

/** Errors that answer a control request (chat, moderation), never a join or an offer: they
 *  must not be taken for the reply to a join or an offer that happens to be pending. */
const CONTROL_ERRORS = new Set(['forbidden', 'unknown_participant', 'chat_too_long']);

/** The permission that covers each of our sources. */
const SOURCE_PERMISSION = { microphone: 'publish_audio', camera: 'publish_video', screen: 'publish_screen' };

/** Chat messages kept; older ones are dropped (the server keeps none). */
export const CHAT_KEEP = 500;

/** Remembered speakers, most recent first; enough for any thumbnail strip. */
const RECENT_SPEAKERS = 64;

/** At most one `layout` per this many milliseconds (the last change always goes out):
 *  a busy meeting reshuffles a speaker strip several times a second, and the server needs
 *  to hear about it a few times a second at most (docs/protocol.md, `layout`). */
const LAYOUT_MIN_INTERVAL_MS = 250;

/** How often to ping while waiting in the lobby when `waiting` does not say
 *  (`ping_interval_ms`): a silent waiter is timed out like a silent participant. */
const LOBBY_PING_MS = 5000;

/** A media connection that worked and lost its path (the browser says `disconnected` or
 *  `failed`, or a steady flow stopped dead) restarts ICE after this long, and again every
 *  ICE_RESTART_RETRY_MS until media flows: the network changed or came back, and a restart
 *  finds the new path without a new connection (same participant, same tiles for the
 *  others). */
const ICE_RESTART_AFTER_MS = 250;
const ICE_RESTART_RETRY_MS = 4000;
/** How long an ICE restart waits for its answer. The server answers at once: no answer
 *  means the socket is dead too (an address change leaves it silent rather than closed),
 *  so it is dropped and resumed on a new one, and ICE is restarted from there. */
const ICE_RESTART_REPLY_MS = 1500;
/** How often the page looks at what arrives on the media connection's path; how long a
 *  flow of at least RECEIVE_STEADY_BPS bytes a second may stop dead before the path counts
 *  as gone (the browser itself takes about 6 s to say `disconnected`). A publisher always
 *  has such a flow: the server's feedback on its media. */
const RECEIVE_CHECK_MS = 500;
const RECEIVE_STALL_MS = 1500;
const RECEIVE_STEADY_BPS = 1000;
/** A media connection not back this long after it was lost is replaced by a new one
 *  (through a resume), as if the page had reloaded. */
const DISCONNECTED_GIVE_UP_MS = 30000;

/** How long to wait for the server's `welcome` and `answer`. The server gives its media
 *  worker 10 s to answer an offer, so wait a little longer than that. */
const REPLY_TIMEOUT_MS = 15000;

/** Keys we hand out at most at once and per second: below what the server takes (1000 at
 *  once, then 500 a second; docs/protocol.md), so that a re-key in a meeting of 250 right
 *  after a join never meets `rate_limited`. More wait their turn. */
const KEYS_BURST = 900;
const KEYS_PER_SECOND = 450;

/** How long the encryption worker may take to start. */
const E2EE_WORKER_START_MS = 10000;
/** A source whose frames have failed to decrypt for this long, with none decrypting, is
 *  shown as "Can't decrypt" (shorter failures happen while a key is on its way). */
const DECRYPT_FAILING_MS = 1000;

/**
 * How this browser lets a worker transform encoded frames: `script` (RTCRtpScriptTransform),
 * `streams` (createEncodedStreams, which needs `encodedInsertableStreams` on the
 * PeerConnection), or null when it cannot, and so cannot join an encrypted meeting.
 */
export function frameTransformMode() {
  if (typeof globalThis.RTCRtpScriptTransform === 'function') return 'script';
  if (typeof globalThis.RTCRtpSender?.prototype?.createEncodedStreams === 'function') return 'streams';
  return null;
}

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

/** A participant as this module keeps it, from the server's ParticipantInfo. */
function person(p) {
  return {
    id: p.id,
    name: String(p.name ?? ''),
    media: { ...p.media },
    role: p.role ?? 'participant',
    reconnecting: p.reconnecting === true,
    connection: connectionState(p.connection, p.reconnecting === true),
    /** Their E2EE announcement, or null if they do not encrypt. */
    e2ee: typeof p.e2ee === 'string' && p.e2ee ? p.e2ee : null,
  };
}

/** What someone's tile says of their connection: `connected`, `poor` (their network
 *  struggles) or `reconnecting`. */
function connectionState(state, reconnecting = false) {
  if (state === 'poor' || state === 'reconnecting' || state === 'connected') return state;
  return reconnecting ? 'reconnecting' : 'connected';
}

/** How long after a drop the server still keeps us: its participant timeout when it says
 *  it, otherwise going by its ping interval. */
function resumeWindowMs(limits) {
  const timeout = Number(limits?.participant_timeout_ms);
  if (timeout) return Math.max(1000, timeout - RESUME_MARGIN_MS);
  const ping = Number(limits?.ping_interval_ms);
  if (!ping) return DEFAULT_RESUME_WINDOW_MS;
  return Math.max(ping, ping * PINGS_PER_TIMEOUT - RESUME_MARGIN_MS);
}

const sleep = (ms) => new Promise((r) => setTimeout(r, ms));

// ---- the resume token, kept for this tab ----------------------------------------------
//
// sessionStorage, not localStorage: the token makes whoever holds it this participant, so it
// stays with the tab (a reload keeps it, another tab or window does not see it), and it goes
// as soon as the session ends. It is never shown or logged.

function resumeKey(room) {
  return `ting.resume.${room}`;
}

/**
 * What this tab kept of its session in `room`, if it may still be resumed: `{token,
 * deadline, audio, video}`, `deadline` on the `performance.now()` clock, `audio` and
 * `video` whether the microphone and camera were on. Null if there is none or its window
 * has passed (then it is forgotten).
 */
export function storedSession(room) {
  let saved = null;
  try {
    saved = JSON.parse(sessionStorage.getItem(resumeKey(room)) ?? 'null');
  } catch {
    saved = null;
  }
  if (!saved || typeof saved.token !== 'string' || !saved.token) return null;
  const left = Number(saved.seen) + Number(saved.window) - Date.now();
  if (!(left > 0)) {
    forgetSession(room);
    return null;
  }
  return {
    token: saved.token,
    deadline: performance.now() + left,
    audio: saved.audio !== false,
    video: saved.video !== false,
  };
}

/** Forgets this tab's session in `room`: it ended, and a reload must not resume it. */
export function forgetSession(room) {
  try {
    sessionStorage.removeItem(resumeKey(room));
  } catch {
    // Storage off: there was nothing to forget.
  }
}

function storeSession(room, record) {
  try {
    sessionStorage.setItem(resumeKey(room), JSON.stringify(record));
  } catch {
    // Storage off (some private windows): a drop can still be resumed, a reload cannot.
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
 * - `moderated`: a moderator turned one of our sources off (`detail.source`, `detail.by`);
 *   it is off here too already.
 * - `role`: our own role changed (`detail.before`, `detail.role`).
 *
 * `change` names for the control plane: `waiting` (we are in the lobby), `welcome`
 * (admitted or resumed: everything may have changed), `permissions`, `roles` (others'
 * roles, `ids`), `room` (locked, lobby, passcode), `lobby` (who waits), `hands` (`ids`:
 * whose place in the queue changed), `chat` (new messages in `chat`), `connection` (ours
 * dropped or came back: `connection`), `reconnecting` (`ids`: whose connection dropped or
 * came back).
 */
export class Meeting extends EventTarget {
  /**
   * @param {object} opts
   * @param {string} opts.room the room name
   * @param {string} opts.name the display name
   * @param {MediaStream} [opts.stream] microphone and/or camera to publish; the meeting takes
   *   ownership of its tracks and stops them when it ends.
   * @param {string} [opts.token] the join token from the meeting link
   * @param {string} [opts.passcode] the room's passcode, if already known
   * @param {(code: string) => Promise<string|null>} [opts.askPasscode] asks the person for
   *   the passcode after `passcode_required` or `wrong_passcode`; null gives up joining.
   * @param {{token: string, deadline: number}} [opts.resume] a session of this tab to take
   *   up again with `resume()` instead of joining (storedSession(), after a reload).
   * @param {Uint8Array} [opts.e2eeKey] the meeting key of the link (`#key=`): the meeting is
   *   end-to-end encrypted.
   */
  constructor({ room, name, stream, token = null, passcode = null, askPasscode = null, resume = null, e2eeKey = null }) {
    super();
    this.room = room;
    this.name = name;
    this.token = token || null;
    /** The passcode last sent (kept, so the page can offer it for the next join). */
    this.passcode = passcode || null;
    this._askPasscode = askPasscode;
    /** Our participant id, known after `welcome`. */
    this.participantId = null;
    /** Our id while we wait in the lobby (from `waiting`). */
    this.waitingId = null;
    /** Everyone else, in the order they joined: id -> {id, name, media, role}. */
    this.participants = new Map();
    /** Our role and what it lets us do now (`welcome`, then `permissions`). */
    this.role = 'participant';
    this.permissions = { ...OPEN_PERMISSIONS };
    /** The meeting's settings: {locked, lobby, passcode}. */
    this.roomState = { locked: false, lobby: false, passcode: false };
    /** Raised hands, in the order they were raised (participant ids, possibly ours). */
    this.hands = [];
    /** Who waits in the lobby, oldest first: [{id, name, role}]; only sent to those who
     *  may admit. */
    this.lobby = [];
    /** Chat messages, oldest first, at most CHAT_KEEP: {seq, from, name, text, at, to}. */
    this.chat = [];
    /** Our sources a moderator turned off; with `unmute` denied they stay off. */
    this.moderatedOff = new Set();
    /** Whom we allowed or forbade screen sharing (the server does not tell others' rights):
     *  participant id -> allowed. */
    this.screenAllowed = new Map();
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
    /** `connecting`, `connected` (media flows), `reconnecting` (media was lost and ICE is
     *  being restarted), `closed`. */
    this.state = 'connecting';
    /** Our signalling connection: `connecting` until the first `welcome`, then `connected`,
     *  or `reconnecting` while we try to resume after it dropped. */
    this.connection = 'connecting';
    /** How many times we came back with `resume` (after a drop, or a reload). */
    this.resumeCount = 0;
    /** How the server sees our own connection: `connected`, `poor` (our network
     *  struggles: loss, a long round trip, too little bandwidth) or `reconnecting`. */
    this.ownConnection = 'connected';
    /** ICE restarts the server answered, and how long (ms) the last loss of the media
     *  connection lasted, from `disconnected` to `connected` again. */
    this.iceRestarts = 0;
    this.lastMediaOutageMs = null;
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
    /** True from `join()` until the welcome: a socket lost meanwhile (say, while the person
     *  types a passcode) is opened again rather than ending the session. */
    this._joining = false;
    /** Set once we asked the server to end the meeting: the socket closing is then that. */
    this._ending = false;
    this._invite = null;
    this._chatSeq = 0;
    /** The latest `resume` token from the server, and until when (performance.now())
     *  trying it is worth it after the current drop. */
    this._resumeToken = resume?.token ?? null;
    this._resumeDeadline = resume?.deadline ?? 0;
    /** When the server last heard from us as far as we know (Date.now()), kept with the
     *  token so that a reloaded page knows whether its window has passed. */
    this._seenAt = Date.now();
    /** Whether the current PeerConnection ever connected: one that never did failed for a
     *  reason a new one would not fix (a firewall), and ends the session. */
    this._pcConnected = false;
    /** Set after the first join (or resume) completed: from then on a dropped socket is
     *  resumed rather than the end of the session. */
    this._established = false;
    /** True while an attempt's socket waits for its `welcome`: the first message on it
     *  must be `resume`, so nothing else goes out meanwhile. */
    this._resuming = false;
    /** New media connections offered after resumes that failed in a row. */
    this._offerFailures = 0;
    this._disconnectedTimer = null;
    /** When the media connection was lost (performance.now()), while it is. */
    this._mediaLostAt = null;
    this._iceRestarting = false;
    /** The receive watch of the current media connection ({pc, timer, …}). */
    this._receiveWatch = null;

    /** End-to-end encryption: the session (key agreement and distribution) once started,
     *  null in a meeting without it. */
    this.e2ee = null;
    this._e2eeKey = e2eeKey;
    this._worker = null;
    this._transformMode = null;
    /** What decrypting others' frames gives, per participant, from the worker's reports:
     *  id -> {sources: {source: {ok, fail, kid, failing, failedFrames, gapMaxMs, gapMaxEnd, reason}}}. */
    this.decryption = new Map();
    /** What the worker says of our own frames: {kid, frames: {source: n}, dropped}, and the
     *  plaintext samples asked for (test hook). */
    this.e2eeSend = null;
    this.e2eeSamples = [];
    /** Encrypted chat, in and out, is handled in order. */
    this._chatIn = Promise.resolve();
    this._chatOut = Promise.resolve();
  }

  /** Whether this meeting is end-to-end encrypted. */
  get encrypted() {
    return Boolean(this.e2ee || this._e2eeKey);
  }

  /**
   * What this page can say about `id`'s encryption: `off` (this meeting is not encrypted),
   * `none` (they do not encrypt), `invalid` (their announcement does not verify: another
   * meeting key), `ok`; with, per source, whether their frames fail to decrypt and how many
   * did: {status, failing: {source: bool}, failed: {source: n}}.
   */
  e2eeState(id) {
    if (!this.e2ee) return { status: 'off', failing: {}, failed: {} };
    const d = this.decryption.get(id)?.sources ?? {};
    const failing = {};
    const failed = {};
    for (const [source, s] of Object.entries(d)) {
      failing[source] = s.failing;
      failed[source] = s.fail;
    }
    return { status: this.e2ee.status(id) ?? 'none', failing, failed };
  }

  /** Test hook: the worker keeps bytes 10..42 of our next `count` camera frames before
   *  encryption (in `e2eeSamples`), so a test can look for them where they must not be. */
  recordSamples(count) {
    this._worker?.postMessage({ type: 'samples', count });
  }

  /** Test hook: the worker measures the longest gap between decrypted frames from now on. */
  resetDecryptGaps() {
    this._worker?.postMessage({ type: 'resetGaps' });
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
   * then connects on its own); rejects with a MeetingError if the server refuses, with code
   * `left` if the person left the lobby, `cancelled` if they gave no passcode.
   */
  async join() {
    this._joining = true;
    try {
      await this._startE2ee();
      const welcome = await this._admission();
      this._joining = false;
      this.connection = 'connected';
      this._welcome(welcome);
      await this._negotiate();
      this._established = true;
    } catch (e) {
      const err = e instanceof MeetingError ? e : new MeetingError('client', String(e.message ?? e), true);
      // The caller learns of this failure from the rejection; no `ended` event as well.
      this._close(err, false);
      throw err;
    } finally {
      this._joining = false;
    }
  }

  /**
   * Takes up this tab's session again after a reload (`opts.resume`): sends `resume` until
   * the server lets us back or the window closes, then offers a new media connection.
   * Resolves once the answer is applied; rejects like `join()`, with `connection_lost` if
   * the window closed (or the participant is gone: the server does not say which).
   */
  async resume() {
    this.connection = 'reconnecting';
    this._changed('connection');
    try {
      await this._startE2ee();
      await this._reconnect();
    } catch (e) {
      const err = e instanceof MeetingError ? e : new MeetingError('client', String(e.message ?? e), true);
      this._close(err, false);
      throw err;
    }
  }

  /** Whether a reload of this tab, or a dropped socket, can take this session up again:
   *  we hold a token (from a `welcome`, or kept from before a reload) and did not leave. */
  get resumable() {
    return Boolean(this._resumeToken && !this._closed && !this._ending);
  }

  /**
   * The page goes away (a reload, or the tab closing: the page cannot tell which). Keeps the
   * session for a reload of this tab instead of leaving; a closed tab's participant is
   * shown as reconnecting to the others until the server times it out.
   */
  suspend() {
    if (this.connection === 'connected') this._seenAt = Date.now();
    this._saveSession();
  }

  /**
   * Closes the signalling socket without `leave`, as a network drop would: the session
   * resumes on a new one. For tests and for trying the reconnection by hand.
   */
  dropSignalling() {
    this._ws?.close();
  }

  /**
   * Builds the media connection, offers it and applies the answer. At the first join, and
   * again after a resume when the old connection is gone (failed, or the page reloaded):
   * the new one has the same shape and publishes the same tracks.
   */
  async _negotiate(timeoutMs = REPLY_TIMEOUT_MS) {
    const offer = await this._buildOffer();
    // Say what we publish before media connects, so others see the right state at once.
    this.sendMedia();
    const answer = await this._request(offer, 'answer', timeoutMs);
    await this.pc.setRemoteDescription({ type: 'answer', sdp: answer.sdp });
    this._answered = true;
    // A share that went on while the old connection was down goes out on the new one.
    if (this.screenTrack) await this._senders.screen?.replaceTrack(this.screenTrack);
    this._flushLayout();
    // A `send_layers` that came before the answer was applied could not be set yet.
    this._applySendLayers('camera');
    this._applySendLayers('screen');
  }

  /**
   * Sends `join` until the server lets us in, and resolves with its `welcome`. A refused
   * join leaves the socket open, so a passcode is sent on the same one (or on a new one if
   * the server closed it meanwhile). In the lobby there is no deadline: the host may take
   * a while, and leaving ends the wait.
   */
  async _admission() {
    for (;;) {
      if (this._ws?.readyState !== WebSocket.OPEN) await this._open();
      const join = { type: 'join', protocol: PROTOCOL_VERSION, room: this.room, name: this.name };
      if (this.token) join.token = this.token;
      if (this.e2ee) join.e2ee = this.e2ee.announcement;
      if (this.passcode !== null) join.passcode = this.passcode;
      let reply;
      try {
        reply = await this._request(join, ['welcome', 'waiting']);
      } catch (e) {
        if (!(e instanceof MeetingError) || !PASSCODE_ERRORS.has(e.code) || !this._askPasscode) throw e;
        const passcode = await this._askPasscode(e.code);
        if (this._closed) throw new MeetingError('left', 'You left before joining.', true);
        if (passcode === null) throw new MeetingError('cancelled', 'Joining was cancelled.', true);
        this.passcode = passcode;
        continue;
      }
      if (reply.type === 'welcome') return reply;
      this.waitingId = reply.participant ?? null;
      this.state = 'waiting';
      const every = Math.max(1000, Number(reply.ping_interval_ms) || LOBBY_PING_MS);
      this._pingTimer = setInterval(() => this._send({ type: 'ping' }), every);
      this._changed('waiting');
      return this._expect(['welcome'], null);
    }
  }

  /** Leaves the room (or the lobby): tells the server, then closes everything. */
  leave() {
    this._send({ type: 'leave' }, true);
    this._close('left');
  }

  /**
   * Whether we may turn `source` (`microphone`, `camera`, `screen`) on now: null if so,
   * `not_allowed` if our role does not publish it, `moderated` if a moderator turned it off
   * and we may not turn it back on.
   */
  blocked(source) {
    if (!this.permissions[SOURCE_PERMISSION[source]]) return 'not_allowed';
    if (this.moderatedOff.has(source) && !this.permissions.unmute) return 'moderated';
    return null;
  }

  /** Mutes or unmutes the microphone. A muted track stays on the sender and sends silence,
   *  so unmuting is instant. */
  setMicEnabled(on) {
    if (!this.micTrack) return;
    if (on && this.blocked('microphone')) return;
    if (on) this.moderatedOff.delete('microphone');
    this.micEnabled = on;
    this.micTrack.enabled = on;
    this.sendMedia();
    this._changed('local');
  }

  /** Turns the camera off (releasing the device, so its light goes off) or on again. */
  async setCameraEnabled(on) {
    const sender = this._senders.camera;
    if (on === Boolean(this.cameraTrack)) return;
    if (on && this.blocked('camera')) return;
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
    // Closed, or turned off by a moderator, while the camera was starting.
    if (this._closed || this.blocked('camera')) {
      track.stop();
      return;
    }
    this.moderatedOff.delete('camera');
    await sender?.replaceTrack(track);
    this.cameraTrack = track;
    // The server may have paused layers while the camera was off; send only what it wants.
    this._applySendLayers('camera');
    this.sendMedia();
    this._changed('local');
  }

  /** Starts sharing the screen. Call from a click handler: browsers ask for a user gesture. */
  async startScreenShare() {
    if (this.screenTrack || this.blocked('screen')) return;
    const stream = await navigator.mediaDevices.getDisplayMedia({ video: true, audio: false });
    const track = stream.getVideoTracks()[0];
    if (this._closed || this.blocked('screen')) {
      track.stop();
      return;
    }
    this.moderatedOff.delete('screen');
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
    // A reload turns on again only what was on.
    this._saveSession();
  }

  // ---- the control plane --------------------------------------------------------------

  /** Whether our hand is raised (as the server last said). */
  get handRaised() {
    return Boolean(this.participantId && this.hands.includes(this.participantId));
  }

  /** Whether we may moderate `id`: the right to, and a strictly higher rank. */
  canModerate(id) {
    const p = this.participants.get(id);
    return Boolean(p && this.permissions.moderate && rank(this.role) > rank(p.role));
  }

  /** Whether `id` may share their screen, as far as we know: what we last set, else what
   *  their role usually allows (guests do not share). */
  mayShareScreen(id) {
    const p = this.participants.get(id);
    if (p?.media.screen) return true;
    return this.screenAllowed.get(id) ?? (p ? p.role !== 'guest' : false);
  }

  /** Sends a chat message to the room, or privately to one participant. The server sends
   *  it back to us too: it appears in `chat` then, not before. */
  sendChat(text, to = null) {
    if (!this.e2ee) {
      const msg = { type: 'chat', text };
      if (to) msg.to = to;
      this._send(msg);
      return;
    }
    // Encrypted under our current media key, which everyone present holds (docs/e2ee.md,
    // Chat); in the order written.
    const e2ee = this.e2ee;
    this._chatOut = this._chatOut.then(async () => {
      const msg = { type: 'chat', text: await e2ee.encryptChat(text), e2ee: true };
      if (to) msg.to = to;
      this._send(msg);
    }).catch((e) => this._emit('error', new MeetingError('e2ee', `Your message could not be encrypted (${e.message}); it was not sent.`)));
  }

  setHandRaised(raised) {
    this._send({ type: 'hand', raised });
  }

  /** Lets one waiting person in, or everyone waiting (no id). */
  admit(id = null) {
    this._send(id ? { type: 'admit', participant: id } : { type: 'admit' });
  }

  /** Turns one waiting person away, or everyone waiting (no id). */
  deny(id = null) {
    this._send(id ? { type: 'deny', participant: id } : { type: 'deny' });
  }

  setLocked(locked) {
    this._send({ type: 'lock', locked });
  }

  /** Turns someone's `microphone`, `camera` or `screen` off. */
  muteParticipant(id, source) {
    this._send({ type: 'mute', participant: id, source });
  }

  removeParticipant(id) {
    this._send({ type: 'remove', participant: id });
  }

  setRole(id, role) {
    this._send({ type: 'set_role', participant: id, role });
  }

  allowScreen(id, allowed) {
    this.screenAllowed.set(id, allowed);
    this._send({ type: 'allow_screen', participant: id, allowed });
    this._changed('roles', [id]);
  }

  lowerHand(id) {
    this._send({ type: 'lower_hand', participant: id });
  }

  /** Ends the meeting for everyone, us included. */
  endMeeting() {
    this._ending = true;
    this._send({ type: 'end_meeting' });
  }

  /**
   * Asks for a join link: `{role, lobby, expiresInSecs}`. Resolves with the server's
   * `invite` ({link, token, role, expires_at}); rejects with a MeetingError.
   */
  invite({ role = 'guest', lobby = true, expiresInSecs = 3600 } = {}) {
    this._invite?.reject(new MeetingError('cancelled', 'A newer invite was asked for.'));
    return new Promise((resolve, reject) => {
      const timer = setTimeout(() => {
        this._invite = null;
        reject(new MeetingError('timeout', 'The server did not answer (invite) in time.'));
      }, REPLY_TIMEOUT_MS);
      this._invite = {
        resolve: (m) => { clearTimeout(timer); this._invite = null; resolve(m); },
        reject: (e) => { clearTimeout(timer); this._invite = null; reject(e); },
      };
      this._send({ type: 'invite', role, lobby, expires_in_secs: expiresInSecs });
    });
  }

  // ---- signalling ---------------------------------------------------------------------

  /** Opens the signalling socket; with `timeoutMs`, gives up on one that takes longer (a
   *  network that swallows packets rather than refusing). */
  _open(timeoutMs = null) {
    const scheme = location.protocol === 'https:' ? 'wss:' : 'ws:';
    const ws = new WebSocket(`${scheme}//${location.host}/ws`);
    this._ws = ws;
    // A socket given up while joining may still say something: only the current one counts.
    ws.addEventListener('message', (e) => {
      if (this._ws === ws) this._onMessage(e.data);
    });
    ws.addEventListener('close', () => {
      if (this._ws === ws) this._onSocketClosed();
    });
    return new Promise((resolve, reject) => {
      const unreachable = () => new MeetingError(
        'connection', 'Cannot reach the server. Check your connection and try again.', true);
      const timer = timeoutMs === null ? null : setTimeout(() => {
        if (this._ws === ws) this._ws = null;
        ws.close();
        reject(unreachable());
      }, timeoutMs);
      ws.addEventListener('open', () => {
        clearTimeout(timer);
        resolve();
      }, { once: true });
      ws.addEventListener('error', () => {
        clearTimeout(timer);
        reject(unreachable());
      }, { once: true });
    });
  }

  /** Sends `msg` if the socket is open. While an attempt to resume waits for its `welcome`
   *  only the requests of joining go out (`always`): the server takes nothing before. */
  _send(msg, always = false) {
    if (this._resuming && !always) return;
    if (this._ws?.readyState === WebSocket.OPEN) this._ws.send(JSON.stringify(msg));
  }

  _flushLayout() {
    const layout = this._wantedLayout;
    if (!this._answered || !layout || this._closed || this._resuming) return;
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

  /** Sends `msg` and waits for a reply of one of `replyTypes`. An `error` from the server
   *  in the meantime is the answer to this request and rejects it. */
  _request(msg, replyTypes, timeoutMs = REPLY_TIMEOUT_MS) {
    const reply = this._expect(replyTypes, timeoutMs);
    this._send(msg, true);
    return reply;
  }

  /** Waits for a message of one of `types` (or an `error`), for at most `timeoutMs`; null
   *  waits as long as it takes. */
  _expect(types, timeoutMs = REPLY_TIMEOUT_MS) {
    const list = [].concat(types);
    return new Promise((resolve, reject) => {
      const timer = timeoutMs === null ? null : setTimeout(() => {
        this._waiting = null;
        reject(new MeetingError('timeout', `The server did not answer (${list.join(' or ')}) in time.`, true));
      }, timeoutMs);
      this._waiting = {
        types: list,
        resolve: (m) => { clearTimeout(timer); resolve(m); },
        reject: (e) => { clearTimeout(timer); reject(e); },
      };
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
    const answers = msg.type === 'error' ? !CONTROL_ERRORS.has(msg.code) : waiting?.types.includes(msg.type);
    if (waiting && answers) {
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
        const p = person(msg.participant);
        this.participants.set(p.id, p);
        this._e2eeDo(this.e2ee?.joined(p.id, p.e2ee));
        this._changed('participants', [p.id]);
        break;
      }
      case 'participant_e2ee': {
        // Their page reloaded with a new key pair.
        const p = this.participants.get(msg.participant);
        if (p) {
          p.e2ee = typeof msg.e2ee === 'string' && msg.e2ee ? msg.e2ee : null;
          this.decryption.delete(p.id);
          this._e2eeDo(this.e2ee?.announced(p.id, p.e2ee));
          this._changed('participants', [p.id]);
        }
        break;
      }
      case 'e2ee_key':
        if (typeof msg.from === 'string' && typeof msg.data === 'string') this._e2eeDo(this.e2ee?.keyFrom(msg.from, msg.data));
        break;
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
        if (id === this.participantId) {
          // Servers say so with a fatal error; this covers one that says it this way.
          if (FINAL_ERRORS.has(msg.reason)) this._close(new MeetingError(msg.reason, '', true));
          break;
        }
        this.participants.delete(id);
        this._forget(id);
        // Our key was theirs too: a new one, which they never get (docs/e2ee.md).
        this._e2eeDo(this.e2ee?.left(id));
        this._changed('participants', [id]);
        break;
      }
      case 'participant_connection': {
        const state = connectionState(msg.state);
        if (msg.participant === this.participantId) {
          // How the server sees our own connection (a `reconnecting` about ourselves
          // means it hears nothing of our media; the page knows that on its own).
          if (this.ownConnection !== state) {
            this.ownConnection = state;
            this._changed('reconnecting', [msg.participant]);
          }
          break;
        }
        const p = this.participants.get(msg.participant);
        if (p && p.connection !== state) {
          // Back from a drop: key messages sent while their socket was away were lost.
          if (p.connection === 'reconnecting' && state !== 'reconnecting') this._e2eeDo(this.e2ee?.back(p.id));
          p.connection = state;
          p.reconnecting = state === 'reconnecting';
          this._changed('reconnecting', [p.id]);
        }
        break;
      }
      case 'slots':
        this.slots = new Map(msg.slots.map((s) => [
          s.mid,
          { participant: s.participant, source: s.source, paused: s.paused === true },
        ]));
        // The worker counts a frame it cannot decrypt against whoever the slot carries.
        this._worker?.postMessage({ type: 'slots', slots: msg.slots.map((x) => [x.mid, x.participant, x.source]) });
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
        // The server heard us just now: a reload has a full window from here.
        this._seenAt = Date.now();
        this._saveSession();
        break;
      case 'lobby':
        this.lobby = (Array.isArray(msg.waiting) ? msg.waiting : []).map((w) => ({
          id: w.id, name: String(w.name ?? ''), role: w.role ?? 'participant',
        }));
        this._changed('lobby');
        break;
      case 'room_updated':
        this.roomState = { ...this.roomState, ...msg.room };
        this._changed('room');
        break;
      case 'role_changed':
        if (msg.participant === this.participantId) {
          this._setOwnRole(msg.role);
        } else {
          const p = this.participants.get(msg.participant);
          if (p) {
            p.role = msg.role;
            this._changed('roles', [p.id]);
          }
        }
        break;
      case 'permissions':
        this.permissions = { ...OPEN_PERMISSIONS, ...msg.permissions };
        this._enforcePermissions();
        this._setOwnRole(msg.role);
        this._changed('permissions');
        break;
      case 'moderated':
        this._moderated(msg.source, msg.by);
        break;
      case 'hands': {
        const before = this.hands;
        this.hands = Array.isArray(msg.queue) ? [...msg.queue] : [];
        this._changed('hands', [...new Set([...before, ...this.hands])]);
        break;
      }
      case 'chat':
        if (this.e2ee) {
          // Decrypted in the order the messages came.
          const e2ee = this.e2ee;
          this._chatIn = this._chatIn.then(async () => {
            if (msg.e2ee !== true) {
              // Sent in clear into an encrypted meeting: shown as such.
              this._addChat(msg, String(msg.text ?? ''), { encrypted: false });
              return;
            }
            const text = await e2ee.decryptChat(msg.from, msg.text);
            this._addChat(msg, text ?? '', { encrypted: true, unreadable: text === null });
          }).catch(() => {});
        } else if (msg.e2ee === true) {
          // Someone encrypts, and this page holds no key.
          this._addChat(msg, '', { encrypted: true, unreadable: true });
        } else {
          this._addChat(msg, String(msg.text ?? ''));
        }
        break;
      case 'invite':
        this._invite?.resolve(msg);
        break;
      case 'error': {
        const err = new MeetingError(msg.code, msg.message, Boolean(msg.fatal));
        if (this._joining) {
          // Between joins (the person is typing a passcode): a fatal error such as
          // join_timeout closes this socket; the next join opens another.
          if (err.fatal) this._dropSocket();
        } else if (err.fatal) {
          this._close(err);
        } else if (this._invite && (err.code === 'forbidden' || err.code === 'rate_limited')) {
          // The answer to the pending invite: its dialog says so.
          this._invite.reject(err);
        } else {
          this._emit('error', err);
        }
        break;
      }
      default:
        break; // later revisions may add messages; ignore what we do not know
    }
  }

  /** One chat message into `chat`: `encrypted` whether it came encrypted (null in a meeting
   *  without E2EE), `unreadable` whether this page holds no key for it. */
  _addChat(msg, text, { encrypted = null, unreadable = false } = {}) {
    if (this._closed) return;
    this.chat.push({
      seq: ++this._chatSeq,
      from: msg.from,
      name: String(msg.name ?? ''),
      text,
      at: Number(msg.at_ms) || Date.now(),
      to: msg.to ?? null,
      encrypted,
      unreadable,
    });
    if (this.chat.length > CHAT_KEEP) this.chat.splice(0, this.chat.length - CHAT_KEEP);
    this._changed('chat');
  }

  _onSocketClosed() {
    if (this._closed) return;
    const lost = new MeetingError('connection', 'The connection to the server was lost.', true);
    if (this.connection === 'reconnecting') {
      // One attempt's socket: the attempt learns of it from its pending request and the
      // next one opens another.
      this._ws = null;
      const w = this._waiting;
      this._waiting = null;
      w?.reject(lost);
      return;
    }
    if (this._established && this.resumable) {
      this._ws = null;
      this._startReconnecting();
      return;
    }
    const err = this._ending
      ? new MeetingError('meeting_ended', 'You ended the meeting.', true)
      : lost;
    if (this._joining && !this._waiting) {
      // Lost between two joins: the next one reconnects.
      this._ws = null;
      return;
    }
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

  /** Forgets the current socket (closing it), for the next join to open another. */
  _dropSocket() {
    const ws = this._ws;
    this._ws = null;
    ws?.close();
  }

  /** Forgets what we kept about someone who is no longer in the meeting. */
  _forget(id) {
    this.screenAllowed.delete(id);
    this.decryption.delete(id);
    this.speaking.delete(id);
    const i = this.recentSpeakers.indexOf(id);
    if (i >= 0) this.recentSpeakers.splice(i, 1);
  }

  /** Applies a `welcome`: the first one, or one answering `resume`, which is a full
   *  snapshot of the meeting as it is now (people came and went while we were away). */
  _welcome(w) {
    // Known before: this welcome takes up a session this page has been in.
    const known = this.participantId !== null;
    this.participantId = w.participant;
    // The name others see (a token's name wins over the typed one).
    if (typeof w.name === 'string' && w.name) this.name = w.name;
    this.limits = w.limits;
    if (w.resumed !== true) this.state = 'connecting';
    const role = w.role ?? 'participant';
    if (known) this._setOwnRole(role);
    else this.role = role;
    this.permissions = { ...OPEN_PERMISSIONS, ...w.permissions };
    this.roomState = { ...this.roomState, ...w.room_state };
    this.hands = Array.isArray(w.hands) ? [...w.hands] : [];
    const before = this.participants;
    this.participants = new Map(w.participants.map((p) => [p.id, person(p)]));
    for (const id of before.keys()) if (!this.participants.has(id)) this._forget(id);
    if (this.e2ee) {
      // Everyone now: whoever came meanwhile gets our key, whoever went makes us re-key.
      this.e2ee.selfId = w.participant;
      this._e2eeDo(this.e2ee.welcome([...this.participants.values()].map((p) => ({ id: p.id, e2ee: p.e2ee }))));
    }
    // Before the offer, so that what we say we send is what we may send.
    this._enforcePermissions();
    // The server removes us after `participant_timeout_secs` of silence.
    const every = Math.max(1000, Number(w.limits.ping_interval_ms) || LOBBY_PING_MS);
    clearInterval(this._pingTimer);
    this._pingTimer = setInterval(() => this._send({ type: 'ping' }), every);
    // Each welcome may bring a new token; only the latest is good.
    if (typeof w.resume === 'string' && w.resume) this._resumeToken = w.resume;
    this._seenAt = Date.now();
    this._saveSession();
    this._changed('welcome');
  }

  /** Keeps what a reload of this tab needs to resume: the token, when the server last
   *  heard from us, how long it waits, and which of our sources were on. */
  _saveSession() {
    if (!this._resumeToken || !this.participantId || this._closed) return;
    const media = this.media;
    storeSession(this.room, {
      token: this._resumeToken,
      seen: this._seenAt,
      window: resumeWindowMs(this.limits),
      audio: media.audio,
      video: media.video,
    });
  }

  // ---- resuming -----------------------------------------------------------------------

  /** Our socket dropped (or we dropped it): keep everything shown and try to come back. */
  _startReconnecting() {
    if (this.connection === 'reconnecting' || this._closed) return;
    this.connection = 'reconnecting';
    this._resumeDeadline = performance.now() + resumeWindowMs(this.limits);
    clearInterval(this._pingTimer);
    this._pingTimer = null;
    const lost = new MeetingError('connection', 'The connection to the server was lost.', true);
    const w = this._waiting;
    this._waiting = null;
    w?.reject(lost);
    this._invite?.reject(lost);
    this._changed('connection');
    this._reconnect().catch((err) => this._close(err));
  }

  /**
   * Tries to resume, with growing pauses, until it works or the window closes. Resolves
   * once back (media renegotiated if it had to be); rejects with the reason to end.
   */
  async _reconnect() {
    for (let attempt = 0; ; attempt++) {
      const wait = RESUME_BACKOFF_MS[Math.min(attempt, RESUME_BACKOFF_MS.length - 1)];
      if (performance.now() + wait >= this._resumeDeadline) break;
      await sleep(wait);
      if (this._closed) throw new MeetingError('left', 'You left.', true);
      const outcome = await this._tryResume();
      if (outcome === 'resumed') return;
      if (outcome instanceof MeetingError) throw outcome;
    }
    throw new MeetingError('connection_lost', 'Your connection was lost for too long; join again.', true);
  }

  /**
   * One attempt: a new socket, `resume`, the `welcome`, and a new media connection if the
   * old one no longer works. Returns `resumed`, `retry`, or the MeetingError that ends the
   * session.
   */
  async _tryResume() {
    const left = () => Math.max(1, this._resumeDeadline - performance.now());
    let welcome;
    this._resuming = true;
    try {
      await this._open(Math.min(RESUME_OPEN_MS, left()));
      const resume = { type: 'resume', protocol: PROTOCOL_VERSION, token: this._resumeToken };
      if (this.e2ee) resume.e2ee = this.e2ee.announcement;
      welcome = await this._request(resume, ['welcome'], Math.min(RESUME_REPLY_MS, left()));
    } catch (e) {
      this._dropSocket();
      return this._resumeOutcome(e);
    } finally {
      this._resuming = false;
    }
    if (this._closed) return new MeetingError('left', 'You left.', true);
    this._welcome(welcome);
    // The server heard us: its clock for removing us starts again.
    this._resumeDeadline = performance.now() + resumeWindowMs(this.limits);
    // While we were away the server may have paused layers and said so to nobody; it
    // pauses what nobody watches again when that next changes.
    this.sendLayers = { camera: null, screen: null };
    if (this._mediaBroken()) {
      try {
        await this._negotiate(Math.min(REPLY_TIMEOUT_MS, left()));
      } catch (e) {
        this._dropSocket();
        // A media connection the server keeps refusing is not coming back.
        if (++this._offerFailures >= 3) return new MeetingError('media_failed', String(e.message ?? e), true);
        return this._resumeOutcome(e);
      }
    } else {
      this._applySendLayers('camera');
      this._applySendLayers('screen');
      // What we switched while away (a mute, the camera) was never sent.
      this.sendMedia();
    }
    this._offerFailures = 0;
    this._established = true;
    this.connection = 'connected';
    this.resumeCount++;
    // The server may have forgotten what we show; say it again.
    this._layoutText = null;
    this._flushLayout();
    this._changed('connection');
    // Failed while we were busy resuming: once more, with a new media connection.
    if (this.pc?.connectionState === 'failed') this._onConnectionState();
    // Lost with the socket (an address change takes both): restart ICE now that we can.
    if (this._mediaLostAt !== null) this._restartIce();
    return 'resumed';
  }

  /** What a failed attempt means: try again (the server is busy or not there yet, or it
   *  has not noticed our old socket closing), or end the session with `e`. */
  _resumeOutcome(e) {
    if (!(e instanceof MeetingError)) return new MeetingError('client', String(e?.message ?? e), true);
    if (RESUME_RETRY.has(e.code)) return 'retry';
    return e;
  }

  /** Whether the media connection has to be built and offered anew: never answered (the
   *  page reloaded, or an offer after a resume got no answer), failed or closed. */
  _mediaBroken() {
    const s = this.pc?.connectionState;
    return !this.pc || !this._answered || s === 'failed' || s === 'closed';
  }

  _setOwnRole(role) {
    if (!role || role === this.role) return;
    const before = this.role;
    this.role = role;
    this._emit('role', { before, role });
    this._changed('permissions');
  }

  /** Switches off what our permissions no longer allow us to send. */
  _enforcePermissions() {
    const p = this.permissions;
    if (p.unmute) this.moderatedOff.clear();
    if (!p.publish_audio && this.micEnabled) this._muteMic();
    if (!p.publish_video && this.cameraTrack) this.setCameraEnabled(false).catch(() => {});
    if (!p.publish_screen && this.screenTrack) this.stopScreenShare();
  }

  _muteMic() {
    if (!this.micTrack) return;
    this.micEnabled = false;
    this.micTrack.enabled = false;
    this.sendMedia();
    this._changed('local');
  }

  /** A moderator turned `source` off: the server no longer forwards it, so stop sending it
   *  and show it off, as if the person had done it. */
  _moderated(source, by) {
    if (!(source in SOURCE_PERMISSION)) return;
    this.moderatedOff.add(source);
    if (source === 'microphone') this._muteMic();
    else if (source === 'camera') this.setCameraEnabled(false).catch(() => {});
    else this.stopScreenShare();
    // `unmute` may allow turning it back on; the page offers it again then.
    if (this.permissions.unmute) this.moderatedOff.delete(source);
    this._emit('moderated', { source, by });
    this._changed('local');
  }

  // ---- media --------------------------------------------------------------------------

  /** Builds the PeerConnection with its publish m-lines and receive slots, and returns the
   *  `offer` message. */
  async _buildOffer() {
    // A connection being replaced (after a resume) goes first: its slots and senders are
    // the new one's now.
    const old = this.pc;
    this._answered = false;
    this._pcConnected = false;
    clearTimeout(this._disconnectedTimer);
    this._disconnectedTimer = null;
    this._mediaLostAt = null;
    old?.close();
    // No ICE servers: the server is ICE-lite and names its one reachable address in its
    // answer. One bundled transport for all m-lines.
    const config = { bundlePolicy: 'max-bundle' };
    // createEncodedStreams() works only on a connection made for it.
    if (this.e2ee && this._transformMode === 'streams') config.encodedInsertableStreams = true;
    const pc = new RTCPeerConnection(config);
    this.pc = pc;
    pc.addEventListener('connectionstatechange', () => {
      if (this.pc === pc) this._onConnectionState();
    });

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
    // Every frame we send is encrypted, whichever track the sender carries later and
    // whichever simulcast layer it is (before setLocalDescription: see _attachTransform).
    this._attachTransform(mic.sender, { role: 'send', source: 'microphone', codec: 'opus' });
    this._attachTransform(camera.sender, { role: 'send', source: 'camera', codec: 'vp8' });
    this._attachTransform(screen.sender, { role: 'send', source: 'screen', codec: 'vp8' });

    const slots = [];
    const addSlots = (count, trackKind, kind) => {
      for (let i = 0; i < count; i++) {
        const t = pc.addTransceiver(trackKind, { direction: 'recvonly' });
        preferServerCodecs(t, trackKind);
        // Decrypting, from the first frame: a receive slot's transform is given before
        // setLocalDescription, when its mid is not known yet; the worker learns the mid of
        // each slot number below.
        this._attachTransform(t.receiver, {
          role: 'receive', slot: slots.length, kind, codec: kind === 'audio' ? 'opus' : 'vp8',
        });
        slots.push({ transceiver: t, kind });
      }
    };
    addSlots(this.limits.audio_slots, 'audio', 'audio');
    addSlots(this.limits.video_slots, 'video', 'video');
    addSlots(this.limits.screen_slots, 'video', 'screen');

    await pc.setLocalDescription(await pc.createOffer());
    // Mids are assigned by setLocalDescription; only now can we name them. A new
    // connection numbers its m-lines as the old one did, so the latest `slots` still
    // names the right ones; the tracks in them are new.
    this.receivers = new Map();
    this._slotIndexFor = null;
    this._worker?.postMessage({ type: 'slotMids', mids: slots.map((x) => x.transceiver.mid) });
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
    if (old) this.state = 'connecting';
    return {
      type: 'offer',
      sdp: pc.localDescription.sdp,
      publish: { microphone: mic.mid, camera: camera.mid, screen: screen.mid },
      receive: { audio: mids('audio'), camera: mids('video'), screen: mids('screen') },
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
    // Nothing said (yet, or since a resume): every layer sends.
    const want = this.sendLayers[source] ?? [];
    if (!sender?.track || !this._answered) return;
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
      this._pcConnected = true;
      this._watchReceive();
      this._mediaBack();
    } else if ((s === 'failed' || s === 'disconnected') && this._pcConnected && this._established) {
      // It worked before: the network changed or dropped.
      this._mediaLost();
    } else if (s === 'failed') {
      this._mediaFailed();
    }
  }

  /** Media stopped arriving on a connection that worked: say so, and restart ICE (now,
   *  then every ICE_RESTART_RETRY_MS) until it flows again. */
  _mediaLost() {
    if (this._mediaLostAt !== null || this._closed) return;
    this._mediaLostAt = performance.now();
    this.state = 'reconnecting';
    this._changed('state');
    this._scheduleIceRestart(ICE_RESTART_AFTER_MS);
  }

  /** The connection is up and media arrives again (or for the first time). */
  _mediaBack() {
    if (this.pc?.connectionState !== 'connected') return;
    clearTimeout(this._disconnectedTimer);
    this._disconnectedTimer = null;
    if (this._mediaLostAt !== null) this.lastMediaOutageMs = Math.round(performance.now() - this._mediaLostAt);
    this._mediaLostAt = null;
    if (this.state !== 'connected') {
      this.state = 'connected';
      this._changed('state');
    }
  }

  /**
   * Watches what arrives on the media connection: a steady flow that stops dead means the
   * path is gone (an address change, a cut) some seconds before the browser calls the
   * connection disconnected, and restarting ICE at once saves those seconds. A connection
   * that was quiet anyway (nobody else sends) is left to the browser's own verdict.
   */
  _watchReceive() {
    const pc = this.pc;
    if (this._receiveWatch?.pc === pc) return;
    clearInterval(this._receiveWatch?.timer);
    const w = {
      pc, pairId: null, bytes: null, at: 0, stalledSince: null, steady: false, lostPair: null, busy: false,
    };
    w.timer = setInterval(async () => {
      if (this.pc !== pc || this._closed || pc.connectionState === 'closed') {
        clearInterval(w.timer);
        return;
      }
      // A slow getStats does not overlap the next.
      if (w.busy) return;
      w.busy = true;
      try {
        await look();
      } finally {
        w.busy = false;
      }
    }, RECEIVE_CHECK_MS);
    const look = async () => {
      let pairId = null;
      const pairs = new Map();
      try {
        (await pc.getStats()).forEach((r) => {
          if (r.type === 'transport') pairId = r.selectedCandidatePairId ?? pairId;
          else if (r.type === 'candidate-pair') pairs.set(r.id, r);
        });
      } catch {
        return;
      }
      const pair = pairs.get(pairId);
      // What arrives on the path in use, checks not counted: media, and the server's
      // reports and feedback on what we send. STUN answers to the browser's checks of a
      // new path keep coming when all that stopped.
      const bytes = pair?.bytesReceived ?? 0;
      const now = performance.now();
      if (pairId !== w.pairId) {
        // Another path: watch it from here.
        w.pairId = pairId;
        w.bytes = null;
        w.stalledSince = null;
        w.steady = false;
      }
      if (w.bytes !== null) {
        const rate = ((bytes - w.bytes) * 1000) / Math.max(1, now - w.at);
        if (bytes > w.bytes) {
          w.stalledSince = null;
          // A flow that slows as it stops (the last packets of a tick) is still the flow
          // that stopped; one that dwindles to a trickle is not watched.
          w.steady = rate >= RECEIVE_STEADY_BPS || (w.steady && rate >= RECEIVE_STEADY_BPS / 4);
          this._mediaBack();
        } else if (w.steady) {
          w.stalledSince ??= w.at;
          if (now - w.stalledSince >= RECEIVE_STALL_MS) {
            w.steady = false;
            w.lostPair = pairId;
            this._mediaLost();
          }
        }
      }
      // Back on a new path even if nothing is sent to us on it yet: the browser uses a pair
      // it did not use when the flow stopped, and the server answered its checks on it.
      if (this._mediaLostAt !== null && pairId && pairId !== w.lostPair
        && pair?.state === 'succeeded' && (pair.responsesReceived ?? 0) > 0) {
        this._mediaBack();
      }
      w.bytes = bytes;
      w.at = now;
    };
    this._receiveWatch = w;
  }

  /** The next ICE restart attempt while the media connection is lost; past
   *  DISCONNECTED_GIVE_UP_MS the connection is replaced instead. */
  _scheduleIceRestart(ms) {
    clearTimeout(this._disconnectedTimer);
    this._disconnectedTimer = setTimeout(() => {
      this._disconnectedTimer = null;
      if (this._closed || this._mediaLostAt === null) return;
      if (performance.now() - this._mediaLostAt >= DISCONNECTED_GIVE_UP_MS) {
        this._mediaFailed();
        return;
      }
      this._restartIce();
      this._scheduleIceRestart(ICE_RESTART_RETRY_MS);
    }, ms);
  }

  /**
   * Sends `ice_restart`: an offer with new ICE credentials for the same connection. The
   * browser then checks the server from wherever it is now. Skipped while the socket is
   * down (the resume comes first), while another request waits for its reply, or while a
   * restart is in flight; the next attempt comes ICE_RESTART_RETRY_MS later.
   */
  async _restartIce() {
    const pc = this.pc;
    if (this._iceRestarting || this._waiting || !this._answered || !pc) return;
    if (this.connection !== 'connected' || this._ws?.readyState !== WebSocket.OPEN) return;
    this._iceRestarting = true;
    try {
      // An earlier restart whose answer never came left its offer pending: that offer is
      // sent again (Chromium cannot roll an ICE restart back and make another).
      if (pc.signalingState === 'stable') await pc.setLocalDescription(await pc.createOffer({ iceRestart: true }));
      const msg = { type: 'ice_restart', sdp: pc.localDescription.sdp };
      const answer = await this._request(msg, 'answer', ICE_RESTART_REPLY_MS);
      if (this.pc !== pc || pc.signalingState !== 'have-local-offer') return;
      await pc.setRemoteDescription({ type: 'answer', sdp: answer.sdp });
      this.iceRestarts++;
      // Give the new checks their time before the next attempt.
      if (this._mediaLostAt !== null) this._scheduleIceRestart(ICE_RESTART_RETRY_MS);
    } catch (e) {
      const code = e instanceof MeetingError ? e.code : null;
      if (code === 'not_connected') {
        // The server no longer has our media connection: a new one, through a resume.
        this._mediaFailed();
      } else if (code === 'timeout' && this.connection === 'connected' && this._mediaLostAt !== null) {
        // The socket went silent with the network: resume on a new one (the server lets
        // go of the old), which restarts ICE once back.
        this._dropSocket();
        this._startReconnecting();
      }
      // Anything else (the socket dropped meanwhile): the next attempt.
    } finally {
      this._iceRestarting = false;
    }
  }

  /**
   * The media connection is gone. One that once worked is replaced through a resume: we
   * drop the socket ourselves (the network changed under it, most likely, and the server
   * takes a new offer only after a resume). One that never connected would fail again
   * (a firewall): the session ends.
   */
  _mediaFailed() {
    if (this._closed) return;
    if (!this._pcConnected || !this._established || !this.resumable) {
      this._close(new MeetingError('media_failed', 'The media connection failed. Join again to retry.', true));
      return;
    }
    // Closed, it is replaced by the next resume.
    clearTimeout(this._disconnectedTimer);
    this._disconnectedTimer = null;
    this.pc.close();
    // Resuming already: that attempt sees it and offers a new one.
    if (this.connection === 'reconnecting') return;
    this._dropSocket();
    this._startReconnecting();
  }

  // ---- end-to-end encryption -----------------------------------------------------------

  /**
   * Starts end-to-end encryption when the link carried a key: the transform worker, our key
   * pair, announcement and first media key. Throws a MeetingError when this browser cannot
   * encrypt frames: the page must not join without.
   */
  async _startE2ee() {
    if (!this._e2eeKey || this.e2ee) return;
    const mode = frameTransformMode();
    if (!mode) {
      throw new MeetingError('e2ee_unsupported',
        'This browser cannot encrypt audio and video end to end, which this meeting link asks for.', true);
    }
    this._transformMode = mode;
    this._worker = await this._startWorker();
    this.e2ee = new E2eeSession({
      linkKey: this._e2eeKey,
      room: this.room,
      send: (entries) => this._sendKeys(entries),
      post: (m) => this._worker?.postMessage(m),
      changed: (what, ids) => this._changed(what === 'peers' ? 'participants' : 'e2ee', ids),
      failed: (e) => this._e2eeDo(Promise.reject(e)),
    });
    // The session holds the key from here.
    this._e2eeKey = null;
    await this.e2ee.start();
  }

  /** Queues an `e2ee_keys` message, sent as soon as the server's budget for keys allows
   *  (KEYS_BURST, KEYS_PER_SECOND), in order. */
  _sendKeys(entries) {
    const q = (this._keyQueue ??= { messages: [], tokens: KEYS_BURST, at: performance.now(), timer: null });
    q.messages.push(entries);
    this._pumpKeys();
  }

  _pumpKeys() {
    const q = this._keyQueue;
    if (!q || q.timer !== null) return;
    const now = performance.now();
    q.tokens = Math.min(KEYS_BURST, q.tokens + ((now - q.at) * KEYS_PER_SECOND) / 1000);
    q.at = now;
    while (q.messages.length && q.messages[0].length <= q.tokens) {
      const entries = q.messages.shift();
      q.tokens -= entries.length;
      this._send({ type: 'e2ee_keys', keys: entries });
    }
    if (!q.messages.length || this._closed) return;
    const wait = ((q.messages[0].length - q.tokens) * 1000) / KEYS_PER_SECOND;
    q.timer = setTimeout(() => {
      q.timer = null;
      this._pumpKeys();
    }, Math.ceil(wait));
  }

  /** The transform worker, once it has loaded (it says `ready`). */
  _startWorker() {
    return new Promise((resolve, reject) => {
      let worker;
      try {
        worker = new Worker('/e2ee-worker.js', { type: 'module', name: 'ting e2ee' });
      } catch (e) {
        reject(new MeetingError('e2ee_unsupported', `The encryption worker cannot start here (${e.message}).`, true));
        return;
      }
      const fail = (why) => {
        clearTimeout(timer);
        worker.terminate();
        reject(new MeetingError('e2ee_worker', `The encryption worker did not start (${why}). Reload the page to try again.`, true));
      };
      const timer = setTimeout(() => fail('it took too long'), E2EE_WORKER_START_MS);
      worker.addEventListener('error', (e) => {
        e.preventDefault?.();
        if (this._worker === worker) {
          // It stopped after starting: nothing is encrypted or decrypted any more.
          this._close(new MeetingError('e2ee_worker', `Encryption stopped working in this page (${e.message ?? 'worker error'}). Join again.`, true));
        } else {
          fail(e.message || 'it could not be loaded');
        }
      });
      worker.addEventListener('message', (e) => {
        if (e.data?.type === 'ready' && this._worker !== worker) {
          clearTimeout(timer);
          resolve(worker);
          return;
        }
        if (this._worker === worker) this._onWorker(e.data);
      });
    });
  }

  /**
   * Gives `target` (a sender, or a receive slot's receiver) a transform through the worker.
   * Only before setLocalDescription: Chromium (148) ignores a transform given to a sender or
   * receiver of a transceiver already in a local description, and its frames then pass in
   * clear (receivers decode what the server sends, senders send what they encode).
   */
  _attachTransform(target, options) {
    if (!this.e2ee || !this._worker) return;
    if (this._transformMode === 'script') {
      target.transform = new RTCRtpScriptTransform(this._worker, options);
      return;
    }
    const { readable, writable } = target.createEncodedStreams();
    this._worker.postMessage({ type: 'streams', options, readable, writable }, [readable, writable]);
  }

  /** Runs a step of the E2EE session, showing what went wrong if it fails. */
  _e2eeDo(promise) {
    promise?.catch((e) => {
      if (this._closed) return;
      this._emit('error', new MeetingError('e2ee', `End-to-end encryption ran into a problem: ${e?.message ?? e}.`));
    });
  }

  /** A report of the worker: how decryption goes per participant, what we send. */
  _onWorker(msg) {
    if (msg?.type === 'exhausted') {
      // Our key's counter nears its end: a new key, handed out and used as after a departure.
      if (!this.e2ee?.next) this._e2eeDo(this.e2ee?.rekey());
      return;
    }
    if (msg?.type !== 'stats') return;
    const next = new Map();
    for (const r of msg.receive) {
      const d = next.get(r.participant) ?? { sources: {} };
      d.sources[r.source] = {
        ok: r.ok,
        fail: r.fail,
        kid: r.kid,
        reason: r.reason,
        failing: r.failingMs >= DECRYPT_FAILING_MS,
        failedFrames: r.failedFrames,
        gapMaxMs: r.gapMaxMs,
        gapMaxEnd: r.gapMaxEnd,
      };
      next.set(r.participant, d);
    }
    // Tiles change when a source starts or stops failing, or its count of failures moves
    // while it fails.
    const changed = [];
    for (const [id, d] of next) {
      const before = this.decryption.get(id)?.sources ?? {};
      const differs = Object.entries(d.sources).some(([source, s]) => {
        const b = before[source];
        return !b || b.failing !== s.failing || (s.failing && b.fail !== s.fail);
      });
      if (differs) changed.push(id);
    }
    this.decryption = new Map([...next].filter(([id]) => this.participants.has(id)));
    this.e2eeSend = msg.send;
    this.e2eeSamples = msg.samples;
    if (changed.length) this._changed('decryption', changed);
  }

  // ---- ending -------------------------------------------------------------------------

  _close(reason, emit = true) {
    if (this._closed) return;
    this._closed = true;
    this.state = 'closed';
    // Nothing left to resume, and a reload must not try.
    forgetSession(this.room);
    this._resumeToken = null;
    clearTimeout(this._disconnectedTimer);
    clearInterval(this._receiveWatch?.timer);
    // A join in progress (waiting in the lobby, say) ends with the session.
    const waiting = this._waiting;
    this._waiting = null;
    waiting?.reject(reason instanceof MeetingError ? reason : new MeetingError('left', 'You left.', true));
    this._invite?.reject(new MeetingError('closed', 'The meeting ended.'));
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
    // The keys go with the session.
    if (this._keyQueue) clearTimeout(this._keyQueue.timer);
    this._keyQueue = null;
    this.e2ee?.close();
    this._worker?.terminate();
    this._worker = null;
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
