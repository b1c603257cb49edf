#!/usr/bin/env node
// End-to-end test of a participant whose network fails under it, with real Chromium: A runs
// in a network namespace this test makes (a veth pair to the host, where ting and B are),
// so that A's network alone can be cut and its address changed while B watches.
//
//   node tests/browser/network.test.mjs          (from the repository root, as root)
//
// Environment (harness.mjs): TING_BIN, TING_LOG_LEVEL, CHROMIUM, as for meeting.test.mjs.
// Needs CAP_NET_ADMIN (`ip netns`, `tc`): it fails saying so without it.
//
//   1. A and B meet over the veth pair and see and hear each other.
//   2. A's network is cut for 10 s (every packet both ways dropped) and restored. A is back
//      without rejoining: the same participant and the same RTCPeerConnection (not
//      rebuilt; ICE comes back on the old path, by itself or restarted), media flows both
//      ways again, and B never lost A's tile.
//   3. A's address changes (the namespace gets a new one and loses the old). A comes back
//      the same way, from its new address, through an ICE restart.
//   4. A's network gets a narrow bottleneck both ways: B's page marks A's tile "Weak
//      connection" (and A's own page marks A's), from what the server measures; when it
//      goes, both show A connected again.
//
// The time from the network returning (or the address changing) to media flowing again is
// printed for each. Exits 0 when every check passed, 1 otherwise. Every wait has a deadline;
// the namespace and the veth pair are removed on every exit.

import { execFileSync } from 'node:child_process';

import {
  CHROMIUM, chromiumArgs, closeParticipant, joinMeeting, launchParticipant, log, runTest, screenshot,
  shownErrors, waitFor,
} from './harness.mjs';
import { makeNamespace } from './netns.mjs';
import { checkNeverGone, mediaBothWays, stopWatch, watchOther } from './observe.mjs';

const ROOM = 'e2e-network';
const ARGS = chromiumArgs({ fps: 10 });
const VIEWPORT = { width: 1024, height: 600 };
/** How long the network is cut. */
const CUT_MS = 10000;
/** Back within this long of the network returning: the same connection, ICE connected,
 *  the page no longer reconnecting. Media both ways (a keyframe each way, and a downlink
 *  estimate that the outage's losses pulled down) may take longer. */
const BACK_MS = 5000;
const BACK_MEDIA_MS = 10000;
/** After an address change the page first has to notice that nothing arrives any more
 *  (about 2 s), and the socket is found dead on the way (1.5 s). */
const MOVE_MS = 10000;
const MOVE_MEDIA_MS = 15000;
const WAIT_MS = 30000;
/** A's network both ways when it is made weak: below what its camera's smallest layer and
 *  the microphone need. */
const SQUEEZE = '100kbit';

// ---- the namespace -------------------------------------------------------------------------

const { NS_IF, HOST_IF, HOST_IP, NS_IP: A_IP, SUBNET, inNs, wrapper } = makeNamespace('net', 213);
const A_MOVED_IP = `${SUBNET}.3`;

function tc(...args) {
  execFileSync('tc', args, { stdio: ['ignore', 'ignore', 'pipe'] });
}

/** Drops every packet both ways (a queue of length 0 on each end of the pair), or stops. */
function cut(on) {
  if (on) {
    tc('qdisc', 'replace', 'dev', HOST_IF, 'root', 'pfifo', 'limit', '0');
    inNs('tc', 'qdisc', 'replace', 'dev', NS_IF, 'root', 'pfifo', 'limit', '0');
  } else {
    tc('qdisc', 'del', 'dev', HOST_IF, 'root');
    inNs('tc', 'qdisc', 'del', 'dev', NS_IF, 'root');
  }
}

// ---- what A's page says about itself ---------------------------------------------------

/** A's own view: its id, its connection and media state, its ICE restarts, and whether its
 *  RTCPeerConnection is still the one marked before the fault. */
function selfState(p) {
  return p.page.evaluate(() => ({
    id: window.ting.participantId,
    connection: window.ting.connectionState,
    state: window.ting.state,
    pc: window.ting.pc?.connectionState ?? null,
    samePc: Boolean(window.ting.pc?.__marked),
    iceRestarts: window.ting.iceRestarts,
    outageMs: window.ting.lastMediaOutageMs,
    status: document.getElementById('status').textContent,
  }));
}

async function markPc(p) {
  await p.page.evaluate(() => {
    window.ting.pc.__marked = true;
  });
}

/**
 * One fault: `start()` breaks A's network, `end()` (after `holdMs`) gives it back. Checks
 * that A comes back as the same participant on the same connection, that media flows both
 * ways, and that B never lost A's tile; returns the ms from `end()` to media flowing.
 */
async function fault(a, b, what, { start, end, holdMs, restart, limits }) {
  const before = await selfState(a);
  await markPc(a);
  await watchOther(b, a);
  const noticed = async (timeoutMs) => waitFor(`A to notice ${what}`, async () => {
    const s = await selfState(a);
    return { ok: s.state === 'reconnecting' || s.connection === 'reconnecting', why: JSON.stringify(s) };
  }, timeoutMs, 50);
  const startAt = Date.now();
  start();
  if (holdMs) {
    // The page notices while the network is away: its media stops, and it says it is
    // reconnecting.
    await noticed(holdMs);
    log(`  A noticed ${what} after ${Date.now() - startAt} ms`);
    const left = holdMs - (Date.now() - startAt);
    if (left > 0) await new Promise((r) => setTimeout(r, left));
  }
  const backAt = Date.now();
  end();
  log(`  ${what}: over; waiting for A`);
  if (!holdMs) {
    await noticed(15000);
    log(`  A noticed ${what} after ${Date.now() - backAt} ms`);
  }
  const s = await waitFor(`A back on the same connection after ${what}`, async () => {
    const s = await selfState(a);
    const errors = await shownErrors(a);
    if (errors.length) throw Object.assign(new Error(`A shows errors: ${JSON.stringify(errors)}`), { fatal: true });
    return {
      ok: s.id === before.id && s.connection === 'connected' && s.state === 'connected' && s.pc === 'connected',
      why: JSON.stringify(s),
      state: s,
    };
  }, WAIT_MS, 50);
  const connectedMs = Date.now() - backAt;
  await mediaBothWays(a, b, `after ${what}`, WAIT_MS);
  const mediaMs = Date.now() - backAt;
  const after = s.state;
  if (!after.samePc) throw new Error(`A built a new RTCPeerConnection after ${what} instead of restarting ICE: ${JSON.stringify(after)}`);
  if (restart && after.iceRestarts <= before.iceRestarts) throw new Error(`A came back after ${what} without an ICE restart: ${JSON.stringify(after)}`);
  checkNeverGone(b, a, await stopWatch(b), `during ${what}`);
  log(`  A is back after ${what}: connected ${connectedMs} ms and media both ways ${mediaMs} ms after it ended `
    + `(${after.iceRestarts - before.iceRestarts} ICE restart(s); media was lost for ${after.outageMs} ms in all)`);
  if (connectedMs > limits.connected) {
    throw new Error(`A took ${connectedMs} ms to be connected again after ${what}; at most ${limits.connected} ms expected`);
  }
  if (mediaMs > limits.media) {
    throw new Error(`media took ${mediaMs} ms to flow both ways again after ${what}; at most ${limits.media} ms expected`);
  }
  return mediaMs;
}

/** What each page says of A's connection: its own view, and B's tile and row for A. */
function connectionShown(a, b) {
  return Promise.all([
    a.page.evaluate((id) => ({
      own: window.ting.connections[id],
      tile: document.querySelector('.self-tile')?.dataset.connection ?? null,
    }), a.id),
    b.page.evaluate((id) => ({
      seen: window.ting.connections[id],
      tile: document.querySelector(`#tiles [data-participant="${id}"]`)?.dataset.connection ?? null,
      badge: !(document.querySelector(`#tiles [data-participant="${id}"] .poor-badge`)?.hidden ?? true),
      row: document.querySelector(`#people-list [data-person="${id}"]`)?.dataset.connection ?? null,
    }), a.id),
  ]).then(([own, other]) => ({ ...own, ...other }));
}

/**
 * A's network gets a narrow bottleneck both ways (a token bucket at SQUEEZE): the server
 * measures the loss and the falling estimate, and B's page marks A's tile "Weak
 * connection", as A's own page does; once the bottleneck goes, both show A connected again.
 */
async function weakConnection(a, b, shots) {
  const squeezedAt = Date.now();
  // Both ways: what A sends may fit (only its smallest layer may be watched), what it is
  // sent does not.
  const squeeze = ['root', 'tbf', 'rate', SQUEEZE, 'burst', '4kb', 'latency', '100ms'];
  inNs('tc', 'qdisc', 'replace', 'dev', NS_IF, ...squeeze);
  tc('qdisc', 'replace', 'dev', HOST_IF, ...squeeze);
  try {
    const weak = await waitFor('B to show A\'s connection as weak', async () => {
      const s = await connectionShown(a, b);
      return { ok: s.seen === 'poor' && s.tile === 'poor' && s.badge && s.own === 'poor' && s.tile === 'poor', why: JSON.stringify(s), s };
    }, 20000, 100);
    log(`  ${Date.now() - squeezedAt} ms after the squeeze both pages mark A's connection weak: ${JSON.stringify(weak.s)}`);
    for (const p of [a, b]) await screenshot(p, shots, '4-weak');
  } finally {
    inNs('tc', 'qdisc', 'del', 'dev', NS_IF, 'root');
    tc('qdisc', 'del', 'dev', HOST_IF, 'root');
  }
  const freedAt = Date.now();
  await waitFor('B to show A\'s connection as good again', async () => {
    const s = await connectionShown(a, b);
    return { ok: s.seen === 'connected' && s.tile === 'connected' && !s.badge && s.own === 'connected', why: JSON.stringify(s) };
  }, 30000, 100);
  log(`  ${Date.now() - freedAt} ms after the bottleneck went both pages show A connected again`);
}

async function scenario({ port, shots }) {
  const exe = wrapper(CHROMIUM);
  const [a, b] = await Promise.all([
    launchParticipant('A', 'Aino Virtanen', { args: ARGS, viewport: VIEWPORT, mute: true, executable: exe }),
    launchParticipant('B', 'Björn Ek', { args: ARGS, viewport: VIEWPORT, mute: true }),
  ]);
  const everyone = [a, b];
  try {
    for (const p of everyone) await joinMeeting(p, port, ROOM);
    await mediaBothWays(a, b, 'after joining', WAIT_MS);
    log('A (in its namespace) and B see and hear each other');
    for (const p of everyone) await screenshot(p, shots, '1-met');

    log(`2. A's network is cut for ${CUT_MS / 1000} s`);
    const cutMs = await fault(a, b, `a ${CUT_MS / 1000} s cut`, {
      start: () => cut(true),
      end: () => cut(false),
      holdMs: CUT_MS,
      // The old path works again when the network returns: ICE may come back on it by
      // itself, or by a restart sent while it was down.
      restart: false,
      limits: { connected: BACK_MS, media: BACK_MEDIA_MS },
    });
    for (const p of everyone) await screenshot(p, shots, '2-after-cut');

    log(`3. A's address changes from ${A_IP} to ${A_MOVED_IP}`);
    const moveMs = await fault(a, b, 'an address change', {
      start: () => {},
      end: () => {
        // As a new network would: the old address goes, then the new one comes (adding it
        // first would make it a secondary address, removed with the primary).
        inNs('ip', 'addr', 'del', `${A_IP}/24`, 'dev', NS_IF);
        inNs('ip', 'addr', 'add', `${A_MOVED_IP}/24`, 'dev', NS_IF);
      },
      holdMs: 0,
      // The old address is gone: only a restart finds the new path. The page first has to
      // notice that media stopped (its watch, or the browser's own verdict some seconds
      // later), so this takes longer than a network that returns.
      restart: true,
      limits: { connected: MOVE_MS, media: MOVE_MEDIA_MS },
    });
    for (const p of everyone) await screenshot(p, shots, '3-after-move');
    log(`media back ${cutMs} ms after a ${CUT_MS / 1000} s cut ended, ${moveMs} ms after an address change`);

    log(`4. A's network is squeezed to ${SQUEEZE} each way`);
    await weakConnection(a, b, shots);

    for (const p of everyone) {
      const errors = await shownErrors(p);
      if (errors.length) throw new Error(`${p.label} showed errors: ${JSON.stringify(errors)}`);
      if (p.problems.length) throw new Error(`${p.label} had script errors: ${p.problems.join('; ')}`);
    }
  } catch (e) {
    for (const p of everyone) await screenshot(p, shots, 'failure').catch(() => {});
    throw e;
  } finally {
    await Promise.all(everyone.map(closeParticipant));
  }
}

runTest({
  name: 'network',
  room: ROOM,
  listen: `${HOST_IP}:0`,
  args: ['--media-bind-ip', HOST_IP, '--media-advertise-ip', HOST_IP],
  env: { TING_HTTP_TLS_SELF_SIGNED: 'true' },
}, scenario);
