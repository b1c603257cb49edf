#!/usr/bin/env node
// End-to-end test of the browser client: three headless Chromium participants meet in one
// room of a real `ting` process, through the real UI.
//
//   node tests/browser/meeting.test.mjs          (from the repository root)
//
// Environment:
//   TING_BIN          the ting binary (default target/debug/ting, relative to the repo root)
//   TING_LOG_LEVEL    the server's log level (default info); its log is saved beside the
//                     screenshots
//   CHROMIUM          the browser (default /usr/bin/chromium)
//
// TING_* variables reach the server (it reads them as settings), e.g.
// TING_LIMITS_MAX_MESSAGE_BYTES.
//
// Media goes to the server's one candidate, 127.0.0.1. For a network namespace with nothing
// but loopback (as root):
//   unshare -n sh -c 'ip link set lo up && exec "$@"' sh node tests/browser/meeting.test.mjs
//
// Needs `npm install` in tests/browser once (playwright-core, which downloads no browser).
// Exits 0 when every check passed, 1 otherwise. Every wait has a deadline; the screenshots of
// each phase and the server log go to tests/browser/screenshots/<timestamp>/.

import { spawn } from 'node:child_process';
import { once } from 'node:events';
import { createWriteStream } from 'node:fs';
import { mkdir, mkdtemp, readFile, rm } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { dirname, join, resolve } from 'node:path';
import { fileURLToPath } from 'node:url';
import { chromium } from 'playwright-core';

const HERE = dirname(fileURLToPath(import.meta.url));
const ROOT = resolve(HERE, '../..');
const TING_BIN = resolve(ROOT, process.env.TING_BIN ?? 'target/debug/ting');
const CHROMIUM = process.env.CHROMIUM ?? '/usr/bin/chromium';
const ROOM = 'e2e-browser';

// Headless Chromium with a fake camera, microphone and screen, no permission prompts,
// loopback ICE candidates, and sound allowed without a click. The background-networking
// flags keep Chromium from calling out to the network.
const CHROMIUM_ARGS = [
  '--headless',
  '--no-sandbox',
  '--disable-gpu',
  '--disable-quic',
  '--no-first-run',
  '--disable-background-networking',
  '--disable-component-update',
  '--disable-sync',
  '--use-fake-device-for-media-stream=fps=30',
  '--use-fake-ui-for-media-stream',
  '--allow-loopback-in-peer-connection',
  '--autoplay-policy=no-user-gesture-required',
  '--disable-features=WebRtcHideLocalIpsWithMdns',
];

const started = Date.now();
const elapsed = () => `${((Date.now() - started) / 1000).toFixed(1).padStart(5)}s`;
const log = (msg) => console.log(`[${elapsed()}] ${msg}`);
const sleep = (ms) => new Promise((r) => setTimeout(r, ms));

/**
 * Polls `check` until it returns {ok: true} or `timeoutMs` passes. `check` returns
 * {ok, why}; the last `why` goes into the failure message. An error thrown by `check` counts
 * as "not yet", unless it has `fatal: true`.
 */
async function waitFor(what, check, timeoutMs = 20000, everyMs = 250) {
  const deadline = Date.now() + timeoutMs;
  let last = null;
  for (;;) {
    try {
      last = await check();
    } catch (e) {
      if (e.fatal) throw e;
      last = { ok: false, why: `threw: ${e.message}` };
    }
    if (last.ok) return last;
    if (Date.now() > deadline) {
      throw new Error(`timed out after ${timeoutMs / 1000}s waiting for ${what}: ${last.why}`);
    }
    await sleep(everyMs);
  }
}

// ---- the server -----------------------------------------------------------------------

async function startTing(logPath) {
  log(`starting ${TING_BIN}`);
  const proc = spawn(
    TING_BIN,
    ['--http-listen', '127.0.0.1:0', '--media-port', '0', '--room', ROOM],
    {
      cwd: ROOT,
      env: { ...process.env, TING_LOG_LEVEL: process.env.TING_LOG_LEVEL ?? 'info' },
      stdio: ['ignore', 'pipe', 'pipe'],
    },
  );
  const logFile = createWriteStream(logPath);
  proc.stderr.pipe(logFile);
  let stdout = '';
  const port = await new Promise((resolvePort, reject) => {
    const timer = setTimeout(() => reject(new Error('ting printed no meeting link within 20 s')), 20000);
    proc.on('error', (e) => {
      clearTimeout(timer);
      reject(new Error(`cannot start ${TING_BIN}: ${e.message} (build it: cargo build -p ting-server)`));
    });
    proc.on('exit', (code) => {
      clearTimeout(timer);
      reject(new Error(`ting exited with ${code} before it was ready; log: ${logPath}`));
    });
    proc.stdout.on('data', (chunk) => {
      stdout += chunk;
      const m = stdout.match(/ting is running\. Meeting link: (http:\/\/[^\s]+)/);
      if (m) {
        clearTimeout(timer);
        resolvePort(Number(new URL(m[1]).port));
      }
    });
  });
  log(`ting listens on 127.0.0.1:${port} (pid ${proc.pid}); log: ${logPath}`);
  return { proc, port };
}

async function stopTing(proc) {
  if (!proc || proc.exitCode !== null || proc.signalCode !== null) return;
  const exited = once(proc, 'exit');
  proc.kill('SIGTERM');
  const t = setTimeout(() => proc.kill('SIGKILL'), 5000);
  await exited;
  clearTimeout(t);
}

// ---- the browsers ---------------------------------------------------------------------

async function launchParticipant(label, name) {
  const profile = await mkdtemp(join(tmpdir(), `ting-e2e-${label}-`));
  const context = await chromium.launchPersistentContext(profile, {
    executablePath: CHROMIUM,
    headless: true,
    args: CHROMIUM_ARGS,
    // Playwright mutes audio by default; the test wants audio to play into <audio>.
    ignoreDefaultArgs: ['--mute-audio'],
    viewport: { width: 1280, height: 800 },
  });
  const page = context.pages()[0] ?? (await context.newPage());
  const p = { label, name, profile, context, page, problems: [] };
  page.on('pageerror', (e) => {
    p.problems.push(`page error: ${e.message}`);
    log(`${label}: page error: ${e.message}`);
  });
  page.on('console', (msg) => {
    if (msg.type() === 'error') {
      p.problems.push(`console error: ${msg.text()}`);
      log(`${label}: console error: ${msg.text()}`);
    }
  });
  return p;
}

async function joinMeeting(p, port) {
  const url = `http://127.0.0.1:${port}/m/${ROOM}`;
  // `load` can hang on pages with <video> elements holding empty streams.
  await p.page.goto(url, { waitUntil: 'domcontentloaded' });
  await p.page.fill('#name', p.name);
  await p.page.click('#join');
  // Either the meeting view, or the error the server sent instead (shown on the page).
  await waitFor(`${p.label} to enter the meeting`, async () => {
    const r = await p.page.evaluate(() => ({
      inMeeting: !document.getElementById('meeting').hidden,
      errors: [...document.querySelectorAll('#errors .error p')].map((e) => e.textContent),
    }));
    if (r.errors.length) {
      throw Object.assign(new Error(`${p.label} could not join; the page shows: ${r.errors.join(' | ')}`), { fatal: true });
    }
    return { ok: r.inMeeting, why: 'still on the pre-join view' };
  }, 20000);
  p.id = await p.page.evaluate(() => window.ting.participantId);
  log(`${p.label} (${p.name}) joined as ${p.id}`);
}

/** What one page receives: per receive slot, its inbound-rtp numbers, plus the slot map. */
function sample(p) {
  return p.page.evaluate(async () => {
    const t = window.ting;
    const pc = t.pc;
    if (!pc) return null;
    const kinds = new Map(t.receivers.map((r) => [r.mid, r.kind]));
    const receivers = {};
    for (const tr of pc.getTransceivers()) {
      if (!kinds.has(tr.mid)) continue;
      const stats = await tr.receiver.getStats();
      let inbound = null;
      stats.forEach((s) => {
        if (s.type === 'inbound-rtp') inbound = s;
      });
      receivers[tr.mid] = {
        kind: kinds.get(tr.mid),
        ssrc: inbound?.ssrc ?? null,
        bytesReceived: inbound?.bytesReceived ?? 0,
        framesDecoded: inbound?.framesDecoded ?? 0,
        frameWidth: inbound?.frameWidth ?? 0,
        frameHeight: inbound?.frameHeight ?? 0,
      };
    }
    return { slots: t.slots, receivers, connectionState: pc.connectionState };
  });
}

/** The mid of the slot that carries `source` of `participant` on this page, or null. */
function midOf(s, participant, source) {
  for (const [mid, v] of Object.entries(s.slots)) {
    if (v.participant === participant && v.source === source) return mid;
  }
  return null;
}

/**
 * Samples twice, one second apart, and checks that for each of `others` the slot mapped to
 * its `source` is growing: framesDecoded for video, bytesReceived for audio. Returns
 * {ok, why, ssrcs}.
 */
async function flowing(p, others, source) {
  const a = await sample(p);
  await sleep(1000);
  const b = await sample(p);
  if (!a || !b) return { ok: false, why: 'no PeerConnection yet' };
  const video = source !== 'microphone';
  const ssrcs = new Set();
  const problems = [];
  for (const o of others) {
    const mid = midOf(b, o.id, source);
    if (!mid) {
      problems.push(`no slot maps ${o.label}'s ${source}`);
      continue;
    }
    const x = a.receivers[mid];
    const y = b.receivers[mid];
    if (!y) {
      problems.push(`slot ${mid} is not a receive slot`);
      continue;
    }
    const wantKind = source === 'microphone' ? 'audio' : source === 'camera' ? 'video' : 'screen';
    if (y.kind !== wantKind) problems.push(`slot ${mid} (${y.kind}) carries ${source}`);
    const metric = video ? 'framesDecoded' : 'bytesReceived';
    if (!(y[metric] > 0 && y[metric] > (x?.[metric] ?? 0))) {
      problems.push(`${o.label}'s ${source} on mid ${mid}: ${metric} ${x?.[metric]} -> ${y[metric]}`);
      continue;
    }
    ssrcs.add(y.ssrc);
  }
  if (!problems.length && ssrcs.size !== others.length) {
    problems.push(`expected ${others.length} distinct SSRCs, got ${[...ssrcs].join(', ')}`);
  }
  return {
    ok: problems.length === 0,
    why: `${problems.join('; ')} (pc ${b.connectionState})`,
    sample: b,
  };
}

/** Names on the camera tiles of a page. */
function tileNames(p) {
  return p.page.$$eval('#tiles [data-participant] .name', (els) => els.map((e) => e.textContent));
}

/** The server's CPU seconds so far, from its /metrics; null if unreadable. */
async function serverCpuSeconds(port) {
  try {
    const text = await (await fetch(`http://127.0.0.1:${port}/metrics`)).text();
    const line = text.split('\n').find((l) => l.startsWith('process_cpu_seconds_total '));
    return line ? Number(line.split(' ')[1]) : null;
  } catch {
    return null;
  }
}

async function screenshot(p, dir, phase) {
  const path = join(dir, `${phase}-${p.label}.png`);
  await p.page.screenshot({ path });
}

/** The local and remote address of the selected ICE candidate pair. */
function selectedPair(p) {
  return p.page.evaluate(async () => {
    const stats = await window.ting.pc.getStats();
    let transport = null;
    stats.forEach((s) => {
      if (s.type === 'transport') transport = s;
    });
    const pair = transport && stats.get(transport.selectedCandidatePairId);
    if (!pair) return null;
    const local = stats.get(pair.localCandidateId);
    const remote = stats.get(pair.remoteCandidateId);
    return { local: local?.address ?? local?.ip, remote: remote?.address ?? remote?.ip };
  });
}

// ---- the scenario ---------------------------------------------------------------------

async function scenario(port, shots) {
  const [a, b, c] = await Promise.all([
    launchParticipant('A', 'Aino Virtanen'),
    launchParticipant('B', 'Björn Ek'),
    launchParticipant('C', 'Chidi Okafor'),
  ]);
  const everyone = [a, b, c];
  const othersOf = (p) => everyone.filter((o) => o !== p);
  log('three Chromium instances running');
  try {
    for (const p of everyone) await joinMeeting(p, port);

    log('checking that every page shows the other two names');
    for (const p of everyone) {
      await waitFor(`${p.label} to show both other names`, async () => {
        const names = await tileNames(p);
        const missing = othersOf(p).filter((o) => !names.includes(o.name));
        return { ok: missing.length === 0, why: `tiles: ${JSON.stringify(names)}` };
      }, 15000);
    }

    log('checking video and audio from both others on every page');
    for (const p of everyone) {
      const v = await waitFor(`${p.label} to decode both other cameras`,
        () => flowing(p, othersOf(p), 'camera'), 30000);
      await waitFor(`${p.label} to receive both other microphones`,
        () => flowing(p, othersOf(p), 'microphone'), 20000);
      const cams = othersOf(p).map((o) => {
        const r = v.sample.receivers[midOf(v.sample, o.id, 'camera')];
        return `${o.label} ${r.frameWidth}x${r.frameHeight} (${r.framesDecoded} frames)`;
      });
      log(`  ${p.label} decodes ${cams.join(', ')}; hears both`);
    }
    // The server's only candidate is 127.0.0.1, so media never leaves the machine. Chromium
    // may still send from another local address of its own (the kernel loops that back
    // too); run the test under `unshare -n` for a namespace with loopback only.
    const locals = new Set();
    for (const p of everyone) {
      const pair = await selectedPair(p);
      if (!pair || pair.remote !== '127.0.0.1') {
        throw new Error(`${p.label}'s media does not go to the server's 127.0.0.1: ${JSON.stringify(pair)}`);
      }
      locals.add(pair.local);
    }
    log(`  all media goes to the server at 127.0.0.1 (browsers send from ${[...locals].join(', ')})`);
    // The fake microphone beeps: the server hears it through the audio-level header
    // extension and every page should highlight the others as speaking.
    for (const p of everyone) {
      await waitFor(`${p.label} to show the others speaking`, async () => {
        const speaking = await p.page.$$eval('#tiles .tile.speaking', (els) => els.map((e) => e.dataset.participant));
        const silent = othersOf(p).filter((o) => !speaking.includes(o.id)).map((o) => o.label);
        return { ok: silent.length === 0, why: `not shown speaking: ${silent.join(', ')}` };
      }, 10000, 100);
    }
    log('  every page shows the others speaking');
    for (const p of everyone) await screenshot(p, shots, '1-everyone');

    // A figure, not a check: what three participants cost the server (its own /metrics).
    const cpu0 = await serverCpuSeconds(port);
    const t0 = Date.now();
    await sleep(5000);
    const cpu1 = await serverCpuSeconds(port);
    if (cpu0 !== null && cpu1 !== null) {
      const share = ((cpu1 - cpu0) / ((Date.now() - t0) / 1000)) * 100;
      log(`  server CPU with 3 participants: ${share.toFixed(1)} % of one core (${TING_BIN})`);
    }

    log(`${a.label} shares the screen`);
    await a.page.click('#share');
    await a.page.waitForSelector(`#screens [data-participant="${a.id}"] video[data-source="screen"]`,
      { state: 'visible', timeout: 10000 });
    for (const p of [b, c]) {
      await p.page.waitForSelector(`#screens [data-participant="${a.id}"] video[data-source="screen"]`,
        { state: 'visible', timeout: 20000 });
      const s = await waitFor(`${p.label} to decode ${a.label}'s screen`,
        () => flowing(p, [a], 'screen'), 20000);
      const r = s.sample.receivers[midOf(s.sample, a.id, 'screen')];
      const sizes = await p.page.evaluate((id) => {
        const area = (el) => {
          const r = el.getBoundingClientRect();
          return r.width * r.height;
        };
        const screen = document.querySelector(`#screens [data-participant="${id}"]`);
        const camera = document.querySelector(`#tiles [data-participant="${id}"]`);
        return { screen: area(screen), camera: area(camera) };
      }, a.id);
      if (!(sizes.screen > 2 * sizes.camera)) {
        throw new Error(`${p.label}: the screen tile (${sizes.screen}px²) is not clearly larger than a camera tile (${sizes.camera}px²)`);
      }
      log(`  ${p.label} decodes ${a.label}'s screen at ${r.frameWidth}x${r.frameHeight} (${r.framesDecoded} frames), tile ${Math.round(sizes.screen / sizes.camera)}x a camera tile`);
    }
    // Cameras keep flowing next to the screen share.
    for (const p of [b, c]) {
      await waitFor(`${p.label} to still decode both cameras`, () => flowing(p, othersOf(p), 'camera'), 10000);
    }
    for (const p of everyone) await screenshot(p, shots, '2-screen-share');

    log(`${a.label} mutes`);
    await a.page.click('#mute');
    await waitFor(`${a.label}'s button to offer unmuting`,
      async () => ({ ok: (await a.page.textContent('#mute')) === 'Unmute', why: 'label unchanged' }), 5000);
    for (const p of [b, c]) {
      await waitFor(`${p.label} to show ${a.label} muted`, async () => {
        const muted = await p.page.$eval(`#tiles [data-participant="${a.id}"]`,
          (el) => el.dataset.muted === 'true' && !el.querySelector('.muted-badge').hidden);
        return { ok: muted, why: 'tile not marked muted' };
      }, 10000);
    }
    // A muted microphone sends silence, so A stops "speaking" too.
    for (const p of [b, c]) {
      await waitFor(`${p.label} to stop showing ${a.label} speaking`, async () => {
        const speaking = await p.page.$eval(`#tiles [data-participant="${a.id}"]`, (el) => el.classList.contains('speaking'));
        return { ok: !speaking, why: 'still highlighted' };
      }, 10000);
    }
    log(`  ${b.label} and ${c.label} show ${a.label} muted and no longer speaking`);
    for (const p of everyone) await screenshot(p, shots, '3-muted');

    log(`${c.label} leaves`);
    await c.page.click('#leave');
    await c.page.waitForSelector('#prejoin:not([hidden]) #join', { timeout: 10000 });
    for (const p of [a, b]) {
      await waitFor(`${p.label} to remove ${c.label}'s tile`, async () => {
        const n = await p.page.$$eval(`[data-participant="${c.id}"]`, (els) => els.length);
        return { ok: n === 0, why: `${n} elements of ${c.label} left` };
      }, 10000);
    }
    log(`  ${a.label} and ${b.label} removed ${c.label}; ${c.label} is back at the pre-join view`);
    for (const p of everyone) await screenshot(p, shots, '4-after-leave');

    // Errors the client showed to its user are failures of this scenario.
    for (const p of everyone) {
      const shown = await p.page.$$eval('#errors .error', (els) => els.map((e) => e.textContent));
      if (shown.length) throw new Error(`${p.label} showed errors: ${JSON.stringify(shown)}`);
      if (p.problems.length) throw new Error(`${p.label} had script errors: ${p.problems.join('; ')}`);
    }
  } catch (e) {
    for (const p of everyone) await screenshot(p, shots, 'failure').catch(() => {});
    throw e;
  } finally {
    await Promise.all(everyone.map(async (p) => {
      await p.context.close().catch(() => {});
      await rm(p.profile, { recursive: true, force: true }).catch(() => {});
    }));
  }
}

async function main() {
  const stamp = new Date().toISOString().replace(/[:.]/g, '-');
  const shots = join(HERE, 'screenshots', stamp);
  await mkdir(shots, { recursive: true });
  const logPath = join(shots, 'ting.log');
  let ting = null;
  let failed = null;
  const onSignal = async () => {
    await stopTing(ting?.proc);
    process.exit(130);
  };
  process.once('SIGINT', onSignal);
  process.once('SIGTERM', onSignal);
  try {
    ting = await startTing(logPath);
    await scenario(ting.port, shots);
  } catch (e) {
    failed = e;
  } finally {
    await stopTing(ting?.proc);
  }
  log(`screenshots and server log: ${shots}`);
  if (failed) {
    console.error(`\nFAIL after ${elapsed().trim()}: ${failed.message}`);
    const serverLog = await readFile(logPath, 'utf8').catch(() => '');
    const tail = serverLog.trimEnd().split('\n').slice(-25).join('\n');
    if (tail) console.error(`\nlast lines of the server log:\n${tail}`);
    process.exit(1);
  }
  console.log(`\nPASS in ${elapsed().trim()}`);
}

main();
