#!/usr/bin/env node
// End-to-end test of coming back into a meeting after the connection dropped: two headless
// Chromium participants, A and B, meet in an open room of a real `ting`, and A loses its
// connection twice while B watches.
//
//   node tests/browser/reconnect.test.mjs          (from the repository root)
//
// Environment (harness.mjs): TING_BIN, TING_LOG_LEVEL, CHROMIUM, as for meeting.test.mjs.
//
//   1. A reloads its page. Without anyone typing anything A is back within the server's
//      window as the same participant (its `resume` token kept in sessionStorage), with a
//      new media connection; B never loses A's tile (it may say "Reconnecting…"
//      meanwhile), and each decodes the other's camera and hears the other again.
//   2. A's signalling socket closes under it (window.ting.dropSignalling(), a close
//      without `leave`). A resumes on a new socket within seconds, keeps its media
//      connection, B never loses A's tile, and media goes on both ways.
//   3. A leaves: the token is forgotten, and a reload shows the pre-join view.
//
// Exits 0 when every check passed, 1 otherwise. Every wait has a deadline; the screenshots
// of each phase and the server log go to tests/browser/screenshots/<timestamp>-reconnect/.

import {
  chromiumArgs, closeParticipant, joinMeeting, launchParticipant, log, runTest, screenshot, shownErrors,
  waitFor,
} from './harness.mjs';
import { checkNeverGone, mediaBothWays, stopWatch, watchOther } from './observe.mjs';

const ROOM = 'e2e-reconnect';
// Two pages encoding a camera in three layers on a two-core machine: 10 fps is plenty.
const ARGS = chromiumArgs({ fps: 10 });
const VIEWPORT = { width: 1024, height: 600 };
/** The server keeps a participant whose connection dropped for 20 s by default; the page
 *  must be back a little before that. */
const WINDOW_MS = 18000;
/** How long media may take to flow again once a page is back: a new media connection and
 *  a keyframe for each camera. */
const MEDIA_MS = 20000;
/** Where the page keeps its session for a reload. */
const SESSION_KEY = `ting.resume.${ROOM}`;

// ---- what a page shows -----------------------------------------------------------------

/** Where A stands on its own page: its id, its connection, the view shown. */
function selfState(p) {
  return p.page.evaluate(() => ({
    id: window.ting.participantId,
    connection: window.ting.connectionState,
    resumes: window.ting.resumeCount,
    meeting: !document.getElementById('meeting').hidden,
    prejoin: !document.getElementById('prejoin').hidden,
    status: document.getElementById('status').textContent,
  }));
}

/** Waits until `p` is in the meeting again as `id` with its connection back; a pre-join
 *  view or an error shown instead ends the wait at once. */
async function backInMeeting(p, id, what, timeoutMs, extra = () => true) {
  return waitFor(what, async () => {
    const s = await selfState(p);
    const errors = await shownErrors(p);
    if (s.prejoin || errors.length) {
      throw Object.assign(new Error(`${p.label} is not back: ${JSON.stringify({ ...s, errors })}`), { fatal: true });
    }
    return { ok: s.id === id && s.connection === 'connected' && s.meeting && extra(s), why: JSON.stringify(s), state: s };
  }, timeoutMs, 50);
}

/** Waits until `p` no longer marks `other` as reconnecting anywhere. */
async function notMarked(p, other, when) {
  await waitFor(`${p.label} to show ${other.label} connected ${when}`, async () => {
    const s = await p.page.evaluate((id) => ({
      listed: window.ting.reconnecting.includes(id),
      tile: document.querySelector(`#tiles [data-participant="${id}"]`)?.dataset.reconnecting ?? null,
      row: document.querySelector(`#people-list [data-person="${id}"]`)?.dataset.reconnecting ?? null,
    }), other.id);
    return { ok: !s.listed && s.tile === 'false' && s.row === 'false', why: JSON.stringify(s) };
  }, 10000);
}

/** The session this page keeps for a reload, as stored (null if none). */
function storedSession(p) {
  return p.page.evaluate((key) => JSON.parse(sessionStorage.getItem(key) ?? 'null'), SESSION_KEY);
}

// ---- the scenario ---------------------------------------------------------------------

async function scenario({ port, shots }) {
  const [a, b] = await Promise.all([
    launchParticipant('A', 'Aino Virtanen', { args: ARGS, viewport: VIEWPORT, mute: true }),
    launchParticipant('B', 'Björn Ek', { args: ARGS, viewport: VIEWPORT, mute: true }),
  ]);
  const everyone = [a, b];
  try {
    for (const p of everyone) await joinMeeting(p, port, ROOM);
    await mediaBothWays(a, b, 'after joining', MEDIA_MS);
    log('A and B see and hear each other');
    const kept = await storedSession(a);
    if (typeof kept?.token !== 'string' || !kept.token) throw new Error(`A keeps no session: ${JSON.stringify(kept)}`);
    // B's participant list stays open, so that it can show A reconnecting too.
    await b.page.click('#people-toggle');
    await b.page.waitForSelector(`#people-list [data-person="${a.id}"]`, { timeout: 5000 });
    for (const p of everyone) await screenshot(p, shots, '1-met');

    // ---- 1. A reloads its page
    log('1. A reloads its page');
    const id = a.id;
    await watchOther(b, a);
    const reloadAt = Date.now();
    await a.page.reload({ waitUntil: 'domcontentloaded' });
    const back = await backInMeeting(a, id, `A to be back in the meeting as ${id}`, WINDOW_MS,
      (s) => s.resumes === 1);
    const backMs = Date.now() - reloadAt;
    await mediaBothWays(a, b, 'after the reload', MEDIA_MS);
    const mediaMs = Date.now() - reloadAt;
    log(`  A is back as the same participant ${backMs} ms after the reload (status "${back.state.status}"); media flows both ways after ${mediaMs} ms`);
    checkNeverGone(b, a, await stopWatch(b), 'during the reload');
    await notMarked(b, a, 'after the reload');
    const renewed = await storedSession(a);
    if (typeof renewed?.token !== 'string' || !renewed.token) throw new Error(`A keeps no session after the reload: ${JSON.stringify(renewed)}`);
    for (const p of everyone) await screenshot(p, shots, '2-after-reload');

    // ---- 2. A's signalling socket closes under it
    log('2. A\'s signalling socket closes without a leave');
    await a.page.evaluate(() => {
      window.__pcBefore = window.ting.pc;
      const w = { banner: false, status: false, state: false };
      w.timer = setInterval(() => {
        if (!document.getElementById('reconnecting-banner').hidden) w.banner = true;
        if (document.getElementById('status').textContent === 'Reconnecting…') w.status = true;
        if (window.ting.connectionState === 'reconnecting') w.state = true;
      }, 20);
      window.__selfWatch = w;
    });
    await watchOther(b, a);
    const dropAt = Date.now();
    await a.page.evaluate(() => window.ting.dropSignalling());
    await backInMeeting(a, id, 'A to resume on a new socket', 10000, (s) => s.resumes === 2);
    const resumeMs = Date.now() - dropAt;
    const own = await a.page.evaluate(() => {
      const w = window.__selfWatch;
      clearInterval(w.timer);
      return {
        banner: w.banner,
        status: w.status,
        state: w.state,
        samePc: window.ting.pc === window.__pcBefore,
        pc: window.ting.pc?.connectionState,
      };
    });
    if (!own.state || !own.status || !own.banner) throw new Error(`A did not show that it was reconnecting: ${JSON.stringify(own)}`);
    // The media connection kept working while only the socket dropped: no new offer.
    if (!own.samePc || own.pc !== 'connected') throw new Error(`A's media connection was replaced or is down: ${JSON.stringify(own)}`);
    log(`  A resumed ${resumeMs} ms after its socket closed, on the same media connection`);
    await mediaBothWays(a, b, 'after the socket dropped', MEDIA_MS);
    log(`  media flows both ways ${Date.now() - dropAt} ms after the drop`);
    checkNeverGone(b, a, await stopWatch(b), 'while A\'s socket was down');
    await notMarked(b, a, 'after the socket came back');
    for (const p of everyone) await screenshot(p, shots, '3-after-drop');

    // ---- 3. Leaving ends the session for good: a reload does not bring A back
    log('3. A leaves, then reloads');
    await a.page.click('#leave');
    await a.page.waitForSelector('#prejoin:not([hidden]) #join', { timeout: 10000 });
    if (await storedSession(a)) throw new Error('A still keeps its session after leaving');
    await waitFor(`B to remove A's tile`, async () => {
      const n = await b.page.$$eval(`[data-participant="${id}"]`, (els) => els.length);
      return { ok: n === 0, why: `${n} elements of A left` };
    }, 10000);
    await a.page.reload({ waitUntil: 'domcontentloaded' });
    await a.page.waitForSelector('#prejoin:not([hidden]) #join', { timeout: 10000 });
    const after = await selfState(a);
    if (after.meeting || after.id) throw new Error(`A went back in after leaving: ${JSON.stringify(after)}`);
    log('  after leaving, A\'s reload shows the pre-join view and B no longer shows A');

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

runTest({ name: 'reconnect', room: ROOM }, scenario);
