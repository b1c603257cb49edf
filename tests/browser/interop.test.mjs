#!/usr/bin/env node
// End-to-end test of other WebRTC stacks with a Chromium meeting page, through a real
// `ting` started with a token secret: aiortc (an independent stack, from PyPI) as a client
// written from docs/protocol.md, as a WHIP publisher and as a WHEP viewer; and GStreamer's
// webrtcbin (Debian's, with libnice) as a WHIP publisher and a WHEP viewer.
//
//   node tests/browser/interop.test.mjs          (from the repository root, as root)
//
// Environment (harness.mjs): TING_BIN, TING_LOG_LEVEL, CHROMIUM, as for meeting.test.mjs;
// PYTHON, the interpreter with aiortc (default tests/interop/.venv/bin/python, which
// scripts/test.sh makes); GST_PYTHON, the interpreter with GStreamer's bindings (default
// /usr/bin/python3, with Debian's python3-gst-1.0).
//
// libnice gathers no loopback candidates and cannot reach 127.0.0.1, so ting serves this
// test on the host side of a veth pair into a network namespace the test makes (root), and
// webrtcbin runs inside it; the others run on the host.
//
//   1. A (Chromium) is in the meeting. A WHEP viewer (aiortc, tests/interop/whip.py watch)
//      decodes A's camera; A's page never learns of the viewer.
//   2. A WHIP publisher (aiortc, tests/interop/whip.py publish) sends a bright picture and a
//      steady tone while A is muted: A's page shows it as a participant and decodes its
//      camera and its microphone; the WHEP viewer's one video switches to the publisher,
//      the new active speaker, without renegotiation.
//   3. The publisher ends its session (DELETE): it leaves A's meeting.
//   4. A client on aiortc written from docs/protocol.md (tests/interop/meeting.py join)
//      joins with camera, microphone and screen share: A decodes its camera and its
//      screen and hears it; it decodes A's camera.
//   5. webrtcbin publishes over WHIP (tests/interop/webrtcbin.py publish): A decodes its
//      camera and hears it; it leaves on DELETE.
//   6. webrtcbin watches over WHEP (tests/interop/webrtcbin.py watch): it decodes video
//      and audio; A never learns of it.
//
// Exits 0 when every check passed, 1 otherwise. Every wait has a deadline.

import { spawn } from 'node:child_process';
import { createHmac, randomBytes } from 'node:crypto';
import { createInterface } from 'node:readline';
import { resolve } from 'node:path';

import {
  ROOT, chromiumArgs, closeParticipant, joinMeeting, launchParticipant, log, runTest, waitFor,
} from './harness.mjs';
import { makeNamespace } from './netns.mjs';
import { flowing } from './observe.mjs';

const ROOM = 'e2e-whip';
const SECRET = randomBytes(32).toString('base64url');
const PYTHON = process.env.PYTHON ?? resolve(ROOT, 'tests/interop/.venv/bin/python');
const WHIP_PY = resolve(ROOT, 'tests/interop/whip.py');
const MEETING_PY = resolve(ROOT, 'tests/interop/meeting.py');
const WEBRTCBIN_PY = resolve(ROOT, 'tests/interop/webrtcbin.py');
const GST_PYTHON = process.env.GST_PYTHON ?? '/usr/bin/python3';
const NET = makeNamespace('wrtc', 214);
const ARGS = chromiumArgs({ fps: 10 });
/** The publisher's picture: every pixel this bright (Chromium's fake camera is darker). */
const BRIGHT = 220;

const b64 = (x) => Buffer.from(x).toString('base64url');

/** An HS256 join token for ROOM, as the organisation's own system would sign it. */
function token(name) {
  const head = b64(JSON.stringify({ alg: 'HS256', typ: 'JWT' }));
  const claims = {
    room: ROOM, exp: Math.floor(Date.now() / 1000) + 600, role: 'participant', name,
    jti: randomBytes(9).toString('base64url'),
  };
  const body = b64(JSON.stringify(claims));
  const sig = createHmac('sha256', SECRET).update(`${head}.${body}`).digest('base64url');
  return `${head}.${body}.${sig}`;
}

/** Runs one side of tests/interop/whip.py; its JSON lines land in `side.lines`. Closing
 *  its stdin ends it (it sends DELETE first). */
function startSide(mode, origin, name) {
  let program = PYTHON;
  let args;
  if (mode === 'join') {
    args = [MEETING_PY, 'join', origin, ROOM, name];
  } else if (mode.startsWith('gst-')) {
    program = 'ip';
    args = ['netns', 'exec', NET.NS, GST_PYTHON, WEBRTCBIN_PY, mode.slice(4), origin, ROOM, token(name)];
  } else {
    args = [WHIP_PY, mode, origin, ROOM, token(name), String(BRIGHT)];
  }
  const proc = spawn(program, args, { cwd: ROOT, stdio: ['pipe', 'pipe', 'pipe'] });
  const side = { proc, lines: [], stderr: '', exited: null };
  process.on('exit', () => proc.kill('SIGKILL'));
  createInterface({ input: proc.stdout }).on('line', (line) => {
    try {
      side.lines.push(JSON.parse(line));
    } catch {
      log(`${mode}: ${line}`);
    }
  });
  proc.stderr.on('data', (c) => {
    if (side.stderr.length < 1 << 14) side.stderr += c;
  });
  proc.on('exit', (code) => {
    side.exited = code;
  });
  return side;
}

async function stopSide(side, what) {
  if (side.exited !== null) return;
  side.proc.stdin.end();
  await waitFor(`${what} to end its session`, () => ({
    ok: side.exited !== null, why: 'still running',
  }), 15000);
  if (side.exited !== 0) throw new Error(`${what} exited with ${side.exited}: ${side.stderr}`);
}

function started(side, what) {
  return waitFor(`${what} to get its answer`, () => {
    if (side.exited !== null) {
      throw Object.assign(new Error(`${what} exited with ${side.exited}: ${side.stderr} ${JSON.stringify(side.lines)}`), { fatal: true });
    }
    const loc = side.lines.find((l) => l.location)?.location;
    return { ok: Boolean(loc), why: 'no answer yet' };
  }, 20000);
}

/** The latest of the viewer's reports. */
const latest = (side) => side.lines.filter((l) => 'frames' in l).at(-1) ?? { frames: 0 };

/** The ids A's page knows, itself included. */
const known = (p) => p.page.evaluate(() => Object.keys(window.ting.connections));

await runTest({
  name: 'interop',
  room: ROOM,
  listen: `${NET.HOST_IP}:0`,
  args: [`--tokens-secret=${SECRET}`, '--media-bind-ip', NET.HOST_IP, '--media-advertise-ip', NET.HOST_IP],
  // Plain HTTP on the test's own veth pair; the page is told to treat it as secure.
  env: { TING_HTTP_ALLOW_PLAIN_HTTP: 'true' },
}, async ({ port, ting }) => {
  const a = await launchParticipant('A', 'Aino', {
    args: [...ARGS, `--unsafely-treat-insecure-origin-as-secure=${ting.origin}`], mute: true,
  });
  const sides = [];
  try {
    await joinMeeting(a, port, ROOM);
    const before = await known(a);

    // 1. A WHEP viewer decodes A, and A never hears of it.
    const viewer = startSide('watch', ting.origin, 'Lobby screen');
    sides.push(viewer);
    await started(viewer, 'the WHEP viewer');
    let dark = null;
    await waitFor('the WHEP viewer to decode A\'s camera', () => {
      const r = latest(viewer);
      dark = r.brightness;
      return { ok: r.frames >= 10 && r.brightness !== null, why: JSON.stringify(r) };
    }, 20000, 250);
    if (dark > BRIGHT - 40) throw new Error(`A's camera measured ${dark}: too close to the publisher's ${BRIGHT} to tell them apart`);
    log(`the WHEP viewer decodes A's camera (brightness ${dark.toFixed(0)})`);
    const withViewer = await known(a);
    if (withViewer.length !== before.length) {
      throw new Error(`A's page learnt of the WHEP viewer: ${before} -> ${withViewer}`);
    }

    // 2. A falls silent; a WHIP publisher talks and shows a bright picture.
    await a.page.click('#mute');
    const publisher = startSide('publish', ting.origin, 'Hall camera');
    sides.push(publisher);
    await started(publisher, 'the WHIP publisher');
    let id = null;
    await waitFor('A to be told of the WHIP publisher', async () => {
      const now = await known(a);
      id = now.find((x) => !before.includes(x)) ?? null;
      return { ok: id !== null, why: `A knows ${now}` };
    }, 20000);
    const other = { id, label: 'the WHIP publisher' };
    await waitFor('A to decode the WHIP camera', () => flowing(a, other, 'camera'), 20000, 100);
    await waitFor('A to hear the WHIP microphone', () => flowing(a, other, 'microphone'), 20000, 100);
    log('A decodes the WHIP publisher\'s camera and hears its microphone');
    const framesBefore = latest(viewer).frames;
    await waitFor('the WHEP viewer to switch to the publisher, the new speaker', () => {
      const r = latest(viewer);
      return { ok: r.frames > framesBefore && r.brightness > BRIGHT - 30, why: JSON.stringify(r) };
    }, 20000, 250);
    log(`the WHEP viewer switched to the publisher (brightness ${latest(viewer).brightness.toFixed(0)})`);

    // 3. DELETE: the publisher leaves the meeting.
    await stopSide(publisher, 'the WHIP publisher');
    await waitFor('A to see the publisher leave', async () => {
      const now = await known(a);
      return { ok: !now.includes(id), why: `A knows ${now}` };
    }, 20000);
    await stopSide(viewer, 'the WHEP viewer');

    // 4. A client written from docs/protocol.md, on aiortc.
    const client = startSide('join', ting.origin, 'Aiortc');
    sides.push(client);
    let clientId = null;
    await waitFor('the aiortc client to join', () => {
      if (client.exited !== null) {
        throw Object.assign(new Error(`the aiortc client exited with ${client.exited}: ${client.stderr}`), { fatal: true });
      }
      clientId = client.lines.find((l) => l.id)?.id ?? null;
      return { ok: clientId !== null, why: 'not joined yet' };
    }, 20000);
    const aiortc = { id: clientId, label: 'the aiortc client' };
    await a.page.click('#mute');
    for (const source of ['camera', 'screen', 'microphone']) {
      await waitFor(`A to receive the aiortc client's ${source}`, () => flowing(a, aiortc, source), 20000, 100);
    }
    await waitFor('the aiortc client to decode A\'s camera', () => {
      const seen = client.lines.at(-1)?.decoded?.[a.id]?.camera ?? 0;
      return { ok: seen >= 10, why: `${seen} frames of A's camera: ${JSON.stringify(client.lines.at(-1))}` };
    }, 20000, 250);
    log('A and the aiortc client decode each other\'s camera; A decodes its screen and hears it');
    await stopSide(client, 'the aiortc client');

    // 5. webrtcbin publishes over WHIP.
    const before5 = await known(a);
    const gst = startSide('gst-publish', ting.origin, 'GStreamer');
    sides.push(gst);
    await started(gst, 'the webrtcbin WHIP publisher');
    let gstId = null;
    await waitFor('A to be told of the webrtcbin publisher', async () => {
      const now = await known(a);
      gstId = now.find((x) => !before5.includes(x)) ?? null;
      return { ok: gstId !== null, why: `A knows ${now}; webrtcbin says ${JSON.stringify(gst.lines.at(-1))}` };
    }, 20000);
    const gstOther = { id: gstId, label: 'the webrtcbin publisher' };
    await waitFor('A to decode the webrtcbin camera', () => flowing(a, gstOther, 'camera'), 20000, 100);
    await waitFor('A to hear the webrtcbin microphone', () => flowing(a, gstOther, 'microphone'), 20000, 100);
    log('A decodes the webrtcbin WHIP publisher\'s camera and hears it');
    await stopSide(gst, 'the webrtcbin WHIP publisher');
    await waitFor('A to see the webrtcbin publisher leave', async () => {
      const now = await known(a);
      return { ok: !now.includes(gstId), why: `A knows ${now}` };
    }, 20000);

    // 6. webrtcbin watches over WHEP.
    const before6 = await known(a);
    const gstViewer = startSide('gst-watch', ting.origin, 'GStreamer screen');
    sides.push(gstViewer);
    await started(gstViewer, 'the webrtcbin WHEP viewer');
    await waitFor('the webrtcbin viewer to decode video and audio', () => {
      const r = gstViewer.lines.filter((l) => 'frames' in l).at(-1) ?? {};
      return { ok: r.frames >= 10 && r.audio_buffers >= 10, why: JSON.stringify(gstViewer.lines.at(-1)) };
    }, 20000, 250);
    log('the webrtcbin WHEP viewer decodes video and audio');
    const after6 = await known(a);
    if (after6.length !== before6.length) throw new Error(`A's page learnt of the webrtcbin viewer: ${before6} -> ${after6}`);
    await stopSide(gstViewer, 'the webrtcbin WHEP viewer');
    if (a.problems.length) throw new Error(`A's page had problems: ${a.problems.join('; ')}`);
  } finally {
    for (const s of sides) s.proc.kill('SIGKILL');
    await closeParticipant(a);
  }
});
