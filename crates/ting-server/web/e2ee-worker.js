// The frame transform worker of an end-to-end encrypted meeting (docs/e2ee.md, "The frame
// format").
//
// Every encoded frame the page sends or receives passes through here: sent frames are
// encrypted under this page's current media key, received ones decrypted with the key their
// KID names, and a frame that cannot be (unknown KID, bad tag, too short, another codec) is
// dropped, never passed on in clear. Frames come either through RTCRtpScriptTransform (an
// `rtctransform` event per sender or receiver) or, in browsers without it, as the
// readable/writable pair of createEncodedStreams() posted by the page (`streams`).
//
// The page tells this worker (postMessage):
//   {type: 'sendKey', kid, baseKey}              encrypt with this key from the next frame
//   {type: 'addKey', participant, kid, baseKey}  a key of another sender
//   {type: 'dropKeys', participant, kids}        keys no longer held
//   {type: 'slotMids', mids: [mid]}              the mid of each receive slot, by number
//   {type: 'slots', slots: [[mid, participant, source]]}   who each receive slot carries
//   {type: 'samples', count}                     test hook: keep bytes 10..42 of the next
//                                                `count` camera frames before encryption
//   {type: 'resetGaps'}                          test hook: start measuring gaps anew
//   {type: 'streams', options, readable, writable}   the createEncodedStreams() path
// and hears back `{type: 'ready'}` once loaded, then at most every REPORT_MS and only when
// something changed:
//   {type: 'stats', receive: [{participant, source, ok, fail, kid, reason, failingMs,
//    failedFrames, gapMaxMs, gapMaxEnd}], send: {kid, frames: {source: n}, dropped}, samples}
//   {type: 'exhausted'}   the counter of the current key nears its end: a new key is due
//
// Transform options: {role: 'send', source: 'microphone'|'camera'|'screen', codec} or
// {role: 'receive', slot, kind: 'audio'|'video'|'screen', codec}; codec is `opus` or `vp8`,
// `slot` the receive slot's number (its transform is made before its mid is known).

import { ReceiveKeys, SendKey, toHex } from '/e2ee.js';

/** How often the page hears how decryption goes. */
const REPORT_MS = 500;
/** A receiver asks its sender for a keyframe when frames decrypt again after failing (the
 *  decoder needs one to start), at most this often. */
const KEYFRAME_REQUEST_MS = 1000;
/** What each codec's frames are called in frame metadata. */
const MIME = { vp8: 'video/vp8', opus: 'audio/opus' };

const sendKey = new SendKey();
/** Switching keys derives a new frame key; frames wait for it. */
let sendKeyReady = Promise.resolve();
let exhaustedSaid = false;
const keys = new ReceiveKeys();
/** mid -> {participant, source} */
let slots = new Map();
/** Receive slot number -> mid. */
let slotMids = [];
/** `participant source` -> what decryption did for that source of that participant. */
const counts = new Map();
const sent = { frames: { microphone: 0, camera: 0, screen: 0 }, dropped: 0 };
let samplesWanted = 0;
let samples = [];
let dirty = false;

onmessage = (event) => {
  const msg = event.data;
  switch (msg?.type) {
    case 'sendKey':
      sendKeyReady = sendKeyReady.then(() => sendKey.set(msg.kid, msg.baseKey)).then(() => {
        exhaustedSaid = false;
        dirty = true;
      });
      break;
    case 'addKey':
      keys.add(msg.participant, msg.kid, msg.baseKey);
      break;
    case 'dropKeys':
      keys.drop(msg.participant, msg.kids);
      break;
    case 'slotMids':
      slotMids = [...msg.mids];
      break;
    case 'slots':
      slots = new Map(msg.slots.map(([mid, participant, source]) => [mid, { participant, source }]));
      break;
    case 'samples':
      samplesWanted = Math.max(0, Number(msg.count) || 0);
      samples = [];
      dirty = true;
      break;
    case 'resetGaps':
      // Gaps from the next decrypted frame on: not back to one before this.
      for (const c of counts.values()) {
        c.gapMax = 0;
        c.gapMaxEnd = null;
        c.lastOkAt = null;
      }
      dirty = true;
      break;
    case 'streams':
      attach(msg.readable, msg.writable, msg.options, null);
      break;
    default:
      break;
  }
};

// RTCRtpScriptTransform: one event per sender or receiver the page gave a transform.
globalThis.onrtctransform = (event) => {
  const t = event.transformer;
  attach(t.readable, t.writable, t.options, t);
};

function attach(readable, writable, options, transformer) {
  const transform = options.role === 'send' ? encryptor(options) : decryptor(options, transformer);
  // The pipe ends when its connection closes (a resume builds a new one): nothing to do.
  readable.pipeThrough(new TransformStream({ transform })).pipeTo(writable).catch(() => {});
}

/** Whether a frame is of the codec the transform was made for, as far as its metadata says
 *  (a frame of another codec has no clear-prefix rule and is never sent). */
function ofCodec(frame, codec) {
  let mime = null;
  try {
    mime = frame.getMetadata?.().mimeType ?? null;
  } catch {
    mime = null;
  }
  return !mime || mime.toLowerCase() === MIME[codec];
}

function encryptor({ source, codec }) {
  return async (frame, controller) => {
    if (!ofCodec(frame, codec)) {
      sent.dropped++;
      dirty = true;
      return;
    }
    await sendKeyReady;
    const plain = new Uint8Array(frame.data);
    let out;
    try {
      out = await sendKey.encrypt(codec, plain);
    } catch {
      // No key yet, or its counter used up: the frame is dropped, never sent in clear.
      sent.dropped++;
      dirty = true;
      return;
    }
    if (source === 'camera' && samplesWanted > 0 && plain.length >= 42) {
      samplesWanted--;
      samples.push({
        kid: out.kid.toString(), ctr: out.ctr.toString(), keyframe: (plain[0] & 1) === 0,
        length: plain.length, hex: toHex(plain.subarray(10, 42)),
      });
    }
    frame.data = out.data.buffer;
    controller.enqueue(frame);
    sent.frames[source] = (sent.frames[source] ?? 0) + 1;
    dirty = true;
    if (sendKey.exhausted && !exhaustedSaid) {
      exhaustedSaid = true;
      postMessage({ type: 'exhausted' });
    }
  };
}

function decryptor({ slot: slotNumber, kind, codec }, transformer) {
  const fallbackSource = kind === 'audio' ? 'microphone' : kind === 'screen' ? 'screen' : 'camera';
  let failedSinceOk = false;
  let lastKeyframeRequest = -Infinity;
  return async (frame, controller) => {
    const slot = slots.get(slotMids[slotNumber]);
    const source = slot?.source ?? fallbackSource;
    if (!ofCodec(frame, codec)) {
      note(slot?.participant, source, null, 'codec');
      failedSinceOk = true;
      return;
    }
    let r;
    try {
      r = await keys.decrypt(codec, new Uint8Array(frame.data));
    } catch (e) {
      // Whose frame it was: the owner of the KID it names if we hold that, else whoever the
      // server says the slot carries.
      const owner = e.kid !== null && e.kid !== undefined ? keys.owner(e.kid) : null;
      note(owner ?? slot?.participant, source, null, e.reason ?? 'error');
      failedSinceOk = true;
      return;
    }
    frame.data = r.data.buffer;
    controller.enqueue(frame);
    note(r.participant, source, r.kid, null);
    if (failedSinceOk) {
      failedSinceOk = false;
      // The frames before this one were dropped: the decoder needs a keyframe to go on.
      const now = performance.now();
      if (kind !== 'audio' && transformer?.sendKeyFrameRequest && now - lastKeyframeRequest > KEYFRAME_REQUEST_MS) {
        lastKeyframeRequest = now;
        transformer.sendKeyFrameRequest().catch(() => {});
      }
    }
  };
}

/** Counts one received frame of `source` of `participant`: decrypted under `kid`, or failed
 *  for `reason`. */
function note(participant, source, kid, reason) {
  if (!participant) return;
  const key = `${participant} ${source}`;
  let c = counts.get(key);
  if (!c) {
    c = {
      participant, source, ok: 0, fail: 0, kid: null, reason: null,
      lastOkAt: null, failSince: null, lastFailAt: null, runFails: 0, gapMax: 0, gapMaxEnd: null,
    };
    counts.set(key, c);
  }
  const now = performance.now();
  if (kid !== null) {
    c.ok++;
    c.kid = kid.toString();
    if (c.lastOkAt !== null && now - c.lastOkAt > c.gapMax) {
      c.gapMax = now - c.lastOkAt;
      // When the longest gap ended, in milliseconds since the epoch (a worker's clock and
      // its page's have different origins).
      c.gapMaxEnd = performance.timeOrigin + now;
    }
    c.lastOkAt = now;
    c.failSince = null;
    c.runFails = 0;
  } else {
    c.fail++;
    c.reason = reason;
    c.failSince ??= now;
    c.lastFailAt = now;
    c.runFails++;
  }
  dirty = true;
}

// The page waits for this before it joins: a worker that failed to load encrypts nothing.
postMessage({ type: 'ready' });

setInterval(() => {
  if (!dirty) return;
  dirty = false;
  const receive = [...counts.values()].map((c) => ({
    participant: c.participant,
    source: c.source,
    ok: c.ok,
    fail: c.fail,
    kid: c.kid,
    reason: c.reason,
    // How long frames have failed since the last one that decrypted, and how many.
    failingMs: c.failSince === null ? 0 : Math.round(c.lastFailAt - c.failSince),
    failedFrames: c.runFails,
    gapMaxMs: Math.round(c.gapMax),
    gapMaxEnd: c.gapMaxEnd === null ? null : Math.round(c.gapMaxEnd),
  }));
  postMessage({
    type: 'stats',
    receive,
    send: { kid: sendKey.kid === null ? null : sendKey.kid.toString(), frames: { ...sent.frames }, dropped: sent.dropped },
    samples: [...samples],
  });
}, REPORT_MS);
