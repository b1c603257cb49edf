#!/usr/bin/env node
// End-to-end encryption in the browser client (docs/e2ee.md): four headless Chromium pages in
// one room of a real `ting`, three with the meeting's link key and one with another key.
//
//   node tests/browser/e2ee.test.mjs          (from the repository root; a debug build of ting)
//
// What it proves:
//   0. a room that requires E2EE refuses a page opened without #key= with a sentence that
//      says what to do, and a link with a malformed key is refused by the page itself (no
//      join);
//   1. the three pages with the same key decode each other's camera and microphone, read
//      each other's chat and show the same verification code; the fourth decodes nothing,
//      shows "Can't decrypt" on every tile and cannot read the chat, and the three show
//      "Can't decrypt" on its tile;
//   2. what the server forwards is ciphertext: its tap (TING_TEST_TAP, one line per
//      forwarded RTP packet) holds A's camera frames with the clear VP8 prefix and an
//      SFrame header naming A's key, but none of the plaintext bytes A's page recorded
//      before encrypting;
//   3. simulcast still works: a tile made small gets a smaller layer, decoded;
//   4. a screen share decodes, and decodes again after stopping and starting it (D has left
//      by then: four browsers and their encryption are more than two cores carry);
//   5. the host removes C: C stops decoding, A and B re-key within about two seconds and go
//      on decoding each other with no gap over 1 s, under keys C never held;
//   6. B reloads its page: it comes back with a new key pair and new keys, and A and B
//      decode each other again.
//
// The server serves the client built into it, and runs with TING_TEST_TAP (a file in a
// temporary directory) and TING_ROOMS_E2EE_REQUIRED=true (every room requires E2EE).
//
// Environment: see harness.mjs (TING_BIN, TING_LOG_LEVEL, CHROMIUM). Exits 0 when every check
// passed, 1 otherwise; screenshots and the server log go to
// tests/browser/screenshots/<timestamp>-e2ee/.

import { mkdtemp, readFile, rm } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import {
  chromiumArgs, closeParticipant, joinMeeting, launchParticipant, log, runTest, screenshot, shownErrors,
  sleep, waitFor,
} from './harness.mjs';
import { cameraOf, midOf, sample } from './observe.mjs';
import {
  clearPrefixLength, fromHex, generateLinkKey, linkFragment, parseHeader,
} from '../../crates/ting-server/web/e2ee.js';

const ROOM = 'e2e-e2ee';
const TAP_DIR = await mkdtemp(join(tmpdir(), 'ting-e2ee-tap-'));
const TAP = join(TAP_DIR, 'tap.jsonl');
/** The tap stops after this many lines (crates/ting-server/src/worker/tap.rs). */
const TAP_MAX_LINES = 20000;
const KEY = linkFragment(generateLinkKey());
const OTHER_KEY = linkFragment(generateLinkKey());
const LINK = `/m/${ROOM}#${KEY}`;
// Four pages on two cores, each encoding a camera in three layers and encrypting every
// frame: 10 fps, small windows.
const ARGS = chromiumArgs({ fps: 10 });
const VIEWPORT = { width: 1024, height: 600 };
/** Samples of A's camera taken before encryption. */
const SAMPLES = 40;

// ---- what a page says -------------------------------------------------------------------

/** The page's E2EE debug handle, as plain data. */
function e2ee(p) {
  return p.page.evaluate(() => {
    const t = window.tingE2ee;
    return {
      enabled: t.enabled, kid: t.kid, nextKid: t.nextKid, sendingKid: t.sendingKid, held: t.held,
      everHeld: t.everHeld, peers: t.peers, decryption: t.decryption, code: t.code, sent: t.sent,
    };
  });
}

/** Makes page `p` note, from now on, when the server pauses a slot for bandwidth and when
 *  it resumes it (polled every 50 ms), in milliseconds since the epoch. */
function watchPauses(p) {
  return p.page.evaluate(() => {
    clearInterval(window.__tingPauseWatch);
    const pauses = [];
    const open = new Map();
    window.__tingPauses = pauses;
    window.__tingPauseWatch = setInterval(() => {
      const t = performance.timeOrigin + performance.now();
      const now = new Set();
      for (const s of Object.values(window.ting.slots)) if (s.paused) now.add(`${s.participant} ${s.source}`);
      for (const key of now) {
        if (!open.has(key)) {
          const pause = { key, from: t, to: null };
          open.set(key, pause);
          pauses.push(pause);
        }
      }
      for (const [key, pause] of open) {
        if (!now.has(key)) {
          pause.to = t;
          open.delete(key);
        }
      }
    }, 50);
  });
}

/** The pauses page `p` saw since `watchPauses` ({key: 'participant source', from, to}; `to`
 *  null while it lasts), and stops watching. */
function pausesSeen(p) {
  return p.page.evaluate(() => {
    clearInterval(window.__tingPauseWatch);
    const t = performance.timeOrigin + performance.now();
    return (window.__tingPauses ?? []).map((x) => ({ ...x, to: x.to ?? t }));
  });
}

/** How many frames of `source` of `other` page `p` decrypted so far. */
async function decrypted(p, other, source) {
  const d = (await e2ee(p)).decryption[other.id]?.[source];
  return d?.ok ?? 0;
}

/**
 * Whether `p` decodes each `[other, source]` of `pairs` now: frames decrypt (the worker's
 * count grows) and, for video, the decoder's framesDecoded grows on the slot that carries it.
 * One pair of samples for all of them: reading a page's statistics costs CPU.
 */
async function decodesAll(p, pairs, gapMs = 1000) {
  const a = await sample(p);
  const da = (await e2ee(p)).decryption;
  await sleep(gapMs);
  const b = await sample(p);
  const db = (await e2ee(p)).decryption;
  if (!a || !b) return { ok: false, why: 'no PeerConnection' };
  const problems = [];
  for (const [other, source] of pairs) {
    const okA = da[other.id]?.[source]?.ok ?? 0;
    const okB = db[other.id]?.[source]?.ok ?? 0;
    const mid = midOf(b, other.id, source);
    const video = source !== 'microphone';
    if (!mid) {
      problems.push(`no slot maps ${other.label}'s ${source}`);
      continue;
    }
    const before = a.receivers[mid]?.framesDecoded ?? 0;
    const after = b.receivers[mid]?.framesDecoded ?? 0;
    if (!(okB > okA && (!video || after > before))) {
      const failed = db[other.id]?.[source]?.fail ?? 0;
      const paused = b.slots[mid]?.paused ? ' (slot paused for bandwidth)' : '';
      problems.push(`${other.label}'s ${source}: decrypted ${okA} -> ${okB}, failed ${failed}${video ? `, decoded ${before} -> ${after}` : ''}${paused}`);
    }
  }
  return { ok: problems.length === 0, why: problems.join('; ') };
}

/** Whether `p` decodes `other`'s `source` now (see decodesAll). */
function decodes(p, other, source, gapMs = 1000) {
  return decodesAll(p, [[other, source]], gapMs);
}

/** What `p`'s tile of `other` (camera, or the screen tile) says. */
function tileOf(p, other, source = 'camera') {
  return p.page.evaluate(({ id, source }) => {
    const fig = document.querySelector(source === 'screen' ? `#screens [data-participant="${id}"]` : `#tiles [data-participant="${id}"]`);
    if (!fig) return null;
    const video = fig.querySelector('video');
    return {
      e2ee: fig.dataset.e2ee,
      note: fig.querySelector('.placeholder-note').textContent,
      detail: fig.querySelector('.placeholder-detail').textContent,
      placeholder: !fig.querySelector('.placeholder').hidden,
      playing: Boolean(video && !video.hidden && video.videoWidth > 0),
    };
  }, { id: other.id, source });
}

function chatLog(p) {
  return p.page.$$eval('#chat-log .chat-message', (els) => els.map((e) => ({
    from: e.dataset.from, text: e.querySelector('.chat-text').textContent, unreadable: e.dataset.unreadable === 'true',
  })));
}

// ---- the tap --------------------------------------------------------------------------------

async function readTap() {
  const text = await readFile(TAP, 'utf8').catch(() => '');
  return text.split('\n').filter(Boolean).map((l) => JSON.parse(l));
}

/** Where the VP8 frame starts in an RTP payload (after the payload descriptor of RFC 7741),
 *  or -1 if this packet does not start a frame. */
function vp8FrameStart(payload) {
  if (payload.length < 1) return -1;
  const b0 = payload[0];
  const start = (b0 & 0x10) !== 0 && (b0 & 0x07) === 0;
  let off = 1;
  if (b0 & 0x80) {
    const x = payload[1];
    off = 2;
    if (x & 0x80) off += payload[off] & 0x80 ? 2 : 1;
    if (x & 0x40) off += 1;
    if (x & 0x20 || x & 0x10) off += 1;
  }
  return start && off < payload.length ? off : -1;
}

/** The frames the tap saw start for `who`'s `source`: [{kid, ctr, keyframe, frame}] with
 *  `frame` the first bytes of the (encrypted) frame. */
function tapFrames(lines, who, source) {
  const out = [];
  for (const l of lines) {
    if (l.pid !== who.id || l.source !== source) continue;
    const payload = fromHex(l.head);
    const at = vp8FrameStart(payload);
    if (at < 0) continue;
    const frame = payload.subarray(at);
    const p = clearPrefixLength('vp8', frame);
    const h = parseHeader(frame, p);
    out.push({ kid: h?.kid.toString() ?? null, ctr: h?.ctr.toString() ?? null, keyframe: (frame[0] & 1) === 0, frame });
  }
  return out;
}

/** Whether `hex` occurs in `head` at a byte boundary. */
function containsBytes(head, hex) {
  for (let i = head.indexOf(hex); i >= 0; i = head.indexOf(hex, i + 1)) if (i % 2 === 0) return true;
  return false;
}

// ---- the scenario ---------------------------------------------------------------------------

async function scenario({ port, shots }) {
  const launch = (label, name, extra = {}) => launchParticipant(label, name, { args: ARGS, viewport: VIEWPORT, mute: true, ...extra });
  const everyone = [];
  try {
    // D only receives (no camera, no microphone): four pages encoding and encrypting are
    // more than two cores carry, and four microphones at 50 packets a second would fill the
    // tap's 20 000 lines before the checks that read it.
    const d = await launch('D', 'Dana Levi', { args: chromiumArgs({ fps: 10, grantAll: false }), permissions: [] });
    everyone.push(d);

    // ---- 0. refusals: a malformed key, and no key where the room requires one
    log('0. a malformed key is refused by the page; no key is refused by the room');
    await d.page.goto(`http://127.0.0.1:${port}/m/${ROOM}#key=not-a-key`, { waitUntil: 'domcontentloaded' }).catch(() => {});
    const malformed = await waitFor('D to refuse the malformed key', async () => {
      const errors = await shownErrors(d);
      const e = errors.find((x) => x.code === 'e2ee_key');
      const join = await d.page.evaluate(() => ({ disabled: document.getElementById('join').disabled, id: window.ting.participantId }));
      return { ok: Boolean(e) && join.disabled && join.id === null, why: JSON.stringify({ errors, join }), text: e?.text };
    }, 10000);
    if (!malformed.text.startsWith('The meeting key in this link is damaged')) throw new Error(`D reads ${JSON.stringify(malformed.text)}`);
    await d.page.fill('#name', d.name);
    await d.page.click('#join', { force: true }).catch(() => {});
    await sleep(1000);
    if (await d.page.evaluate(() => window.ting.participantId !== null || !document.getElementById('meeting').hidden)) {
      throw new Error('D joined with a malformed key');
    }
    log(`  D reads: ${malformed.text}`);
    await screenshot(d, shots, '0-malformed-key');
    await d.page.goto('about:blank');
    await d.page.goto(`http://127.0.0.1:${port}/m/${ROOM}`, { waitUntil: 'domcontentloaded' });
    if (await d.page.evaluate(() => window.tingE2ee.enabled)) throw new Error('a page without #key says it encrypts');
    await d.page.fill('#name', d.name);
    await d.page.click('#join');
    const required = await waitFor('D to be refused without a key', async () => {
      const errors = await shownErrors(d);
      const e = errors.find((x) => x.code === 'e2ee_required');
      return { ok: Boolean(e), why: JSON.stringify(errors), text: e?.text };
    }, 15000);
    const body = await d.page.textContent('body');
    if (!required.text.includes('#key=') || !body.includes(required.text)) throw new Error(`D reads ${JSON.stringify(required.text)}`);
    log(`  D reads: ${required.text}`);
    await screenshot(d, shots, '0-e2ee-required');
    await d.page.goto('about:blank');

    // ---- 1. three pages with the key, one with another
    const [a, b, c] = [await launch('A', 'Aino Virtanen'), await launch('B', 'Björn Ek'), await launch('C', 'Chidi Okafor')];
    everyone.push(a, b, c);
    const friends = [a, b, c];
    const othersOf = (p) => friends.filter((o) => o !== p);
    log('1. A (host), B and C join with the key');
    for (const p of friends) await joinMeeting(p, port, LINK);
    for (const p of friends) {
      const s = await e2ee(p);
      if (!s.enabled) throw new Error(`${p.label} does not say it encrypts`);
      if (!(await p.page.evaluate(() => document.getElementById('e2ee-badge').checkVisibility()))) throw new Error(`${p.label} shows no E2EE badge`);
    }
    for (const p of friends) {
      const pairs = othersOf(p).flatMap((o) => [[o, 'camera'], [o, 'microphone']]);
      await waitFor(`${p.label} to decode the others' cameras and microphones`, () => decodesAll(p, pairs), 60000, 250);
      log(`  ${p.label} decodes ${othersOf(p).map((o) => o.label).join(' and ')}: camera and microphone`);
    }
    // B shows A large from now on (phase 3 makes it small): the server's estimate of B's
    // downlink takes a while to allow A's larger layer on this busy machine.
    await b.page.click(`#tiles [data-participant="${a.id}"]`);
    log('  D joins with another key (it only watches)');
    await joinMeeting(d, port, `/m/${ROOM}#${OTHER_KEY}`);
    if (!(await e2ee(d)).enabled || !(await d.page.evaluate(() => document.getElementById('e2ee-badge').checkVisibility()))) {
      throw new Error('D does not show that it encrypts');
    }

    // A's own frames before encryption, for the tap below.
    await a.page.evaluate((n) => window.tingE2ee.recordSamples(n), SAMPLES);

    // The verification code: the same for those with the key, another for D.
    const codes = {};
    for (const p of everyone) {
      codes[p.label] = await waitFor(`${p.label} to show a verification code`, async () => {
        const text = await p.page.textContent('#e2ee-code');
        const hooked = (await e2ee(p)).code;
        return { ok: /^Code \d{4} \d{4}$/.test(text) && text === `Code ${hooked}`, why: `${text} / ${hooked}`, code: hooked };
      }, 10000).then((r) => r.code);
    }
    await waitFor('A, B and C to show the same code', async () => {
      for (const p of friends) codes[p.label] = (await e2ee(p)).code;
      return { ok: codes.A === codes.B && codes.B === codes.C, why: JSON.stringify(codes) };
    }, 10000);
    if (codes.D === codes.A) throw new Error(`D shows the same code as the others (${codes.D})`);
    log(`  verification code ${codes.A} on A, B and C; D shows ${codes.D}`);

    // D decodes nothing and says so; the others say they cannot decrypt D.
    for (const o of friends) {
      await waitFor(`D to show "Can't decrypt ${o.name}"`, async () => {
        const t = await tileOf(d, o);
        const ok = t && t.placeholder && !t.playing && t.note === `Can't decrypt ${o.name}` && /\d+ frames? could not be decrypted/.test(t.detail);
        return { ok, why: JSON.stringify(t) };
      }, 20000);
    }
    // The tiles turn to "Can't decrypt" after the first second of failures, which may be
    // before much has arrived: wait for the media itself, then check nothing decoded.
    const dBytes = await waitFor('D to receive the others\' media (and fail to decrypt it)', async () => {
      const stats = await sample(d);
      const bytes = Object.values(stats.receivers).reduce((n, r) => n + r.bytesReceived, 0);
      return { ok: bytes > 10000, why: `${bytes} bytes received`, bytes };
    }, 10000).then((r) => r.bytes);
    const dStats = await sample(d);
    const dDecoded = Object.values(dStats.receivers).reduce((n, r) => n + r.framesDecoded, 0);
    const dDecrypted = Object.values((await e2ee(d)).decryption).flatMap((x) => Object.values(x)).reduce((n, x) => n + x.ok, 0);
    if (dDecoded !== 0 || dDecrypted !== 0) throw new Error(`D decoded ${dDecoded} and decrypted ${dDecrypted} frames`);
    for (const p of friends) {
      await waitFor(`${p.label} to show "Can't decrypt ${d.name}"`, async () => {
        const t = await tileOf(p, d);
        return { ok: Boolean(t && t.e2ee === 'invalid' && t.note === `Can't decrypt ${d.name}` && !t.playing), why: JSON.stringify(t) };
      }, 10000);
      const held = (await e2ee(p)).held;
      if (held[d.id]?.length) throw new Error(`${p.label} holds keys from D: ${JSON.stringify(held[d.id])}`);
    }
    const dHeld = (await e2ee(d)).held;
    if (Object.values(dHeld).some((k) => k.length)) throw new Error(`D holds keys: ${JSON.stringify(dHeld)}`);
    log(`  D decodes nothing (${dBytes} bytes received, 0 frames decrypted) and shows "Can't decrypt" on every tile; A, B and C show it on D's`);
    for (const p of everyone) await screenshot(p, shots, '1-keys');

    // Chat: readable with the key, not without.
    const secret = `Secret plan ${Math.random().toString(36).slice(2, 10)}`;
    await a.page.click('#chat-toggle');
    await a.page.fill('#chat-input', secret);
    await a.page.click('#chat-send');
    for (const p of [b, c]) {
      await p.page.click('#chat-toggle');
      await waitFor(`${p.label} to read A's message`, async () => {
        const msgs = await chatLog(p);
        return { ok: msgs.some((m) => m.from === a.id && m.text === secret && !m.unreadable), why: JSON.stringify(msgs) };
      }, 10000);
    }
    await d.page.click('#chat-toggle');
    await waitFor('D to show A\'s message as unreadable', async () => {
      const msgs = await chatLog(d);
      return { ok: msgs.some((m) => m.from === a.id && m.unreadable && !m.text.includes(secret)), why: JSON.stringify(msgs) };
    }, 10000);
    for (const p of [a, b, c]) await p.page.click('#chat-toggle');
    log('  B and C read A\'s chat message; D shows it as one it cannot read');
    if (d.problems.length) throw new Error(`D had script errors: ${d.problems.join('; ')}`);
    // D has shown what it had to; four pages on two cores starve the rest of the test.
    // A re-keys soon after D leaves: its frames until then carry this KID.
    const aKidBeforeLeave = (await e2ee(a)).kid;
    await d.page.click('#leave');
    await closeParticipant(d);
    everyone.splice(everyone.indexOf(d), 1);

    // ---- 2. the server forwards ciphertext
    log('2. what the server forwards of A\'s camera');
    const samples = await waitFor('A to record plaintext samples', async () => {
      const s = await a.page.evaluate(() => window.tingE2ee.samples);
      return { ok: s.length >= SAMPLES, why: `${s.length} samples`, s };
    }, 20000).then((r) => r.s);
    const aNow = await e2ee(a);
    const aKid = aNow.kid;
    const lastCtr = Math.max(...samples.map((s) => Number(s.ctr)));
    const tapped = await waitFor('the tap to hold A\'s camera frames from after the samples', async () => {
      const lines = await readTap();
      const frames = tapFrames(lines, a, 'camera');
      const later = frames.filter((f) => f.kid === aKid && Number(f.ctr) > lastCtr);
      const why = lines.length
        ? `${lines.length} lines, ${frames.length} of A's camera frames start, none after CTR ${lastCtr}`
        : `the server's tap (${TAP}) recorded nothing: it needs a debug build of ting that writes TING_TEST_TAP for every forwarded packet`;
      return { ok: later.length > 0, why, lines, frames };
    }, 20000);
    if (tapped.lines.length >= TAP_MAX_LINES) log(`  (the tap is full: ${tapped.lines.length} lines)`);
    const aLines = tapped.lines.filter((l) => l.pid === a.id && l.source === 'camera');
    const leaked = samples.filter((s) => aLines.some((l) => containsBytes(l.head, s.hex)));
    if (leaked.length) throw new Error(`the server forwarded plaintext of A's camera: ${JSON.stringify(leaked.slice(0, 3))}`);
    // A's own keys: the one before D left, the one after its re-key (which may fall on
    // either side of the reads), and the next one if a re-key is under way.
    const aLater = await e2ee(a);
    const aOwn = new Set([aKidBeforeLeave, aKid, aNow.nextKid, aLater.kid, aLater.nextKid].filter(Boolean));
    const foreign = tapped.frames.filter((f) => !aOwn.has(f.kid));
    if (foreign.length) throw new Error(`A's camera frames carry other KIDs than A's ${[...aOwn].join(', ')}: ${JSON.stringify(foreign.slice(0, 3).map((f) => f.kid))}`);
    const keyframes = tapped.frames.filter((f) => f.keyframe);
    if (!keyframes.length || keyframes.some((f) => f.frame[3] !== 0x9d || f.frame[4] !== 0x01 || f.frame[5] !== 0x2a)) {
      throw new Error(`no keyframe with the VP8 start code in clear among ${tapped.frames.length} frames`);
    }
    const sizes = [...new Set(keyframes.map((f) => `${(f.frame[6] | (f.frame[7] << 8)) & 0x3fff}x${(f.frame[8] | (f.frame[9] << 8)) & 0x3fff}`))];
    const forwardedSamples = samples.filter((s) => tapped.frames.some((f) => f.kid === s.kid && f.ctr === s.ctr));
    if (!forwardedSamples.length) throw new Error('none of the sampled frames was forwarded: the tap shows nothing to compare');
    log(`  ${aLines.length} packets of A's camera in the tap, ${tapped.frames.length} frame starts, all under A's KIDs (${[...aOwn].join(', ')}), `
      + `${keyframes.length} keyframes with the clear VP8 prefix (${sizes.join(', ')}); ${forwardedSamples.length} of the ${samples.length} `
      + 'sampled frames were forwarded, and no sample\'s plaintext is in any packet');

    // ---- 3. simulcast: a large tile, then a small one
    log('3. B shows A large (pinned since phase 1), then small in a smaller window');
    if ((await b.page.evaluate(() => window.ting.pinned)) !== a.id) throw new Error('B does not show A pinned');
    const large = await waitFor('B to decode a large layer of A', async () => {
      const x = await cameraOf(b, a);
      return { ok: Boolean(x && !x.paused && x.frameWidth >= 640), why: JSON.stringify(x), x };
    }, 60000, 500).then((r) => r.x);
    // The grid, in a smaller window: A's tile is then well under the 211 px (device) at which
    // the server sends the 320x180 layer.
    await b.page.setViewportSize({ width: 640, height: 400 });
    await b.page.click('#view');
    const small = await waitFor('B to decode a smaller layer of A in the grid', async () => {
      const x = await cameraOf(b, a);
      return { ok: Boolean(x && !x.paused && x.frameWidth > 0 && x.frameWidth < large.frameWidth && x.mid === large.mid), why: JSON.stringify(x), x };
    }, 60000, 500).then((r) => r.x);
    await waitFor('B to go on decoding A small', () => decodes(b, a, 'camera'), 10000);
    const tile = await b.page.evaluate((id) => window.ting.layout.tiles.find((t) => t.participant === id)?.height, a.id);
    log(`  B decodes A at ${large.frameWidth} px wide when large, ${small.frameWidth} px in a grid tile ${tile} px high (same slot ${small.mid})`);
    await screenshot(b, shots, '3-grid');
    await b.page.setViewportSize(VIEWPORT);

    // ---- 4. screen share, stopped and started again
    log('4. A shares the screen, stops, shares again');
    for (let round = 1; round <= 2; round++) {
      await a.page.click('#share');
      // The server may hold a share back while it thinks a viewer's connection cannot carry
      // it (on this busy machine its estimates start low): give it time.
      const shared = Date.now();
      for (const p of [b, c]) {
        await waitFor(`${p.label} to decode A's screen (share ${round})`, () => decodes(p, a, 'screen'), 60000, 250);
        log(`  ${p.label} decodes A's screen (share ${round}) ${((Date.now() - shared) / 1000).toFixed(1)} s after it started`);
      }
      if (round === 1) {
        await screenshot(b, shots, '4-screen');
        await a.page.click('#share');
        for (const p of [b, c]) {
          await waitFor(`${p.label} to drop A's screen tile`, async () => ({ ok: !(await tileOf(p, a, 'screen')), why: 'still shown' }), 15000);
        }
      }
    }
    log('  B and C decoded A\'s screen both times');
    await a.page.click('#share');

    // ---- 5. the host removes C
    log('5. A (host) removes C');
    const cBefore = await e2ee(c);
    const cHeld = new Set(cBefore.everHeld);
    const kidsBefore = { A: (await e2ee(a)).kid, B: (await e2ee(b)).kid };
    if (!cHeld.has(kidsBefore.A) || !cHeld.has(kidsBefore.B)) throw new Error(`C did not hold A's and B's keys: ${JSON.stringify([...cHeld])}`);
    const tapMark = (await readTap()).length;
    await a.page.click('[data-testid="participants-toggle"]');
    const row = `#people-list [data-participant="${c.id}"]`;
    await a.page.click(`${row} button.person-menu`, { timeout: 5000 });
    await a.page.click(`${row} [data-action="remove"]`, { timeout: 5000 });
    // The worker reports twice a second: what it says after this includes every frame
    // before the removal.
    await sleep(1200);
    // What failed to decrypt (or to encrypt, for want of a key) before the removal, and
    // which slots the server pauses for bandwidth from now on (a paused camera has a gap
    // that is no re-key's doing: on this machine a page's estimate can fall to 150 kbit/s
    // while four pages run). Gaps count from the removal on.
    const before = { A: await e2ee(a), B: await e2ee(b) };
    for (const p of [a, b]) await watchPauses(p);
    for (const p of [a, b]) await p.page.evaluate(() => window.tingE2ee.resetGaps());
    await a.page.click('#confirm-yes', { timeout: 5000 });
    const removedAt = Date.now();
    await waitFor('C to show that it was removed', async () => {
      const errors = await shownErrors(c);
      return { ok: errors.some((e) => e.code === 'removed'), why: JSON.stringify(errors) };
    }, 10000);
    const cGone = await c.page.evaluate(() => ({ pc: window.ting.pc, enabled: window.tingE2ee.kid }));
    if (cGone.pc !== null || cGone.enabled !== null) throw new Error(`C still has a media connection or keys: ${JSON.stringify(cGone)}`);
    // A and B draw new keys 0.2-0.7 s after C left, hand them out, and use them a second
    // later.
    const rekeyed = await waitFor('A and B to send under new keys', async () => {
      const [x, y] = [await e2ee(a), await e2ee(b)];
      const ok = x.kid !== kidsBefore.A && x.sendingKid === x.kid && y.kid !== kidsBefore.B && y.sendingKid === y.kid;
      return { ok, why: JSON.stringify({ A: [x.kid, x.sendingKid], B: [y.kid, y.sendingKid] }), x, y };
    }, 10000, 100);
    const rekeyMs = Date.now() - removedAt;
    for (const kid of [rekeyed.x.kid, rekeyed.y.kid]) {
      if (cHeld.has(kid)) throw new Error(`C held the new key ${kid}`);
    }
    // Frames under the new keys, decrypted on the other page, and still no gap.
    await sleep(2000);
    for (const [p, o, kid] of [[a, b, rekeyed.y.kid], [b, a, rekeyed.x.kid]]) {
      await waitFor(`${p.label} to decode ${o.label} under the new key`, async () => {
        const dec = (await e2ee(p)).decryption[o.id] ?? {};
        const ok = dec.camera?.kid === kid && dec.microphone?.kid === kid;
        return { ok, why: JSON.stringify(dec) };
      }, 10000);
      await waitFor(`${p.label} to go on decoding ${o.label}'s camera`, () => decodes(p, o, 'camera'), 10000);
      const dec = (await e2ee(p)).decryption[o.id];
      const paused = await pausesSeen(p);
      const notes = [];
      for (const source of ['camera', 'microphone']) {
        // Not one frame may fail: the new key reached every receiver before it was used.
        const failed = dec[source].fail - (before[p.label].decryption[o.id]?.[source]?.fail ?? 0);
        if (failed !== 0) throw new Error(`${p.label} failed to decrypt ${failed} frames of ${o.label}'s ${source} across the re-key (${dec[source].reason})`);
        // No longer than a second of sound; a second and a half of video (ten frames a
        // second from an encoder that shares two cores with three others).
        const gap = dec[source].gapMaxMs;
        if (gap <= (source === 'camera' ? 1500 : 1000)) continue;
        // Audio is never paused; video may be, while the receiver's estimate is low: a gap
        // is the pause's when the two overlap (give or take the watcher's polling and the
        // keyframe a resumed slot waits for).
        const end = dec[source].gapMaxEnd;
        const start = end - gap;
        const wasPaused = source === 'camera' && end !== null && paused.some((x) => x.key === `${o.id} camera` && x.from <= end + 250 && x.to >= start - 250);
        if (!wasPaused) {
          throw new Error(`${p.label} went ${gap} ms without a decrypted frame of ${o.label}'s ${source} across the re-key (none failed; it ended at ${end}; pauses seen meanwhile: ${JSON.stringify(paused)})`);
        }
        notes.push(`the ${source} gap of ${gap} ms is the server pausing it for bandwidth`);
      }
      log(`  ${p.label} decodes ${o.label} under its new KID ${kid}; no frame failed; longest gap: camera ${dec.camera.gapMaxMs} ms, microphone ${dec.microphone.gapMaxMs} ms${notes.length ? ` (${notes.join('; ')})` : ''}`);
    }
    // Nor did a sender drop a frame for want of a key.
    for (const p of [a, b]) {
      const dropped = (await e2ee(p)).sent.dropped - before[p.label].sent.dropped;
      if (dropped !== 0) throw new Error(`${p.label} dropped ${dropped} frames unencrypted across the re-key`);
    }
    log(`  A and B sent under new keys ${rekeyMs} ms after the removal, dropping no frame; C never held them`);
    // The tap agrees, while it has room.
    const after = (await readTap()).slice(tapMark);
    const newKids = new Set([rekeyed.x.kid, rekeyed.y.kid]);
    const forwarded = [...tapFrames(after, a, 'camera'), ...tapFrames(after, b, 'camera')];
    const lateFrames = forwarded.filter((f) => newKids.has(f.kid));
    if (forwarded.some((f) => f.kid !== null && !newKids.has(f.kid) && !Object.values(kidsBefore).includes(f.kid))) {
      throw new Error(`the tap shows A's or B's camera under a KID that is neither old nor new: ${JSON.stringify(forwarded.map((f) => f.kid))}`);
    }
    if (lateFrames.some((f) => cHeld.has(f.kid))) throw new Error('the tap shows frames under a key C held after the re-key');
    if (lateFrames.length) {
      log(`  the tap holds ${lateFrames.length} camera frames of A and B under the new KIDs (none C held)`);
    } else if (tapMark + after.length >= TAP_MAX_LINES) {
      log(`  the tap was full (${TAP_MAX_LINES} lines) before frames under the new keys: the pages' own reports above are the evidence`);
    } else {
      throw new Error(`the tap (${tapMark + after.length} lines) shows no camera frame of A or B under the new keys`);
    }
    for (const p of [a, b, c]) await screenshot(p, shots, '5-removed');

    // ---- 6. B reloads: a new key pair and announcement (participant_e2ee), new keys
    log('6. B reloads its page');
    const bKid = (await e2ee(b)).kid;
    await b.page.reload({ waitUntil: 'domcontentloaded' });
    await waitFor('B to be back in the meeting', async () => {
      const s = await b.page.evaluate(() => ({ id: window.ting.participantId, connection: window.ting.connectionState }));
      return { ok: s.id === b.id && s.connection === 'connected', why: JSON.stringify(s) };
    }, 30000);
    const bAfter = await e2ee(b);
    if (bAfter.kid === bKid) throw new Error('B\'s reloaded page sends under its old key');
    await waitFor('A to decode B\'s reloaded page under its new key', async () => {
      const r = await decodes(a, b, 'camera');
      const dec = (await e2ee(a)).decryption[b.id];
      return { ok: r.ok && dec?.camera?.kid === bAfter.kid && dec?.microphone?.kid === bAfter.kid, why: `${r.why}; ${JSON.stringify(dec)}` };
    }, 30000);
    await waitFor('B to decode A again', () => decodesAll(b, [[a, 'camera'], [a, 'microphone']]), 30000);
    const aHeld = (await e2ee(a)).held[b.id];
    if (aHeld.includes(bKid)) throw new Error(`A still holds the key of B's old page: ${JSON.stringify(aHeld)}`);
    log(`  A decodes B's reloaded page under its new KID ${bAfter.kid} and dropped the old page's key; B decodes A`);

    // Nothing went wrong on the pages.
    for (const p of [a, b]) {
      const errors = await shownErrors(p);
      if (errors.length) throw new Error(`${p.label} showed errors: ${JSON.stringify(errors)}`);
    }
    for (const p of everyone) {
      if (p.problems.length) throw new Error(`${p.label} had script errors: ${p.problems.join('; ')}`);
    }
  } catch (e) {
    for (const p of everyone) await screenshot(p, shots, 'failure').catch(() => {});
    throw e;
  } finally {
    await Promise.all(everyone.map(closeParticipant));
    await rm(TAP_DIR, { recursive: true, force: true });
  }
}

runTest({
  name: 'e2ee',
  env: { TING_TEST_TAP: TAP, TING_ROOMS_E2EE_REQUIRED: 'true' },
}, scenario);
