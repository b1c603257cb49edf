#!/usr/bin/env node
// Unit tests of the web client's end-to-end encryption (crates/ting-server/web/e2ee.js,
// docs/e2ee.md): the frame format, key derivation, announcements, key messages, chat, the
// verification code and one page's key distribution. No browser, no server:
//
//   node --test tests/browser/e2ee-frame.test.mjs          (from the repository root)
//
// Known answers come from RFC 9605's own test vectors (Appendix C: the header encodings and
// the AES_128_GCM_SHA256_128 encryption), and the rest is checked against node:crypto's
// HKDF and AES-GCM, an implementation independent of the WebCrypto calls in e2ee.js.

import assert from 'node:assert/strict';
import { createCipheriv, createDecipheriv, hkdfSync } from 'node:crypto';
import { describe, it } from 'node:test';
import {
  b64urlDecode, b64urlEncode, bigEndian, clearPrefixLength, concatBytes, decryptChat, decryptFrame,
  E2eeSession, encodeHeader, encryptChat, encryptFrame, FrameError, frameKey, fromHex, generateLinkKey,
  KEYS_PER_SENDER, linkFragment, makeAnnouncement, makeIdentity, meetingSecrets, newMediaKey, openKeyMessage,
  pairKey, parseHeader, parseLinkKey, ReceiveKeys, sealKeyMessage, SendKey, sframeNonce, sframeSecrets,
  sframeSeal, toHex, verificationCode, verifyAnnouncement,
} from '../../crates/ting-server/web/e2ee.js';

const bytes = (...b) => Uint8Array.from(b);
/** An encoded VP8 keyframe: frame tag with bit 0 clear, start code, 640x360, then data. */
function vp8Keyframe(n = 200) {
  const f = new Uint8Array(n);
  f.set([0x50, 0x42, 0x00, 0x9d, 0x01, 0x2a, 0x80, 0x02, 0x68, 0x01]);
  for (let i = 10; i < n; i++) f[i] = (i * 37) & 0xff;
  return f;
}
function vp8Delta(n = 120) {
  const f = new Uint8Array(n);
  f.set([0x31, 0x07, 0x00]);
  for (let i = 3; i < n; i++) f[i] = (i * 11 + 5) & 0xff;
  return f;
}
function opusFrame(n = 60) {
  const f = new Uint8Array(n);
  f[0] = 0x78;
  for (let i = 1; i < n; i++) f[i] = (i * 7) & 0xff;
  return f;
}
async function keyOf(kid = 0x0123456789abn) {
  const baseKey = globalThis.crypto.getRandomValues(new Uint8Array(16));
  return { kid, baseKey, fk: await frameKey(baseKey, kid) };
}

describe('base64url and the link key', () => {
  it('round-trips and refuses what is not canonical', () => {
    for (let n = 0; n < 40; n++) {
      const b = globalThis.crypto.getRandomValues(new Uint8Array(n));
      const text = b64urlEncode(b);
      assert.equal(text, Buffer.from(b).toString('base64url'));
      assert.deepEqual(b64urlDecode(text), b);
    }
    assert.equal(b64urlDecode('ab+c'), null, 'not the URL alphabet');
    assert.equal(b64urlDecode('abcde'), null, 'a length no encoding has');
    assert.equal(b64urlDecode('AB'), null, 'spare bits set');
    assert.equal(b64urlDecode('AA=='), null, 'padding');
  });

  it('reads #key= and refuses a malformed key', () => {
    const key = generateLinkKey();
    assert.equal(key.length, 32);
    const fragment = `#${linkFragment(key)}`;
    assert.match(fragment, /^#key=[A-Za-z0-9_-]{43}$/);
    assert.deepEqual(parseLinkKey(fragment), key);
    assert.deepEqual(parseLinkKey(`other=1&${linkFragment(key)}`), key);
    assert.equal(parseLinkKey(''), null);
    assert.equal(parseLinkKey('#'), null);
    assert.equal(parseLinkKey('#nothing=here'), null);
    for (const bad of ['#key=', `#key=${'A'.repeat(42)}`, `#key=${'A'.repeat(44)}`, `#key=${'A'.repeat(42)}+`,
      `#key=${'A'.repeat(42)}B`]) {
      assert.throws(() => parseLinkKey(bad), (e) => e.code === 'e2ee_key', bad);
    }
  });
});

describe('RFC 9605 known answers (cipher suite 0x0004)', () => {
  // RFC 9605, Appendix C.4, AES_128_GCM_SHA256_128.
  const v = {
    kid: 0x123n,
    ctr: 0x4567n,
    baseKey: fromHex('000102030405060708090a0b0c0d0e0f'),
    key: 'd34f547f4ca4f9a7447006fe7fcbf768',
    salt: '75234edefe07819026751816',
    metadata: fromHex('4945544620534672616d65205747'),
    nonce: '75234edefe07819026755d71',
    aad: '99012345674945544620534672616d65205747',
    pt: fromHex('64726166742d696574662d736672616d652d656e63'),
    ct: '9901234567b7412c2513a1b66dbb48841bbaf17f598751176ad847681a69c6d0b091c07018ce4adb34eb',
  };

  it('derives sframe_key and sframe_salt', async () => {
    const s = await sframeSecrets(v.baseKey, v.kid);
    assert.equal(toHex(s.key), v.key);
    assert.equal(toHex(s.salt), v.salt);
    assert.equal(toHex(sframeNonce(s.salt, v.ctr)), v.nonce);
  });

  it('encrypts to the RFC ciphertext (header || metadata as associated data)', async () => {
    const header = encodeHeader(v.kid, v.ctr);
    assert.equal(toHex(concatBytes(header, v.metadata)), v.aad);
    const fk = await frameKey(v.baseKey, v.kid);
    const sealed = await sframeSeal(fk, v.ctr, concatBytes(header, v.metadata), v.pt);
    assert.equal(toHex(concatBytes(header, sealed)), v.ct);
  });

  it('encodes and parses the RFC header vectors', () => {
    // A selection of RFC 9605, Appendix C.2, from KID and CTR 0 to 64-bit values.
    const vectors = [
      [0x0n, 0x0n, '00'], [0x0n, 0x1n, '01'], [0x0n, 0xffn, '08ff'], [0x0n, 0x100n, '090100'],
      [0x0n, 0xffffn, '09ffff'], [0x0n, 0x1000000n, '0b01000000'], [0x0n, 0xffffffffffffffn, '0effffffffffffff'],
      [0x1n, 0xffffn, '19ffff'], [0x1n, 0x10000000000n, '1d010000000000'], [0xffn, 0x1n, '81ff'],
      [0xffn, 0xffffffffn, '8bffffffffff'], [0xffn, 0x100000000000000n, '8fff0100000000000000'],
      [0x100n, 0x10000n, '9a0100010000'], [0xffffn, 0xffn, '98ffffff'],
      [0xffffn, 0xffffffffffffffffn, '9fffffffffffffffffffff'], [0x10000n, 0xffffffn, 'aa010000ffffff'],
      [0xffffffn, 0x100n, 'a9ffffff0100'], [0x1000000n, 0x0n, 'b001000000'],
      [0x100000000n, 0x1n, 'c10100000000'], [0xffffffffffn, 0x10000n, 'caffffffffff010000'],
      [0x10000000000n, 0xffffffffffffffffn, 'df010000000000ffffffffffffffff'],
      [0xffffffffffffn, 0xffffffn, 'daffffffffffffffffff'], [0x1000000000000n, 0x100n, 'e9010000000000000100'],
      [0xffffffffffffffn, 0x0n, 'e0ffffffffffffff'], [0x100000000000000n, 0xffffn, 'f90100000000000000ffff'],
      [0xffffffffffffffffn, 0x1n, 'f1ffffffffffffffff'],
    ];
    for (const [kid, ctr, hex] of vectors) {
      assert.equal(toHex(encodeHeader(kid, ctr)), hex, `kid ${kid} ctr ${ctr}`);
      const parsed = parseHeader(fromHex(`aabbcc${hex}dd`), 3);
      assert.deepEqual(parsed, { kid, ctr, length: hex.length / 2 }, hex);
    }
    assert.equal(parseHeader(fromHex('9901'), 0), null, 'a header cut short');
    assert.throws(() => encodeHeader(1n << 64n, 0));
  });
});

describe('key derivation against node:crypto', () => {
  it('matches hkdfSync and AES-128-GCM for random keys and KIDs', async () => {
    for (let i = 0; i < 5; i++) {
      const { kid, baseKey, fk } = await keyOf(BigInt(Math.floor(Math.random() * 2 ** 48)));
      const suffix = Buffer.concat([Buffer.from(bigEndian(kid, 8)), Buffer.from([0x00, 0x04])]);
      const key = Buffer.from(hkdfSync('sha256', baseKey, Buffer.alloc(0), Buffer.concat([Buffer.from('SFrame 1.0 Secret key '), suffix]), 16));
      const salt = Buffer.from(hkdfSync('sha256', baseKey, Buffer.alloc(0), Buffer.concat([Buffer.from('SFrame 1.0 Secret salt '), suffix]), 12));
      const s = await sframeSecrets(baseKey, kid);
      assert.equal(toHex(s.key), key.toString('hex'));
      assert.equal(toHex(s.salt), salt.toString('hex'));
      // The frame format, decrypted by node:crypto.
      const frame = vp8Keyframe(300);
      const ctr = BigInt(1000 + i * 77777);
      const enc = await encryptFrame(fk, ctr, 'vp8', frame);
      const header = encodeHeader(kid, ctr);
      const aadLength = 10 + header.length;
      const nonce = Buffer.from(salt);
      const c = Buffer.from(bigEndian(ctr, 12));
      for (let j = 0; j < 12; j++) nonce[j] ^= c[j];
      const d = createDecipheriv('aes-128-gcm', key, nonce);
      d.setAAD(enc.subarray(0, aadLength));
      d.setAuthTag(enc.subarray(enc.length - 16));
      const plain = Buffer.concat([d.update(enc.subarray(aadLength, enc.length - 16)), d.final()]);
      assert.deepEqual(new Uint8Array(plain), frame.subarray(10));
      // And the other way: node:crypto encrypts, e2ee.js decrypts.
      const e = createCipheriv('aes-128-gcm', key, nonce);
      e.setAAD(Buffer.concat([Buffer.from(frame.subarray(0, 10)), Buffer.from(header)]));
      const sealed = Buffer.concat([e.update(frame.subarray(10)), e.final(), e.getAuthTag()]);
      const theirs = concatBytes(frame.subarray(0, 10), header, sealed);
      const back = await decryptFrame((k) => (k === kid ? fk : null), 'vp8', theirs);
      assert.deepEqual(back.data, frame);
    }
  });
});

describe('the clear prefix', () => {
  it('is 10 bytes of a VP8 keyframe, 3 of a delta frame, 1 of Opus', () => {
    assert.equal(clearPrefixLength('vp8', vp8Keyframe()), 10);
    assert.equal(clearPrefixLength('vp8', vp8Delta()), 3);
    assert.equal(clearPrefixLength('opus', opusFrame()), 1);
  });

  it('is all of a frame shorter than it', () => {
    assert.equal(clearPrefixLength('vp8', vp8Keyframe(200).subarray(0, 6)), 6);
    assert.equal(clearPrefixLength('vp8', bytes(0x31, 0x07)), 2);
    assert.equal(clearPrefixLength('vp8', new Uint8Array(0)), 0);
    assert.equal(clearPrefixLength('opus', new Uint8Array(0)), 0);
    assert.throws(() => clearPrefixLength('h264', bytes(1, 2, 3)));
  });

  it('stays in clear, followed by the SFrame header', async () => {
    const { kid, fk } = await keyOf(0xabcdef123456n);
    for (const [codec, frame, p] of [['vp8', vp8Keyframe(), 10], ['vp8', vp8Delta(), 3], ['opus', opusFrame(), 1]]) {
      const enc = await encryptFrame(fk, 77n, codec, frame);
      assert.deepEqual(enc.subarray(0, p), frame.subarray(0, p), `${codec} prefix`);
      const h = parseHeader(enc, p);
      assert.equal(h.kid, kid);
      assert.equal(h.ctr, 77n);
      assert.equal(enc.length, frame.length + h.length + 16);
      // The rest is not the plaintext.
      assert.notDeepEqual(enc.subarray(p + h.length, p + h.length + 16), frame.subarray(p, p + 16));
    }
  });
});

describe('frames', () => {
  it('round-trip for each codec, short frames included', async () => {
    const { kid, fk } = await keyOf(9n);
    const lookup = (k) => (k === kid ? fk : null);
    const frames = [
      ['vp8', vp8Keyframe()], ['vp8', vp8Delta()], ['opus', opusFrame()],
      ['vp8', vp8Keyframe(200).subarray(0, 10)], ['vp8', vp8Keyframe(200).subarray(0, 4)], ['vp8', bytes(0x31, 0x07)],
      ['vp8', bytes(0x31)], ['vp8', new Uint8Array(0)], ['opus', bytes(0x78)], ['opus', new Uint8Array(0)],
    ];
    let ctr = 0n;
    for (const [codec, frame] of frames) {
      const enc = await encryptFrame(fk, ctr, codec, frame);
      const dec = await decryptFrame(lookup, codec, enc);
      assert.deepEqual(dec.data, frame, `${codec} frame of ${frame.length} bytes`);
      assert.equal(dec.kid, kid);
      assert.equal(dec.ctr, ctr);
      ctr += 12345n;
    }
  });

  it('count up per frame, one counter for all sources of a sender', async () => {
    const s = new SendKey();
    const { kid, baseKey } = newMediaKey();
    await s.set(kid, baseKey);
    const seen = [];
    for (const [codec, f] of [['opus', opusFrame()], ['vp8', vp8Keyframe()], ['vp8', vp8Delta()], ['opus', opusFrame()]]) {
      const out = await s.encrypt(codec, f);
      const h = parseHeader(out.data, clearPrefixLength(codec, f));
      assert.equal(h.kid, kid);
      seen.push(h.ctr);
    }
    assert.deepEqual(seen, [0n, 1n, 2n, 3n]);
    // A new key starts at 0 again.
    const next = newMediaKey();
    await s.set(next.kid, next.baseKey);
    const out = await s.encrypt('opus', opusFrame());
    assert.equal(out.ctr, 0n);
    assert.equal(out.kid, next.kid);
  });

  it('never reuse a counter past the limit', async () => {
    const s = new SendKey();
    const { kid, baseKey } = newMediaKey();
    await s.set(kid, baseKey);
    s.ctr = (1n << 40n) - 1n;
    assert.equal(s.exhausted, true);
    await s.encrypt('opus', opusFrame());
    await assert.rejects(s.encrypt('opus', opusFrame()), (e) => e.code === 'ctr_exhausted');
  });

  it('decrypt with the key their KID names', async () => {
    const r = new ReceiveKeys();
    const a = newMediaKey();
    const b = newMediaKey();
    r.add('alice', a.kid, a.baseKey);
    r.add('bob', b.kid, b.baseKey);
    const sa = new SendKey();
    await sa.set(a.kid, a.baseKey);
    const sb = new SendKey();
    await sb.set(b.kid, b.baseKey);
    const fa = await sa.encrypt('vp8', vp8Keyframe());
    const fb = await sb.encrypt('vp8', vp8Keyframe());
    assert.equal((await r.decrypt('vp8', fa.data)).participant, 'alice');
    assert.equal((await r.decrypt('vp8', fb.data)).participant, 'bob');
    // A KID one sender holds cannot be given to another.
    const again = r.add('mallory', a.kid, b.baseKey);
    assert.equal(again.added, false);
    assert.equal(again.refused, true);
    assert.equal(r.owner(a.kid), 'alice');
  });

  it('keep the two latest keys of a sender: old and new decrypt, the third-oldest is dropped', async () => {
    assert.equal(KEYS_PER_SENDER, 2);
    const r = new ReceiveKeys();
    const keys = [newMediaKey(), newMediaKey(), newMediaKey()];
    const frames = [];
    for (const k of keys) {
      const s = new SendKey();
      await s.set(k.kid, k.baseKey);
      frames.push((await s.encrypt('opus', opusFrame())).data);
    }
    r.add('alice', keys[0].kid, keys[0].baseKey);
    r.add('alice', keys[1].kid, keys[1].baseKey);
    assert.equal((await r.decrypt('opus', frames[0])).kid, keys[0].kid);
    assert.equal((await r.decrypt('opus', frames[1])).kid, keys[1].kid);
    const third = r.add('alice', keys[2].kid, keys[2].baseKey);
    assert.deepEqual(third.dropped, [keys[0].kid]);
    await assert.rejects(r.decrypt('opus', frames[0]), (e) => e instanceof FrameError && e.reason === 'unknown_kid');
    assert.equal((await r.decrypt('opus', frames[1])).kid, keys[1].kid);
    assert.equal((await r.decrypt('opus', frames[2])).kid, keys[2].kid);
    r.drop('alice', [keys[1].kid]);
    await assert.rejects(r.decrypt('opus', frames[1]), (e) => e.reason === 'unknown_kid');
    assert.deepEqual(r.remove('alice'), [keys[2].kid]);
    await assert.rejects(r.decrypt('opus', frames[2]), (e) => e.reason === 'unknown_kid');
  });

  it('are refused when tampered with, or under another key', async () => {
    const { kid, fk } = await keyOf(0x1234n);
    const lookup = (k) => (k === kid ? fk : null);
    const frame = vp8Keyframe();
    const enc = await encryptFrame(fk, 500n, 'vp8', frame);
    const flip = (i) => {
      const t = enc.slice();
      t[i] ^= 0x01 << (i % 7);
      return t;
    };
    // The prefix is clear but authenticated: a changed dimension byte fails.
    await assert.rejects(decryptFrame(lookup, 'vp8', flip(7)), (e) => e.reason === 'auth');
    // A changed header: another CTR (the last header byte) fails authentication.
    const headerLength = parseHeader(enc, 10).length;
    await assert.rejects(decryptFrame(lookup, 'vp8', flip(10 + headerLength - 1)), (e) => e.reason === 'auth');
    // Another KID in the header is one we do not hold.
    await assert.rejects(decryptFrame(lookup, 'vp8', flip(12)), (e) => e.reason === 'unknown_kid' || e.reason === 'auth');
    // The ciphertext and the tag.
    await assert.rejects(decryptFrame(lookup, 'vp8', flip(40)), (e) => e.reason === 'auth');
    await assert.rejects(decryptFrame(lookup, 'vp8', flip(enc.length - 1)), (e) => e.reason === 'auth');
    // Cut short.
    await assert.rejects(decryptFrame(lookup, 'vp8', enc.subarray(0, 20)), FrameError);
    // The same KID under another base key.
    const other = await keyOf(kid);
    await assert.rejects(decryptFrame((k) => (k === kid ? other.fk : null), 'vp8', enc), (e) => e.reason === 'auth');
    // A frame in clear, as a server might inject it, never passes.
    await assert.rejects(decryptFrame(lookup, 'vp8', frame), FrameError);
    await assert.rejects(decryptFrame(lookup, 'opus', opusFrame()), FrameError);
    await assert.rejects(decryptFrame(lookup, 'vp8', new Uint8Array(0)), (e) => e.reason === 'short');
  });
});

describe('announcements and key messages', () => {
  it('verify under the same link key and room only', async () => {
    const link = generateLinkKey();
    const secrets = await meetingSecrets(link);
    const id = await makeIdentity();
    const ann = await makeAnnouncement(secrets, 'room-1', id.pub);
    assert.ok(ann.length <= 256 && /^[A-Za-z0-9_.-]+$/.test(ann), ann);
    assert.deepEqual(await verifyAnnouncement(secrets, 'room-1', ann), id.pub);
    assert.equal(await verifyAnnouncement(await meetingSecrets(generateLinkKey()), 'room-1', ann), null, 'another link key');
    assert.equal(await verifyAnnouncement(secrets, 'room-2', ann), null, 'another room');
    const [pub, mac] = ann.split('.');
    const other = await makeIdentity();
    assert.equal(await verifyAnnouncement(secrets, 'room-1', `${b64urlEncode(other.pub)}.${mac}`), null, 'another key, same MAC');
    assert.equal(await verifyAnnouncement(secrets, 'room-1', `${pub}.${mac.slice(0, -2)}AA`), null);
    assert.equal(await verifyAnnouncement(secrets, 'room-1', 'garbage'), null);
    // The private key stays in the page.
    assert.equal(id.privateKey.extractable, false);
  });

  it('carry a media key to their recipient only', async () => {
    const secrets = await meetingSecrets(generateLinkKey());
    const [a, b, c] = [await makeIdentity(), await makeIdentity(), await makeIdentity()];
    const ab = await pairKey(a, b.pub, secrets.pairSalt);
    const ba = await pairKey(b, a.pub, secrets.pairSalt);
    const { kid, baseKey } = newMediaKey();
    const data = await sealKeyMessage(ab, a.pub, b.pub, kid, baseKey);
    assert.ok(data.length <= 256 && /^[A-Za-z0-9_-]+$/.test(data));
    const opened = await openKeyMessage(ba, a.pub, b.pub, data);
    assert.equal(opened.kid, kid);
    assert.deepEqual(opened.baseKey, baseKey);
    // C is not the recipient: its pair key with A is another, and it fails.
    const ca = await pairKey(c, a.pub, secrets.pairSalt);
    await assert.rejects(openKeyMessage(ca, a.pub, c.pub, data), (e) => e.code === 'bad_key_message');
    // Passed off as from someone else, or to someone else: the associated data differs.
    await assert.rejects(openKeyMessage(ba, c.pub, b.pub, data));
    await assert.rejects(openKeyMessage(ba, b.pub, a.pub, data));
    // The pair salt comes from the link key: another meeting's pair key fails too.
    const elsewhere = await pairKey(b, a.pub, (await meetingSecrets(generateLinkKey())).pairSalt);
    await assert.rejects(openKeyMessage(elsewhere, a.pub, b.pub, data));
  });
});

describe('chat', () => {
  it('round-trips under the sender key and fails under another', async () => {
    const { kid, baseKey } = newMediaKey();
    const text = await encryptChat(kid, baseKey, 'Hej! Grüße 👋 <b>');
    assert.match(text, /^\d+\.[A-Za-z0-9_-]+$/);
    assert.equal(text.split('.')[0], kid.toString());
    assert.equal(await decryptChat(baseKey, text), 'Hej! Grüße 👋 <b>');
    await assert.rejects(decryptChat(newMediaKey().baseKey, text), (e) => e.code === 'bad_chat');
    await assert.rejects(decryptChat(baseKey, `${text.slice(0, -2)}AA`));
    await assert.rejects(decryptChat(baseKey, 'plain text'));
    // The longest message fits into what the server allows encrypted chat (6x + 64).
    const long = '𝄞'.repeat(2000);
    assert.ok((await encryptChat(kid, baseKey, long)).length <= 6 * 2000 + 64);
  });
});

describe('the verification code', () => {
  it('is two groups of four digits, the same for the same set of keys in any order', async () => {
    const secrets = await meetingSecrets(generateLinkKey());
    const pubs = [];
    for (let i = 0; i < 4; i++) pubs.push((await makeIdentity()).pub);
    const code = await verificationCode(secrets.codeId, pubs);
    assert.match(code, /^\d{4} \d{4}$/);
    assert.equal(await verificationCode(secrets.codeId, [...pubs].reverse()), code);
    assert.notEqual(await verificationCode(secrets.codeId, pubs.slice(1)), code);
    const digest = await globalThis.crypto.subtle.digest('SHA-256',
      concatBytes(new TextEncoder().encode('ting e2ee 1 verify'), secrets.codeId, ...[...pubs].sort((x, y) => Buffer.compare(x, y))));
    const d = new Uint8Array(digest);
    const n = String(((d[0] << 16) | (d[1] << 8) | d[2]) % 1e8).padStart(8, '0');
    assert.equal(code, `${n.slice(0, 4)} ${n.slice(4)}`);
  });
});

// ---- E2eeSession: key distribution between pages, through a pretend server ------------------

/** Timers under the test's control. */
function fakeTimers() {
  let now = 0;
  let seq = 0;
  const due = new Map();
  return {
    setTimeout(fn, ms) {
      const id = ++seq;
      due.set(id, { at: now + ms, fn });
      return id;
    },
    clearTimeout(id) {
      due.delete(id);
    },
    /** Moves time on, running what falls due in order. */
    async advance(ms) {
      const until = now + ms;
      for (;;) {
        const next = [...due.entries()].filter(([, t]) => t.at <= until).sort((x, y) => x[1].at - y[1].at)[0];
        if (!next) break;
        due.delete(next[0]);
        now = next[1].at;
        next[1].fn();
        await settle();
      }
      now = until;
    },
  };
}

const settle = () => new Promise((r) => setTimeout(r, 20));

/** A room of sessions wired as the server would: keys relayed to their recipient. */
function room(name, timers) {
  const pages = new Map();
  /** Every entry any page sent: {from, to}. */
  const sent = [];
  const relay = (from) => (entries) => {
    // As the server does: at most 256 entries, one per recipient (docs/protocol.md).
    assert.ok(entries.length >= 1 && entries.length <= 256);
    assert.equal(new Set(entries.map((e) => e.to)).size, entries.length, 'one key per recipient a message');
    for (const { to, data } of entries) {
      sent.push({ from, to });
      const page = pages.get(to);
      page?.received.push({ from, data });
      page?.session.keyFrom(from, data);
    }
  };
  return {
    pages,
    sent,
    async join(id, linkKey, { announce = true } = {}) {
      const page = { id, worker: [], received: [], changes: [] };
      page.session = new E2eeSession({
        linkKey, room: name, timers, random: () => 0.5,
        send: relay(id), post: (m) => page.worker.push(m), changed: (what) => page.changes.push(what),
      });
      const ann = await page.session.start();
      page.session.selfId = id;
      const others = [...pages.values()];
      pages.set(id, page);
      await page.session.welcome(others.map((o) => ({ id: o.id, e2ee: o.announce ? o.session.announcement : null })));
      page.announce = announce;
      for (const o of others) await o.session.joined(id, announce ? ann : null);
      await settle();
      return page;
    },
    async leave(id) {
      pages.delete(id);
      for (const o of pages.values()) await o.session.left(id);
    },
  };
}

describe('key distribution (E2eeSession)', () => {
  it('gives each verified participant the current key; other link keys get nothing', async () => {
    const timers = fakeTimers();
    const link = generateLinkKey();
    const r = room('case-1', timers);
    const a = await r.join('a', link);
    const b = await r.join('b', link);
    const c = await r.join('c', link);
    const d = await r.join('d', generateLinkKey());
    await settle();
    for (const [p, others] of [[a, [b, c]], [b, [a, c]], [c, [a, b]]]) {
      for (const o of others) {
        assert.deepEqual(p.session.heldKids()[o.id], [o.session.current.kid.toString()], `${p.id} holds ${o.id}'s key`);
        assert.equal(p.session.status(o.id), 'ok');
      }
      assert.equal(p.session.status('d'), 'invalid');
      assert.deepEqual(p.session.heldKids().d, []);
    }
    assert.ok(Object.values(d.session.heldKids()).every((k) => k.length === 0), 'd holds no key');
    assert.equal(d.received.length, 0, 'nobody sent d a key');
    // The worker was told to encrypt with the current key and to hold the others'.
    assert.ok(a.worker.some((m) => m.type === 'sendKey' && m.kid === a.session.current.kid));
    assert.ok(a.worker.some((m) => m.type === 'addKey' && m.participant === 'b' && m.kid === b.session.current.kid));
    // Everyone who shares the link key sees the same code; d does not share it.
    assert.equal(a.session.code, b.session.code);
    assert.equal(b.session.code, c.session.code);
    assert.notEqual(d.session.code, a.session.code);
    // Chat: b reads a's message; d cannot; a reads its own.
    const text = await a.session.encryptChat('only for us');
    assert.equal(await b.session.decryptChat('a', text), 'only for us');
    assert.equal(await a.session.decryptChat('a', text), 'only for us');
    const waiting = d.session.decryptChat('a', text);
    await timers.advance(2500);
    assert.equal(await waiting, null);
    // A message said to be from someone else than the key's holder is not read.
    const passedOff = c.session.decryptChat('b', text);
    await timers.advance(2500);
    assert.equal(await passedOff, null);
  });

  it('re-keys after someone leaves: the departed never gets the new key', async () => {
    const timers = fakeTimers();
    const link = generateLinkKey();
    const r = room('case-2', timers);
    const a = await r.join('a', link);
    const b = await r.join('b', link);
    const c = await r.join('c', link);
    await settle();
    const before = a.session.current.kid;
    const cHeld = new Set(c.session.everHeld);
    await r.leave('c');
    const sentBefore = r.sent.length;
    // Nothing before the random delay (0.2-0.7 s; 0.45 s here).
    await timers.advance(400);
    assert.equal(a.session.next, null);
    await timers.advance(100);
    const next = a.session.next;
    assert.ok(next, 'a drew a new key');
    assert.equal(a.session.current.kid, before, 'still sending under the old key');
    assert.deepEqual(b.session.heldKids().a, [before.toString(), next.kid.toString()], 'b holds old and new');
    await timers.advance(1000);
    assert.equal(a.session.current.kid, next.kid, 'a switched a second later');
    assert.ok(a.worker.some((m) => m.type === 'sendKey' && m.kid === next.kid));
    for (const p of [a, b]) assert.ok(!cHeld.has(p.session.current.kid.toString()), 'c never held the new key');
    assert.ok(!r.sent.slice(sentBefore).some((m) => m.to === 'c'), 'no key went to c after it left');
    assert.ok(r.sent.slice(sentBefore).some((m) => m.from === 'a' && m.to === 'b'), 'a gave b the new key');
    // b was told to forget c's keys.
    assert.ok(b.worker.some((m) => m.type === 'dropKeys' && m.participant === 'c'));
    // Departures close together cost one re-key.
    const d = await r.join('d', link);
    const e = await r.join('e', link);
    const rekeysBefore = a.worker.filter((m) => m.type === 'sendKey').length;
    await r.leave('d');
    await timers.advance(100);
    await r.leave('e');
    await timers.advance(2000);
    assert.equal(a.worker.filter((m) => m.type === 'sendKey').length, rekeysBefore + 1);
  });

  it('gives a newcomer during a pending switch both keys, and a reloaded page its keys again', async () => {
    const timers = fakeTimers();
    const link = generateLinkKey();
    const r = room('case-3', timers);
    const a = await r.join('a', link);
    const b = await r.join('b', link);
    await r.join('c', link);
    await r.leave('c');
    await timers.advance(700);
    assert.ok(a.session.next);
    const d = await r.join('d', link);
    assert.deepEqual(d.session.heldKids().a, [a.session.current.kid.toString(), a.session.next.kid.toString()]);
    await timers.advance(1000);
    // b reloads: a new key pair and announcement (participant_e2ee).
    const b2 = new E2eeSession({
      linkKey: link, room: 'case-3', timers, send: (entries) => entries.forEach(({ to, data }) => r.pages.get(to)?.session.keyFrom('b', data)),
      post: () => {},
    });
    const ann = await b2.start();
    b2.selfId = 'b';
    r.pages.set('b', { ...b, session: b2 });
    for (const o of [a, d]) await o.session.announced('b', ann);
    await b2.welcome([{ id: 'a', e2ee: a.session.announcement }, { id: 'd', e2ee: d.session.announcement }]);
    await settle();
    assert.deepEqual(a.session.heldKids().b, [b2.current.kid.toString()], 'a dropped the old page\'s key');
    assert.deepEqual(b2.heldKids().a, [a.session.current.kid.toString()]);
  });

  it('marks participants without an announcement as not encrypting', async () => {
    const timers = fakeTimers();
    const link = generateLinkKey();
    const r = room('case-4', timers);
    const a = await r.join('a', link);
    await r.join('p', link, { announce: false });
    assert.equal(a.session.status('p'), 'none');
    assert.equal(a.session.status('nobody'), null);
  });
});
