// What the browser tests share: starting and stopping ting, launching headless Chromium
// participants, joining through the real UI, waiting with deadlines, reading WebRTC stats,
// and the run-and-report wrapper that saves screenshots and the server log.
//
// Environment (read here for every test):
//   TING_BIN          the ting binary (default target/debug/ting, relative to the repo root)
//   TING_LOG_LEVEL    the server's log level (default: ting's own, plus its bandwidth
//                     estimates, which each test summarises at the end); its log is saved
//                     beside the screenshots
//   CHROMIUM          the browser (default /usr/bin/chromium)
// TING_* variables reach the server (it reads them as settings).

import { spawn } from 'node:child_process';
import { randomBytes } from 'node:crypto';
import { once } from 'node:events';
import { createWriteStream } from 'node:fs';
import { mkdir, mkdtemp, readFile, rm, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { dirname, join, resolve } from 'node:path';
import { fileURLToPath } from 'node:url';
import { request as httpsRequest } from 'node:https';
import { chromium } from 'playwright-core';

export const HERE = dirname(fileURLToPath(import.meta.url));
export const ROOT = resolve(HERE, '../..');
export const TING_BIN = resolve(ROOT, process.env.TING_BIN ?? 'target/debug/ting');
export const CHROMIUM = process.env.CHROMIUM ?? '/usr/bin/chromium';

/**
 * Headless Chromium with a fake camera, microphone and screen, no permission prompts,
 * loopback ICE candidates, and sound allowed without a click. The background-networking
 * flags keep Chromium from calling out to the network. `fps` sets the fake camera's frame
 * rate: lower costs less CPU to encode. `grantAll: false` leaves out the flag that grants
 * every device: then only the `permissions` given to launchParticipant are granted.
 */
export function chromiumArgs({ fps = 30, grantAll = true } = {}) {
  const args = [
    '--headless',
    '--no-sandbox',
    '--disable-gpu',
    '--disable-quic',
    '--no-first-run',
    '--disable-background-networking',
    '--disable-component-update',
    '--disable-sync',
    `--use-fake-device-for-media-stream=fps=${fps}`,
    '--use-fake-ui-for-media-stream',
    '--allow-loopback-in-peer-connection',
    '--autoplay-policy=no-user-gesture-required',
    '--disable-features=WebRtcHideLocalIpsWithMdns',
  ];
  return grantAll ? args : args.filter((a) => a !== '--use-fake-ui-for-media-stream');
}

const started = Date.now();
export const elapsed = () => `${((Date.now() - started) / 1000).toFixed(1).padStart(5)}s`;
export const log = (msg) => console.log(`[${elapsed()}] ${msg}`);
export const sleep = (ms) => new Promise((r) => setTimeout(r, ms));

/**
 * Polls `check` until it returns {ok: true} or `timeoutMs` passes. `check` returns
 * {ok, why}; the last `why` goes into the failure message. An error thrown by `check` counts
 * as "not yet", unless it has `fatal: true`.
 */
export async function waitFor(what, check, timeoutMs = 20000, everyMs = 250) {
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

/** ting's default log level, plus the trace of each connection's downlink estimate: which
 *  layers the server sends a browser depends on it, so a test that waits long for a layer
 *  can say why. */
const LOG_LEVEL = 'info,str0m::format::payload_params=error,ting_server::worker::core=trace';

/** Everyone who joined in this run, for the summary of estimates: {label, id}. */
const joined = [];

/** The server's downlink estimate for each participant over the run, from its log. */
async function summariseEstimates(logPath) {
  const text = await readFile(logPath, 'utf8').catch(() => '');
  const byId = new Map();
  for (const m of text.matchAll(/downlink estimate participant=([0-9a-f]{16}) bps=Some\((\d+)\)/g)) {
    if (!byId.has(m[1])) byId.set(m[1], []);
    byId.get(m[1]).push(Number(m[2]) / 1000);
  }
  const parts = [];
  for (const { label, id } of joined) {
    const v = byId.get(id);
    if (!v?.length) continue;
    const sorted = [...v].sort((x, y) => x - y);
    const at = (q) => Math.round(sorted[Math.floor(q * (sorted.length - 1))]);
    parts.push(`${label} ${at(0)}/${at(0.5)}/${at(1)}`);
  }
  if (parts.length) log(`the server's downlink estimates, kbit/s min/median/max: ${parts.join(', ')}`);
}

/** Where the running ting serves its pages (http://… or https://…), its development
 *  certificate's public-key hash for Chromium, and the certificate's SHA-256 fingerprint
 *  for the harness's own requests; set by startTing. */
let served = { origin: null, spki: null, certSha256: null };

/** Starts ting on ports the system picks; resolves once it printed its meeting link.
 *  With `TING_HTTP_TLS_SELF_SIGNED=true` in `env` it serves HTTPS with its development
 *  certificate: browsers launched afterwards are told to trust exactly that certificate,
 *  and the harness's own requests pin it. */
export async function startTing(logPath, { room, env = {}, listen = '127.0.0.1:0', args: extra = [] } = {}) {
  log(`starting ${TING_BIN}`);
  const args = ['--http-listen', listen, '--media-port', '0', ...extra];
  if (room) args.push('--room', room);
  const proc = spawn(TING_BIN, args, {
    cwd: ROOT,
    env: { ...process.env, TING_LOG_LEVEL: process.env.TING_LOG_LEVEL ?? LOG_LEVEL, ...env },
    stdio: ['ignore', 'pipe', 'pipe'],
  });
  // Even if the test itself crashes, the server must not outlive it.
  process.on('exit', () => {
    if (proc.exitCode === null && proc.signalCode === null) proc.kill('SIGKILL');
  });
  const logFile = createWriteStream(logPath);
  proc.stderr.pipe(logFile);
  let stderr = '';
  proc.stderr.on('data', (chunk) => {
    if (stderr.length < 1 << 16) stderr += chunk;
  });
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
      const m = stdout.match(/ting is running\. Meeting link: (https?:\/\/[^\s]+)/);
      if (m) {
        clearTimeout(timer);
        const url = new URL(m[1]);
        served = {
          origin: url.origin,
          spki: stderr.match(/spki_sha256=([A-Za-z0-9+/=]+)/)?.[1] ?? null,
          certSha256: stderr.match(/cert_sha256=([0-9A-F:]+)/)?.[1] ?? null,
        };
        if (url.protocol === 'https:' && !served.spki) {
          reject(new Error('ting serves HTTPS but logged no spki_sha256 for its certificate'));
        }
        resolvePort(Number(url.port));
      }
    });
  }).catch(async (e) => {
    await stopTing(proc);
    throw e;
  });
  log(`ting listens on ${served.origin} (pid ${proc.pid}); log: ${logPath}`);
  return { proc, port, origin: served.origin };
}

export async function stopTing(proc) {
  if (!proc || proc.exitCode !== null || proc.signalCode !== null) return;
  const exited = once(proc, 'exit');
  proc.kill('SIGTERM');
  const t = setTimeout(() => proc.kill('SIGKILL'), 5000);
  await exited;
  clearTimeout(t);
}

/** A random secret for the server's settings (API key, token key): 43 URL-safe characters. */
export function randomSecret() {
  return randomBytes(32).toString('base64url');
}

/**
 * Calls ting's REST API on the same port as the pages, with the API key as bearer token.
 * Resolves with {status, body}: the body parsed as JSON, or null if it is not.
 */
export async function api(port, key, method, path, body = undefined) {
  const headers = { authorization: `Bearer ${key}` };
  if (body !== undefined) headers['content-type'] = 'application/json';
  const res = await request(`${origin(port)}${path}`, {
    method,
    headers,
    body: body === undefined ? undefined : JSON.stringify(body),
  });
  const text = res.text;
  let parsed = null;
  try {
    parsed = text ? JSON.parse(text) : null;
  } catch {
    parsed = null;
  }
  return { status: res.status, body: parsed, text };
}

/** The origin of the ting on `port`. */
function origin(port) {
  return served.origin ?? `http://127.0.0.1:${port}`;
}

/**
 * One HTTP(S) request to ting: {status, text, headers}. Over HTTPS the server's certificate
 * must be the one it announced (its SHA-256 fingerprint, pinned), since a development
 * certificate is in no trust store.
 */
export async function request(url, { method = 'GET', headers = {}, body = undefined } = {}) {
  if (!url.startsWith('https:')) {
    const res = await fetch(url, { method, headers, body });
    return { status: res.status, text: await res.text(), headers: res.headers };
  }
  return new Promise((resolveReq, reject) => {
    const req = httpsRequest(url, { method, headers, rejectUnauthorized: false, timeout: 10000 }, (res) => {
      const got = res.socket.getPeerCertificate()?.fingerprint256;
      if (!served.certSha256 || got !== served.certSha256) {
        res.destroy();
        reject(new Error(`ting's certificate is not the one it announced (${got} vs ${served.certSha256})`));
        return;
      }
      let text = '';
      res.setEncoding('utf8');
      res.on('data', (c) => { text += c; });
      res.on('end', () => resolveReq({ status: res.statusCode, text, headers: new Headers(res.headers) }));
    });
    req.on('timeout', () => req.destroy(new Error(`no answer from ${url} within 10 s`)));
    req.on('error', reject);
    if (body !== undefined) req.write(body);
    req.end();
  });
}

/** The server's CPU seconds so far, from its /metrics; null if unreadable. */
export async function serverCpuSeconds(port) {
  try {
    const { text } = await request(`${origin(port)}/metrics`);
    const line = text.split('\n').find((l) => l.startsWith('process_cpu_seconds_total '));
    return line ? Number(line.split(' ')[1]) : null;
  } catch {
    return null;
  }
}

// ---- the browsers ---------------------------------------------------------------------

/**
 * Writes a WAV file that the server's speaker detection takes for a voice: syllables of
 * about a fifth of a second, each a vowel (harmonics of a gliding pitch shaped by formants)
 * with short gaps. Chromium's default fake microphone beeps only briefly, which the server
 * (rightly) does not count as speaking; a steady tone would not do either, as the
 * browser's noise suppression learns it as noise within seconds and removes it.
 */
export async function writeVoiceWav(path, seconds = 12) {
  const rate = 16000;
  const n = rate * seconds;
  const buf = Buffer.alloc(44 + n * 2);
  buf.write('RIFF', 0);
  buf.writeUInt32LE(36 + n * 2, 4);
  buf.write('WAVEfmt ', 8);
  buf.writeUInt32LE(16, 16);
  buf.writeUInt16LE(1, 20); // PCM
  buf.writeUInt16LE(1, 22); // mono
  buf.writeUInt32LE(rate, 24);
  buf.writeUInt32LE(rate * 2, 28);
  buf.writeUInt16LE(2, 32);
  buf.writeUInt16LE(16, 34);
  buf.write('data', 36);
  buf.writeUInt32LE(n * 2, 40);
  // Formants (F1, F2, F3 in Hz) of a few vowels, taken in turn.
  const vowels = [[730, 1090, 2440], [270, 2290, 3010], [300, 870, 2240], [530, 1840, 2480], [570, 840, 2410]];
  const syllable = 0.22;
  const gap = 0.06;
  let phase = 0;
  for (let i = 0; i < n; i++) {
    const t = i / rate;
    const k = Math.floor(t / (syllable + gap));
    const u = t - k * (syllable + gap);
    let s = 0;
    if (u < syllable) {
      const [f1, f2, f3] = vowels[k % vowels.length];
      // A pitch that glides within the syllable and differs between syllables.
      const f0 = 120 + 40 * Math.sin(k * 1.7) + 30 * (u / syllable);
      phase += (2 * Math.PI * f0) / rate;
      for (let h = 1; h * f0 < 3500; h++) {
        const f = h * f0;
        const formant = (c, w) => 1 / (1 + ((f - c) / w) ** 2);
        const amp = formant(f1, 90) + 0.7 * formant(f2, 110) + 0.4 * formant(f3, 150) + 0.05;
        s += (amp * Math.sin(h * phase)) / Math.sqrt(h);
      }
      // Syllable envelope: quick rise, slower fall.
      s *= Math.min(1, u / 0.02) * Math.min(1, (syllable - u) / 0.05) * 0.25;
    }
    buf.writeInt16LE(Math.round(Math.max(-1, Math.min(1, s)) * 30000), 44 + i * 2);
  }
  await writeFile(path, buf);
}

/**
 * Launches one participant's browser. `args` are Chromium's flags; `audioFile` replaces
 * the fake microphone's beep with a WAV file; `mute` keeps Playwright's --mute-audio
 * (tests that do not listen save the CPU of playing sound); `executable` runs another
 * program in Chromium's place (a wrapper that starts it in a network namespace).
 */
export async function launchParticipant(label, name, {
  args = chromiumArgs(), audioFile = null, mute = false, viewport = { width: 1280, height: 800 },
  permissions = undefined, executable = CHROMIUM,
} = {}) {
  const profile = await mkdtemp(join(tmpdir(), `ting-e2e-${label}-`));
  let flags = audioFile ? [...args, `--use-file-for-fake-audio-capture=${audioFile}`] : args;
  // Trust exactly the running ting's development certificate, nothing more.
  if (served.spki) flags = [...flags, `--ignore-certificate-errors-spki-list=${served.spki}`];
  let context;
  try {
    context = await chromium.launchPersistentContext(profile, {
      executablePath: executable,
      headless: true,
      args: flags,
      // Playwright mutes audio by default; some tests want audio to play into <audio>.
      ignoreDefaultArgs: mute ? [] : ['--mute-audio'],
      viewport,
      permissions,
    });
  } catch (e) {
    await rm(profile, { recursive: true, force: true }).catch(() => {});
    throw e;
  }
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

export async function closeParticipant(p) {
  await p.context.close().catch(() => {});
  await rm(p.profile, { recursive: true, force: true }).catch(() => {});
}

/** The texts of the errors a page shows: its error messages, and the message of the end
 *  view if it shows one (removed, not let in, the meeting ended). */
export function shownErrors(p) {
  return p.page.evaluate(() => {
    const errors = [...document.querySelectorAll('#errors .error')]
      .map((e) => ({ code: e.dataset.code, text: e.querySelector('p').textContent }));
    const ended = document.getElementById('ended');
    if (ended && !ended.hidden) {
      errors.push({ code: ended.dataset.code, text: document.getElementById('ended-message').textContent });
    }
    return errors;
  });
}

/** The page of a meeting: `where` is a room name, or a path such as the `/m/<room>?t=...`
 *  link of a join token. */
export function meetingUrl(port, where) {
  return where.startsWith('/') ? `${origin(port)}${where}` : `${origin(port)}/m/${where}`;
}

/** Opens a meeting's page, types the name and presses Join, without waiting for what
 *  follows (the meeting, the lobby, a refusal). */
export async function openMeeting(p, port, where) {
  // `load` can hang on pages with <video> elements holding empty streams.
  await p.page.goto(meetingUrl(port, where), { waitUntil: 'domcontentloaded' });
  await p.page.fill('#name', p.name);
  await p.page.click('#join');
}

/** Opens the meeting (a room name or a link, see meetingUrl), types the name and presses
 *  Join. Resolves once in the meeting; throws what the page shows if it could not join. */
export async function joinMeeting(p, port, where) {
  await openMeeting(p, port, where);
  await enteredMeeting(p);
}

/** Waits until the page shows the meeting (after Join, or after being let in from the
 *  lobby) and notes its participant id in `p.id`; throws what the page shows instead. */
export async function enteredMeeting(p, timeoutMs = 20000) {
  // Either the meeting view, or the error the server sent instead (shown on the page).
  await waitFor(`${p.label} to enter the meeting`, async () => {
    const inMeeting = await p.page.evaluate(() => !document.getElementById('meeting').hidden);
    const errors = await shownErrors(p);
    if (errors.length) {
      const shown = errors.map((e) => `[${e.code}] ${e.text}`).join(' | ');
      throw Object.assign(new Error(`${p.label} could not join; the page shows: ${shown}`), { fatal: true, errors });
    }
    return { ok: inMeeting, why: 'the meeting view is not shown yet' };
  }, timeoutMs);
  p.id = await p.page.evaluate(() => window.ting.participantId);
  joined.push({ label: p.label, id: p.id });
  log(`${p.label} (${p.name}) joined as ${p.id}`);
}

export async function screenshot(p, dir, phase) {
  const path = join(dir, `${phase}-${p.label}.png`);
  await p.page.screenshot({ path });
}

// ---- running a test -----------------------------------------------------------------

/**
 * Runs `scenario({port, shots, ting})` against a fresh ting and exits 0 or 1. Screenshots
 * and the server log go to tests/browser/screenshots/<timestamp>[-name]/, printed at the
 * end. Ctrl-C and SIGTERM stop the server too; the scenario closes its browsers itself.
 */
export async function runTest({ name, room, env = {}, listen, args }, scenario) {
  const stamp = new Date().toISOString().replace(/[:.]/g, '-');
  const shots = join(HERE, 'screenshots', name ? `${stamp}-${name}` : stamp);
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
    ting = await startTing(logPath, { room, env, listen, args });
    await scenario({ port: ting.port, shots, ting });
  } catch (e) {
    failed = e;
  } finally {
    await stopTing(ting?.proc);
  }
  await summariseEstimates(logPath);
  log(`screenshots and server log: ${shots}`);
  if (failed) {
    console.error(`\nFAIL after ${elapsed().trim()}: ${failed.message}`);
    const serverLog = await readFile(logPath, 'utf8').catch(() => '');
    const tail = serverLog.trimEnd().split('\n').slice(-25).join('\n');
    if (tail) console.error(`\nlast lines of the server log:\n${tail}`);
    process.exit(1);
  }
  console.log(`\nPASS in ${elapsed().trim()}`);
  process.exit(0);
}
