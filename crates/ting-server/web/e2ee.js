// End-to-end encryption for ting meetings: the cryptography of docs/e2ee.md.
//
// One module for three places: the page (meeting.js holds an E2eeSession, which makes and
// checks announcements, hands out and takes in media keys, and encrypts chat), the transform
// worker (e2ee-worker.js encrypts and decrypts frames with SendKey and ReceiveKeys), and Node
// (tests/browser/e2ee-frame.test.mjs). It uses nothing but `globalThis.crypto` (WebCrypto)
// and timers: no DOM, no imports.
//
// Identifiers that travel as integers, the key id (KID) and the frame counter (CTR), are
// BigInts here: an SFrame header may carry 64-bit values, more than a Number holds exactly.
// Where a KID is shown or handed to tests it is a decimal string, as in the chat format.
//
// Nothing here ever sends anything: E2eeSession says what to send through its callbacks, and
// meeting.js puts it on the WebSocket. The link key never leaves this module's callers'
// memory; only announcements (public keys with a MAC) and key messages (media keys encrypted
// to one recipient) go to the server.

const subtle = () => globalThis.crypto.subtle;
const encoder = new TextEncoder();
const decoder = new TextDecoder('utf-8', { fatal: true });
const utf8 = (s) => encoder.encode(s);

/** The SFrame cipher suite: AES_128_GCM_SHA256_128 (RFC 9605, section 4.5). */
export const CIPHER_SUITE = 0x0004;
/** Bytes of the meeting key in a link, and characters of its base64url form. */
export const LINK_KEY_BYTES = 32;
export const LINK_KEY_CHARS = 43;
/** The AES-GCM tag length of frames, key messages and chat, in bytes. */
const TAG_BYTES = 16;
const NONCE_BYTES = 12;
const BASE_KEY_BYTES = 16;
/** The length of a P-256 public key in uncompressed form (`exportKey("raw")`). */
const PUB_BYTES = 65;
/** A sender draws a new key well before its counter reaches 2^40 (docs/e2ee.md). */
export const CTR_LIMIT = 1n << 40n;
export const CTR_REKEY_AT = CTR_LIMIT - (1n << 20n);
/** Receivers keep the keys of a sender's two latest KIDs. */
export const KEYS_PER_SENDER = 2;
/** Departures closer together than this cost one re-key; the new key is used this long
 *  after it was handed out (docs/e2ee.md, "Someone leaves"). */
export const REKEY_DELAY_MIN_MS = 200;
export const REKEY_DELAY_MAX_MS = 700;
export const SWITCH_DELAY_MS = 1000;
/** At most this many entries in one `e2ee_keys` message (docs/protocol.md). */
export const KEYS_PER_MESSAGE = 256;
/** How long a chat message under a KID not (yet) held waits for its key. */
const CHAT_KEY_WAIT_MS = 2000;
/** Key messages from one sender kept while they cannot be read yet (their announcement may
 *  arrive after them), to try again when it does. */
const PENDING_KEY_MESSAGES = 4;

/** Something about E2EE that a person or a program can act on; `code` is stable. */
export class E2eeError extends Error {
  constructor(code, message) {
    super(message);
    this.name = 'E2eeError';
    this.code = code;
  }
}

// ---- bytes ------------------------------------------------------------------------------

const B64URL = 'ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_';
const B64URL_VALUE = new Map([...B64URL].map((c, i) => [c, i]));

/** base64url without padding (RFC 4648, section 5). */
export function b64urlEncode(bytes) {
  let out = '';
  let i = 0;
  for (; i + 2 < bytes.length; i += 3) {
    const n = (bytes[i] << 16) | (bytes[i + 1] << 8) | bytes[i + 2];
    out += B64URL[n >> 18] + B64URL[(n >> 12) & 63] + B64URL[(n >> 6) & 63] + B64URL[n & 63];
  }
  const rest = bytes.length - i;
  if (rest === 1) {
    const n = bytes[i] << 16;
    out += B64URL[n >> 18] + B64URL[(n >> 12) & 63];
  } else if (rest === 2) {
    const n = (bytes[i] << 16) | (bytes[i + 1] << 8);
    out += B64URL[n >> 18] + B64URL[(n >> 12) & 63] + B64URL[(n >> 6) & 63];
  }
  return out;
}

/** Decodes canonical base64url without padding; null for anything else (other characters,
 *  a length no encoding has, spare bits that are not zero). */
export function b64urlDecode(text) {
  if (typeof text !== 'string' || text.length % 4 === 1) return null;
  const out = new Uint8Array(Math.floor((text.length * 3) / 4));
  let acc = 0;
  let bits = 0;
  let o = 0;
  for (const c of text) {
    const v = B64URL_VALUE.get(c);
    if (v === undefined) return null;
    acc = (acc << 6) | v;
    bits += 6;
    if (bits >= 8) {
      bits -= 8;
      out[o++] = (acc >> bits) & 0xff;
    }
  }
  // The bits left over must be zero: otherwise two texts would mean the same bytes.
  if (acc & ((1 << bits) - 1)) return null;
  return out;
}

export function concatBytes(...parts) {
  const out = new Uint8Array(parts.reduce((n, p) => n + p.length, 0));
  let at = 0;
  for (const p of parts) {
    out.set(p, at);
    at += p.length;
  }
  return out;
}

/** Bytewise comparison, as `min`/`max` of public keys need it. */
export function compareBytes(a, b) {
  const n = Math.min(a.length, b.length);
  for (let i = 0; i < n; i++) if (a[i] !== b[i]) return a[i] - b[i];
  return a.length - b.length;
}

function equalBytes(a, b) {
  return a.length === b.length && compareBytes(a, b) === 0;
}

export function toHex(bytes) {
  return Array.from(bytes, (b) => b.toString(16).padStart(2, '0')).join('');
}

export function fromHex(hex) {
  const clean = hex.replace(/\s+/g, '');
  if (clean.length % 2 || /[^0-9a-f]/i.test(clean)) throw new E2eeError('bad_hex', `not hex: ${hex}`);
  return Uint8Array.from(clean.match(/../g) ?? [], (h) => parseInt(h, 16));
}

/** `value` as an unsigned big-endian integer of `length` bytes. */
export function bigEndian(value, length) {
  let v = BigInt(value);
  const out = new Uint8Array(length);
  for (let i = length - 1; i >= 0; i--) {
    out[i] = Number(v & 0xffn);
    v >>= 8n;
  }
  if (v !== 0n) throw new E2eeError('too_large', `${value} does not fit into ${length} bytes`);
  return out;
}

function readBigEndian(bytes, from, length) {
  let v = 0n;
  for (let i = from; i < from + length; i++) v = (v << 8n) | BigInt(bytes[i]);
  return v;
}

function randomBytes(n) {
  return globalThis.crypto.getRandomValues(new Uint8Array(n));
}

// ---- the meeting key in the link ----------------------------------------------------------

/** A fresh meeting key (32 random bytes). */
export function generateLinkKey() {
  return randomBytes(LINK_KEY_BYTES);
}

/** The fragment of an E2EE meeting link, without `#`: `key=<43 characters>`. */
export function linkFragment(linkKey) {
  return `key=${b64urlEncode(linkKey)}`;
}

/**
 * The meeting key of a link's fragment (`location.hash`, with or without `#`): null when the
 * fragment names no key (the meeting is not end-to-end encrypted); throws an E2eeError with
 * code `e2ee_key` when it names a malformed one, which must not be joined without.
 */
export function parseLinkKey(fragment) {
  const text = String(fragment ?? '').replace(/^#/, '');
  if (!text) return null;
  let value = null;
  for (const part of text.split('&')) {
    const eq = part.indexOf('=');
    const name = eq < 0 ? part : part.slice(0, eq);
    if (name === 'key') value = eq < 0 ? '' : part.slice(eq + 1);
  }
  if (value === null) return null;
  let decoded = value;
  try {
    decoded = decodeURIComponent(value);
  } catch {
    // Kept as it is: the checks below say what is wrong with it.
  }
  if (decoded.length !== LINK_KEY_CHARS) {
    throw new E2eeError('e2ee_key', `the key in this link has ${decoded.length} characters instead of ${LINK_KEY_CHARS}`);
  }
  const key = b64urlDecode(decoded);
  if (!key || key.length !== LINK_KEY_BYTES) {
    throw new E2eeError('e2ee_key', 'the key in this link contains characters a key cannot have');
  }
  return key;
}

// ---- HKDF, and what the link key derives ------------------------------------------------

/** HKDF-SHA256 (RFC 5869): Extract with `salt`, then Expand with `info`, to `n` bytes. */
export async function hkdf(ikm, salt, info, n) {
  const key = await subtle().importKey('raw', ikm, 'HKDF', false, ['deriveBits']);
  const bits = await subtle().deriveBits(
    { name: 'HKDF', hash: 'SHA-256', salt: typeof salt === 'string' ? utf8(salt) : salt, info: typeof info === 'string' ? utf8(info) : info },
    key, n * 8);
  return new Uint8Array(bits);
}

/** What the meeting key `L` derives: the announcement MAC key, the pair salt, the code id. */
export async function meetingSecrets(linkKey) {
  if (!(linkKey instanceof Uint8Array) || linkKey.length !== LINK_KEY_BYTES) {
    throw new E2eeError('e2ee_key', `a meeting key is ${LINK_KEY_BYTES} bytes`);
  }
  const authBytes = await hkdf(linkKey, new Uint8Array(0), 'ting e2ee 1 auth', 32);
  const authKey = await subtle().importKey('raw', authBytes, { name: 'HMAC', hash: 'SHA-256' }, false, ['sign', 'verify']);
  return {
    authKey,
    pairSalt: await hkdf(linkKey, new Uint8Array(0), 'ting e2ee 1 pair salt', 32),
    codeId: await hkdf(linkKey, new Uint8Array(0), 'ting e2ee 1 code', 16),
  };
}

// ---- who is who: key pairs and announcements ------------------------------------------------

/** A fresh ECDH P-256 key pair; the private key cannot be exported. `pub` is the 65-byte
 *  uncompressed point. */
export async function makeIdentity() {
  const pair = await subtle().generateKey({ name: 'ECDH', namedCurve: 'P-256' }, false, ['deriveBits']);
  const pub = new Uint8Array(await subtle().exportKey('raw', pair.publicKey));
  return { privateKey: pair.privateKey, pub };
}

function announceMessage(room, pub) {
  return concatBytes(utf8('ting e2ee 1 announce'), [0], utf8(room), [0], pub);
}

/** `b64url(pub) "." b64url(HMAC-SHA256(auth_key, "ting e2ee 1 announce" 0 room 0 pub))`. */
export async function makeAnnouncement(secrets, room, pub) {
  const mac = new Uint8Array(await subtle().sign('HMAC', secrets.authKey, announceMessage(room, pub)));
  return `${b64urlEncode(pub)}.${b64urlEncode(mac)}`;
}

/** The public key an announcement makes for `room`, if its MAC verifies under this page's
 *  meeting key and it is a point of P-256; null otherwise. */
export async function verifyAnnouncement(secrets, room, announcement) {
  if (typeof announcement !== 'string' || announcement.length > 256) return null;
  const parts = announcement.split('.');
  if (parts.length !== 2) return null;
  const pub = b64urlDecode(parts[0]);
  const mac = b64urlDecode(parts[1]);
  if (!pub || pub.length !== PUB_BYTES || pub[0] !== 4 || !mac || mac.length !== 32) return null;
  const ok = await subtle().verify('HMAC', secrets.authKey, mac, announceMessage(room, pub));
  if (!ok) return null;
  try {
    await subtle().importKey('raw', pub, { name: 'ECDH', namedCurve: 'P-256' }, false, []);
  } catch {
    return null;
  }
  return pub;
}

// ---- media keys between two participants ------------------------------------------------------

/** The AES-256-GCM key shared by this page's identity and the holder of `theirPub`. */
export async function pairKey(identity, theirPub, pairSalt) {
  const their = await subtle().importKey('raw', theirPub, { name: 'ECDH', namedCurve: 'P-256' }, false, []);
  const shared = new Uint8Array(await subtle().deriveBits({ name: 'ECDH', public: their }, identity.privateKey, 256));
  const [lo, hi] = compareBytes(identity.pub, theirPub) <= 0 ? [identity.pub, theirPub] : [theirPub, identity.pub];
  const bytes = await hkdf(shared, pairSalt, concatBytes(utf8('ting e2ee 1 pair'), lo, hi), 32);
  return subtle().importKey('raw', bytes, 'AES-GCM', false, ['encrypt', 'decrypt']);
}

function keyMessageAad(senderPub, recipientPub) {
  return concatBytes(utf8('ting e2ee 1 key'), senderPub, recipientPub);
}

/** A media key `(kid, baseKey)` for one recipient: the `data` of an `e2ee_keys` entry. */
export async function sealKeyMessage(key, senderPub, recipientPub, kid, baseKey) {
  const nonce = randomBytes(NONCE_BYTES);
  const plain = concatBytes(bigEndian(kid, 8), baseKey);
  const sealed = new Uint8Array(await subtle().encrypt(
    { name: 'AES-GCM', iv: nonce, additionalData: keyMessageAad(senderPub, recipientPub), tagLength: 128 }, key, plain));
  return b64urlEncode(concatBytes(nonce, sealed));
}

/** The `(kid, baseKey)` an `e2ee_key` carries; throws an E2eeError if it does not open. */
export async function openKeyMessage(key, senderPub, recipientPub, data) {
  const bytes = b64urlDecode(data);
  if (!bytes || bytes.length !== NONCE_BYTES + 8 + BASE_KEY_BYTES + TAG_BYTES) {
    throw new E2eeError('bad_key_message', 'a key message of the wrong form');
  }
  let plain;
  try {
    plain = new Uint8Array(await subtle().decrypt(
      { name: 'AES-GCM', iv: bytes.subarray(0, NONCE_BYTES), additionalData: keyMessageAad(senderPub, recipientPub), tagLength: 128 },
      key, bytes.subarray(NONCE_BYTES)));
  } catch {
    throw new E2eeError('bad_key_message', 'a key message that does not decrypt with the pair key');
  }
  return { kid: readBigEndian(plain, 0, 8), baseKey: plain.slice(8) };
}

/** A sender's fresh media key: a 48-bit KID and a 16-byte base key, both random. */
export function newMediaKey() {
  return { kid: readBigEndian(randomBytes(6), 0, 6), baseKey: randomBytes(BASE_KEY_BYTES) };
}

// ---- SFrame ---------------------------------------------------------------------------------

/** RFC 9605, section 4.4.2: the raw `sframe_key` (16 bytes) and `sframe_salt` (12) of a base
 *  key and KID for cipher suite 0x0004. */
export async function sframeSecrets(baseKey, kid) {
  const suffix = concatBytes(bigEndian(kid, 8), bigEndian(CIPHER_SUITE, 2));
  const empty = new Uint8Array(0);
  return {
    key: await hkdf(baseKey, empty, concatBytes(utf8('SFrame 1.0 Secret key '), suffix), 16),
    salt: await hkdf(baseKey, empty, concatBytes(utf8('SFrame 1.0 Secret salt '), suffix), 12),
  };
}

/** The key and salt for encrypting and decrypting frames under `(kid, baseKey)`. */
export async function frameKey(baseKey, kid) {
  const { key, salt } = await sframeSecrets(baseKey, kid);
  return { kid: BigInt(kid), key: await subtle().importKey('raw', key, 'AES-GCM', false, ['encrypt', 'decrypt']), salt };
}

/** `salt XOR CTR`, CTR as a 12-byte big-endian integer. */
export function sframeNonce(salt, ctr) {
  const nonce = bigEndian(ctr, NONCE_BYTES);
  for (let i = 0; i < NONCE_BYTES; i++) nonce[i] ^= salt[i];
  return nonce;
}

function minimalLength(v) {
  let n = 0;
  for (let x = v; x > 0n; x >>= 8n) n++;
  return n;
}

/** The SFrame header of RFC 9605, section 4.3: `X|K(3)|Y|C(3)`, then KID and CTR as minimal
 *  big-endian integers unless they are below 8 and fit into the config byte. */
export function encodeHeader(kid, ctr) {
  const k = BigInt(kid);
  const c = BigInt(ctr);
  const max = 1n << 64n;
  if (k < 0n || k >= max || c < 0n || c >= max) throw new E2eeError('too_large', 'KID and CTR are 64-bit values');
  let config = 0;
  const parts = [];
  if (k < 8n) {
    config |= Number(k) << 4;
  } else {
    const n = minimalLength(k);
    config |= 0x80 | ((n - 1) << 4);
    parts.push(bigEndian(k, n));
  }
  if (c < 8n) {
    config |= Number(c);
  } else {
    const n = minimalLength(c);
    config |= 0x08 | (n - 1);
    parts.push(bigEndian(c, n));
  }
  return concatBytes([config], ...parts);
}

/** The SFrame header at `offset` of `bytes`: {kid, ctr, length}, or null if the bytes end
 *  before it does. */
export function parseHeader(bytes, offset = 0) {
  if (offset >= bytes.length) return null;
  const config = bytes[offset];
  const k = (config >> 4) & 7;
  const c = config & 7;
  const kidLength = config & 0x80 ? k + 1 : 0;
  const ctrLength = config & 0x08 ? c + 1 : 0;
  const length = 1 + kidLength + ctrLength;
  if (offset + length > bytes.length) return null;
  const kid = kidLength ? readBigEndian(bytes, offset + 1, kidLength) : BigInt(k);
  const ctr = ctrLength ? readBigEndian(bytes, offset + 1 + kidLength, ctrLength) : BigInt(c);
  return { kid, ctr, length };
}

/** The codec's clear prefix as docs/e2ee.md sets it, before looking at the frame's length:
 *  VP8 10 bytes of a keyframe (bit 0 of the first byte 0) and 3 of a delta frame, Opus 1. */
function nominalPrefix(codec, first) {
  if (codec === 'vp8') return first === undefined ? 0 : (first & 1) === 0 ? 10 : 3;
  if (codec === 'opus') return 1;
  throw new E2eeError('codec', `no clear prefix is defined for ${codec}`);
}

/** How many of the first bytes of an encoded frame stay in clear: a frame shorter than its
 *  prefix is all prefix. */
export function clearPrefixLength(codec, data) {
  return Math.min(nominalPrefix(codec, data[0]), data.length);
}

/** A frame that could not be decrypted, and why: `short`, `header`, `unknown_kid`, `auth`. */
export class FrameError extends Error {
  constructor(reason, kid = null) {
    super(`frame not decrypted: ${reason}`);
    this.name = 'FrameError';
    this.reason = reason;
    this.kid = kid;
  }
}

/** AES-128-GCM of SFrame: `ciphertext || tag` of `plain` under `fk` ({key, salt}) and `ctr`. */
export async function sframeSeal(fk, ctr, aad, plain) {
  return new Uint8Array(await subtle().encrypt(
    { name: 'AES-GCM', iv: sframeNonce(fk.salt, ctr), additionalData: aad, tagLength: 128 }, fk.key, plain));
}

async function sframeOpen(fk, ctr, aad, sealed) {
  return new Uint8Array(await subtle().decrypt(
    { name: 'AES-GCM', iv: sframeNonce(fk.salt, ctr), additionalData: aad, tagLength: 128 }, fk.key, sealed));
}

/** `prefix || sframe_header || ciphertext || tag` of one encoded frame. */
export async function encryptFrame(fk, ctr, codec, data) {
  const p = clearPrefixLength(codec, data);
  const header = encodeHeader(fk.kid, ctr);
  const aad = concatBytes(data.subarray(0, p), header);
  const sealed = await sframeSeal(fk, ctr, aad, data.subarray(p));
  return concatBytes(aad, sealed);
}

/**
 * The encoded frame inside an encrypted one: {data, kid, ctr}. `lookup(kid)` gives the frame
 * key ({key, salt}, or a promise of it) of a KID this page holds, or null. Throws a
 * FrameError when the frame does not decrypt.
 *
 * The prefix length comes from the first byte. Only a frame shorter than its prefix has a
 * shorter one, and then its ciphertext is empty: such a frame ends 16 bytes after its header,
 * which is how the shorter prefixes are tried when the nominal one does not decrypt.
 */
export async function decryptFrame(lookup, codec, data) {
  if (!data.length) throw new FrameError('short');
  const nominal = nominalPrefix(codec, data[0]);
  let firstError = null;
  const attempt = async (p, exact) => {
    const h = parseHeader(data, p);
    if (!h) return new FrameError('header');
    const end = p + h.length;
    if (exact ? end + TAG_BYTES !== data.length : end + TAG_BYTES > data.length) return new FrameError('short', h.kid);
    const fk = await lookup(h.kid);
    if (!fk) return new FrameError('unknown_kid', h.kid);
    try {
      const plain = await sframeOpen(fk, h.ctr, data.subarray(0, end), data.subarray(end));
      return { data: concatBytes(data.subarray(0, p), plain), kid: h.kid, ctr: h.ctr };
    } catch {
      return new FrameError('auth', h.kid);
    }
  };
  const first = await attempt(Math.min(nominal, data.length), false);
  if (!(first instanceof FrameError)) return first;
  firstError = first;
  // A frame shorter than its prefix: header and tag fill it to the end.
  if (data.length <= nominal + 1 + 16 + TAG_BYTES) {
    for (let p = Math.min(nominal, data.length) - 1; p >= 0; p--) {
      const r = await attempt(p, true);
      if (!(r instanceof FrameError)) return r;
    }
  }
  throw firstError;
}

/** A sender's current frame key and counter: one counter per key, shared by all sources and
 *  simulcast layers. */
export class SendKey {
  constructor() {
    this.kid = null;
    this.ctr = 0n;
    this._fk = null;
  }

  /** Switches to `(kid, baseKey)`; its counter starts at 0. */
  async set(kid, baseKey) {
    const fk = await frameKey(baseKey, kid);
    this._fk = fk;
    this.kid = fk.kid;
    this.ctr = 0n;
  }

  /** Whether the key's counter is near its end (a new key is due). */
  get exhausted() {
    return this.ctr >= CTR_REKEY_AT;
  }

  /** Encrypts one frame: {data, kid, ctr}. Throws without a key or with the counter used up
   *  (a frame is then dropped, never sent in clear). */
  async encrypt(codec, data) {
    const fk = this._fk;
    if (!fk) throw new E2eeError('no_key', 'no media key yet');
    if (this.ctr >= CTR_LIMIT) throw new E2eeError('ctr_exhausted', 'the frame counter of this key is used up');
    const ctr = this.ctr;
    this.ctr += 1n;
    return { data: await encryptFrame(fk, ctr, codec, data), kid: fk.kid, ctr };
  }
}

/** The keys this page holds for other senders, by KID: the two latest of each sender. */
export class ReceiveKeys {
  constructor(perSender = KEYS_PER_SENDER) {
    this.perSender = perSender;
    /** KID -> {participant, kid, frameKey: Promise} */
    this.byKid = new Map();
    /** participant -> KIDs, oldest first */
    this.bySender = new Map();
  }

  /**
   * Holds `(kid, baseKey)` of `participant`. Returns {added, dropped: [kid]}; a KID already
   * held for another participant is refused (`added: false, refused: true`), one already held
   * for this participant changes nothing.
   */
  add(participant, kid, baseKey) {
    const k = BigInt(kid);
    const held = this.byKid.get(k);
    if (held) return { added: false, refused: held.participant !== participant, dropped: [] };
    const entry = { participant, kid: k, frameKey: frameKey(baseKey, k) };
    // A key that does not derive (never, with 16 bytes) is simply never found usable.
    entry.frameKey.catch(() => {});
    this.byKid.set(k, entry);
    const list = this.bySender.get(participant) ?? [];
    list.push(k);
    const dropped = list.splice(0, Math.max(0, list.length - this.perSender));
    for (const d of dropped) this.byKid.delete(d);
    this.bySender.set(participant, list);
    return { added: true, refused: false, dropped };
  }

  /** Forgets the keys `kids` of `participant` (a sender's older keys, or keys that went with a
   *  reloaded page). */
  drop(participant, kids) {
    const gone = new Set(kids.map((k) => BigInt(k)));
    const list = (this.bySender.get(participant) ?? []).filter((k) => {
      if (!gone.has(k)) return true;
      this.byKid.delete(k);
      return false;
    });
    if (list.length) this.bySender.set(participant, list);
    else this.bySender.delete(participant);
  }

  /** Forgets every key of `participant`; returns their KIDs. */
  remove(participant) {
    const list = this.bySender.get(participant) ?? [];
    for (const k of list) this.byKid.delete(k);
    this.bySender.delete(participant);
    return list;
  }

  /** Who a KID belongs to, or null. */
  owner(kid) {
    return this.byKid.get(BigInt(kid))?.participant ?? null;
  }

  kids(participant) {
    return [...(this.bySender.get(participant) ?? [])];
  }

  /** Decrypts one frame: {data, kid, ctr, participant}; throws a FrameError. */
  async decrypt(codec, data) {
    const r = await decryptFrame((kid) => this.byKid.get(kid)?.frameKey ?? null, codec, data);
    return { ...r, participant: this.owner(r.kid) };
  }
}

// ---- chat -----------------------------------------------------------------------------------

const CHAT_INFO = 'ting e2ee 1 chat';

async function chatKey(baseKey) {
  const bytes = await hkdf(baseKey, new Uint8Array(0), CHAT_INFO, 16);
  return subtle().importKey('raw', bytes, 'AES-GCM', false, ['encrypt', 'decrypt']);
}

/** `KID (decimal) "." b64url(nonce || AES-128-GCM(chat_key, nonce, message, aad))`. */
export async function encryptChat(kid, baseKey, text) {
  const nonce = randomBytes(NONCE_BYTES);
  const sealed = new Uint8Array(await subtle().encrypt(
    { name: 'AES-GCM', iv: nonce, additionalData: utf8(CHAT_INFO), tagLength: 128 }, await chatKey(baseKey), utf8(text)));
  return `${BigInt(kid).toString(10)}.${b64urlEncode(concatBytes(nonce, sealed))}`;
}

/** The KID an encrypted chat text names, or null if it is not of that form. */
export function chatKid(text) {
  const m = /^(\d{1,20})\.([A-Za-z0-9_-]+)$/.exec(String(text ?? ''));
  return m ? BigInt(m[1]) : null;
}

/** The message of an encrypted chat text under `baseKey`; throws an E2eeError if it does not
 *  decrypt. */
export async function decryptChat(baseKey, text) {
  const m = /^(\d{1,20})\.([A-Za-z0-9_-]+)$/.exec(String(text ?? ''));
  const bytes = m ? b64urlDecode(m[2]) : null;
  if (!bytes || bytes.length < NONCE_BYTES + TAG_BYTES) throw new E2eeError('bad_chat', 'not an encrypted chat message');
  try {
    const plain = await subtle().decrypt(
      { name: 'AES-GCM', iv: bytes.subarray(0, NONCE_BYTES), additionalData: utf8(CHAT_INFO), tagLength: 128 },
      await chatKey(baseKey), bytes.subarray(NONCE_BYTES));
    return decoder.decode(plain);
  } catch {
    throw new E2eeError('bad_chat', 'an encrypted chat message that does not decrypt with its key');
  }
}

// ---- the verification code ----------------------------------------------------------------

/** The code everyone compares aloud: the first 24 bits of SHA-256("ting e2ee 1 verify" ||
 *  code_id || sorted pubs), mod 10^8, as two groups of four digits. */
export async function verificationCode(codeId, pubs) {
  const sorted = [...pubs].sort(compareBytes);
  const digest = new Uint8Array(await subtle().digest('SHA-256', concatBytes(utf8('ting e2ee 1 verify'), codeId, ...sorted)));
  const n = ((digest[0] << 16) | (digest[1] << 8) | digest[2]) % 100_000_000;
  const digits = String(n).padStart(8, '0');
  return `${digits.slice(0, 4)} ${digits.slice(4)}`;
}

// ---- one page's E2EE session ------------------------------------------------------------------

/**
 * The key agreement and key distribution of one page in one meeting (docs/e2ee.md). Fed with
 * what the server says (`welcome`, `joined`, `announced`, `left`, `back`, `keyFrom`), it
 * decides which media keys to hand to whom and says so through its callbacks:
 *
 * - `send(entries)`: an `e2ee_keys` message to send, entries `{to, data}` (at most
 *   KEYS_PER_MESSAGE, one per recipient), in order;
 * - `post(message)`: a message for the transform worker: `{type: 'sendKey', kid, baseKey}`
 *   (encrypt with this key from now on), `{type: 'addKey', participant, kid, baseKey}`,
 *   `{type: 'dropKeys', participant, kids}`;
 * - `changed(what, ids)`: something shown changed: `peers` (whose state), `code`, `keys`;
 * - `failed(error)`: something this session started by itself (a re-key) failed.
 *
 * Everything it is told is handled in order, one thing at a time, however long the
 * cryptography takes. Time goes through `timers` and chance through `random`, so tests can
 * drive both.
 */
export class E2eeSession {
  constructor({
    linkKey, room, send, post, changed = () => {}, failed = () => {}, random = Math.random, timers = globalThis,
  }) {
    this.room = room;
    this._linkKey = linkKey;
    this._send = send;
    this._post = post;
    this._changed = changed;
    this._failed = failed;
    this._random = random;
    this._timers = timers;
    this._queue = Promise.resolve();
    this._secrets = null;
    this.identity = null;
    /** Our announcement, once started. */
    this.announcement = null;
    /** Our current media key {kid, baseKey}, and the next one between a re-key and the
     *  switch to it. */
    this.current = null;
    this.next = null;
    /** Our recent keys, newest last (our own chat comes back to us under them). */
    this._own = [];
    /** Our participant id (set from `welcome`): our own chat comes back from it. */
    this.selfId = null;
    /** participant id -> {id, announcement, pub, status: 'none'|'invalid'|'ok', why, pair,
     *  keys: [{kid, baseKey}] oldest first} */
    this.peers = new Map();
    /** Key messages that could not be read yet, by sender (their announcement may come
     *  after them): tried again when it does. */
    this._unread = new Map();
    /** Every KID this page has held for someone, as decimal strings (for tests: a removed
     *  page's list is what the others' new keys must not be in). */
    this.everHeld = new Set();
    /** The verification code, two groups of four digits, once known. */
    this.code = null;
    this._rekeyTimer = null;
    this._switchTimer = null;
    this._keyWaiters = new Set();
    this._closed = false;
  }

  /** Makes this page's key pair, announcement and first media key; resolves with the
   *  announcement. */
  start() {
    return this._run(async () => {
      if (this.announcement) return this.announcement;
      this._secrets = await meetingSecrets(this._linkKey);
      this.identity = await makeIdentity();
      this.announcement = await makeAnnouncement(this._secrets, this.room, this.identity.pub);
      this._useKey(newMediaKey());
      await this._updateCode();
      return this.announcement;
    });
  }

  /** The participants of a `welcome` ([{id, e2ee}]), ours or after a resume: everyone in the
   *  meeting now. Those who were here before and are not any more left meanwhile. */
  welcome(participants) {
    return this._run(async () => {
      const now = new Map(participants.map((p) => [p.id, p.e2ee ?? null]));
      let someoneLeft = false;
      for (const id of [...this.peers.keys()]) {
        if (!now.has(id)) {
          this._forget(id);
          someoneLeft = true;
        }
      }
      const fresh = [];
      for (const [id, announcement] of now) {
        const known = this.peers.get(id);
        if (!known || known.announcement !== announcement) await this._setPeer(id, announcement);
        fresh.push(id);
      }
      await this._updateCode();
      this._changed('peers', null);
      // Whoever joined while we were away never got our key; whoever was here may have
      // missed a re-key. Everyone gets what we use.
      await this._giveKeys(fresh);
      if (someoneLeft) this._scheduleRekey();
    });
  }

  /** `participant_joined`: their announcement, and our current key for them. */
  joined(id, announcement) {
    return this._run(async () => {
      await this._setPeer(id, announcement ?? null);
      await this._updateCode();
      this._changed('peers', [id]);
      await this._giveKeys([id]);
    });
  }

  /** `participant_e2ee`: someone's page reloaded with a new key pair. Their old keys went
   *  with the old page; they get ours again. */
  announced(id, announcement) {
    return this._run(async () => {
      await this._setPeer(id, announcement ?? null);
      await this._updateCode();
      this._changed('peers', [id]);
      await this._giveKeys([id]);
    });
  }

  /** `participant_left`, any reason: forget them, and re-key soon. */
  left(id) {
    return this._run(async () => {
      if (!this.peers.has(id)) return;
      this._forget(id);
      await this._updateCode();
      this._changed('peers', [id]);
      this._scheduleRekey();
    });
  }

  /** Someone's connection came back (`participant_connection` from `reconnecting`): key
   *  messages sent meanwhile were lost, so they get what we use again. */
  back(id) {
    return this._run(() => this._giveKeys([id]));
  }

  /** `e2ee_key {from, data}`. */
  keyFrom(from, data) {
    return this._run(() => this._takeKey(from, data, true));
  }

  /** Our current key, encrypting `text` for the chat. */
  encryptChat(text) {
    return this._run(() => encryptChat(this.current.kid, this.current.baseKey, text));
  }

  /**
   * The message of an encrypted chat text from `from` (possibly ourselves): null if this page
   * does not hold the key it names for that sender (it was sent before we joined, or under a
   * key never given to us). A key not held yet is waited for a little: the sender's key
   * message may still be on its way.
   */
  async decryptChat(from, text) {
    const kid = chatKid(text);
    if (kid === null) return null;
    let baseKey = this._chatKey(from, kid);
    if (!baseKey) baseKey = await this._waitForKey(from, kid, CHAT_KEY_WAIT_MS);
    if (!baseKey) return null;
    try {
      return await decryptChat(baseKey, text);
    } catch {
      return null;
    }
  }

  /** `none` (no announcement: not encrypting), `invalid` (an announcement this page cannot
   *  verify: another meeting key, or forged), `ok`; null for someone unknown. */
  status(id) {
    return this.peers.get(id)?.status ?? null;
  }

  /** The KIDs held for each participant: {id: [decimal]}. */
  heldKids() {
    const out = {};
    for (const [id, p] of this.peers) out[id] = p.keys.map((k) => k.kid.toString());
    return out;
  }

  close() {
    this._closed = true;
    this._timers.clearTimeout(this._rekeyTimer);
    this._timers.clearTimeout(this._switchTimer);
    for (const w of this._keyWaiters) w.resolve(null);
    this._keyWaiters.clear();
  }

  // ---- inside ---------------------------------------------------------------------------------

  _run(fn) {
    const result = this._queue.then(() => (this._closed ? undefined : fn()));
    // One failure must not stop everything after it.
    this._queue = result.catch(() => {});
    return result;
  }

  async _setPeer(id, announcement) {
    // Keys that came under another announcement went with the page that made it.
    const before = this.peers.get(id);
    if (before?.keys.length) this._post({ type: 'dropKeys', participant: id, kids: before.keys.map((k) => k.kid) });
    const peer = { id, announcement, pub: null, status: 'none', why: null, pair: null, keys: [] };
    this.peers.set(id, peer);
    if (!announcement) return;
    const pub = await verifyAnnouncement(this._secrets, this.room, announcement);
    if (!pub) {
      peer.status = 'invalid';
      peer.why = 'their announcement does not verify with this meeting key';
      return;
    }
    // The same public key for two people (a replayed announcement) would let keys be passed
    // off as someone else's.
    const twice = equalBytes(pub, this.identity.pub)
      || [...this.peers.values()].some((p) => p !== peer && p.pub && equalBytes(p.pub, pub));
    if (twice) {
      peer.status = 'invalid';
      peer.why = 'their public key is someone else\'s';
      return;
    }
    peer.pub = pub;
    peer.status = 'ok';
    peer.pair = pairKey(this.identity, pub, this._secrets.pairSalt);
    peer.pair.catch(() => {});
    const unread = this._unread.get(id) ?? [];
    this._unread.delete(id);
    for (const data of unread) await this._takeKey(id, data, false);
  }

  _forget(id) {
    const peer = this.peers.get(id);
    this.peers.delete(id);
    this._unread.delete(id);
    if (peer?.keys.length) this._post({ type: 'dropKeys', participant: id, kids: peer.keys.map((k) => k.kid) });
  }

  /** Keeps a key message this page cannot read yet, a few per sender and senders. */
  _keepUnread(from, data) {
    const list = this._unread.get(from) ?? [];
    this._unread.delete(from);
    list.push(data);
    if (list.length > PENDING_KEY_MESSAGES) list.shift();
    this._unread.set(from, list);
    while (this._unread.size > KEYS_PER_MESSAGE) this._unread.delete(this._unread.keys().next().value);
  }

  async _takeKey(from, data, keepIfUnreadable) {
    const peer = this.peers.get(from);
    if (!peer || peer.status !== 'ok') {
      if (keepIfUnreadable) this._keepUnread(from, data);
      return;
    }
    let opened;
    try {
      opened = await openKeyMessage(await peer.pair, peer.pub, this.identity.pub, data);
    } catch {
      if (keepIfUnreadable) this._keepUnread(from, data);
      return;
    }
    if (this.peers.get(from) !== peer) return;
    const { kid, baseKey } = opened;
    if (peer.keys.some((k) => k.kid === kid)) return;
    // A KID is one sender's: one already held for another participant (or our own) is
    // refused.
    const ownedElsewhere = [...this.peers.values()].some((p) => p !== peer && p.keys.some((k) => k.kid === kid))
      || this._own.some((k) => k.kid === kid);
    if (ownedElsewhere) return;
    peer.keys.push({ kid, baseKey });
    const dropped = peer.keys.splice(0, Math.max(0, peer.keys.length - KEYS_PER_SENDER));
    this.everHeld.add(kid.toString());
    this._post({ type: 'addKey', participant: from, kid, baseKey });
    if (dropped.length) this._post({ type: 'dropKeys', participant: from, kids: dropped.map((k) => k.kid) });
    for (const w of [...this._keyWaiters]) {
      if (w.from === from && w.kid === kid) {
        this._keyWaiters.delete(w);
        w.resolve(baseKey);
      }
    }
    this._changed('keys', [from]);
  }

  /** Sends our current key, and the next one if a switch is coming, to each of `ids` whose
   *  announcement verified. */
  async _giveKeys(ids) {
    for (const key of [this.current, this.next]) if (key) await this._giveKey(key, ids);
  }

  /** Sends `key` to each of `ids` whose announcement verified. The server delivers one key
   *  per recipient of a message (docs/protocol.md): another key for the same people goes in
   *  another message, after this one. */
  async _giveKey(key, ids) {
    const entries = [];
    for (const id of ids) {
      const peer = this.peers.get(id);
      if (!peer || peer.status !== 'ok') continue;
      entries.push({ to: id, data: await sealKeyMessage(await peer.pair, this.identity.pub, peer.pub, key.kid, key.baseKey) });
    }
    for (let i = 0; i < entries.length; i += KEYS_PER_MESSAGE) this._send(entries.slice(i, i + KEYS_PER_MESSAGE));
  }

  /** Keeps one of our keys for reading our own chat back. */
  _remember(key) {
    if (this._own.includes(key)) return;
    this._own.push(key);
    if (this._own.length > KEYS_PER_SENDER + 1) this._own.shift();
  }

  _useKey(key) {
    this.current = key;
    this._remember(key);
    this._post({ type: 'sendKey', kid: key.kid, baseKey: key.baseKey });
    this._changed('keys', null);
  }

  /** Someone left: a new key after a short random delay (one for departures close
   *  together), handed to everyone present, used a second later. */
  _scheduleRekey() {
    if (this._rekeyTimer !== null || this._closed) return;
    const delay = REKEY_DELAY_MIN_MS + this._random() * (REKEY_DELAY_MAX_MS - REKEY_DELAY_MIN_MS);
    this._rekeyTimer = this._timers.setTimeout(() => {
      this._rekeyTimer = null;
      this.rekey().catch((e) => this._failed(e));
    }, delay);
  }

  /** Draws a new key now, hands it out and switches to it SWITCH_DELAY_MS later. Also when
   *  the counter of the current key nears its end. */
  rekey() {
    return this._run(async () => {
      const key = newMediaKey();
      this.next = key;
      this._remember(key);
      await this._giveKey(key, [...this.peers.keys()]);
      this._changed('keys', null);
      this._timers.clearTimeout(this._switchTimer);
      this._switchTimer = this._timers.setTimeout(() => {
        this._switchTimer = null;
        this._run(async () => {
          if (this.next !== key) return;
          this.next = null;
          this._useKey(key);
        }).catch((e) => this._failed(e));
      }, SWITCH_DELAY_MS);
    });
  }

  _chatKey(from, kid) {
    if (from === null || from === undefined) return null;
    const own = this._own.find((k) => k.kid === kid);
    if (own && this._isSelf(from)) return own.baseKey;
    return this.peers.get(from)?.keys.find((k) => k.kid === kid)?.baseKey ?? null;
  }

  _isSelf(from) {
    return from === this.selfId;
  }

  _waitForKey(from, kid, ms) {
    return new Promise((resolve) => {
      const w = { from, kid, resolve: null };
      const timer = this._timers.setTimeout(() => {
        this._keyWaiters.delete(w);
        resolve(null);
      }, ms);
      w.resolve = (v) => {
        this._timers.clearTimeout(timer);
        resolve(v);
      };
      this._keyWaiters.add(w);
    });
  }

  async _updateCode() {
    const pubs = [this.identity.pub];
    for (const p of this.peers.values()) if (p.status === 'ok') pubs.push(p.pub);
    const code = await verificationCode(this._secrets.codeId, pubs);
    if (code !== this.code) {
      this.code = code;
      this._changed('code', null);
    }
  }
}
