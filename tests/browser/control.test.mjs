#!/usr/bin/env node
// End-to-end test of the meeting's control plane in the browser client: join links, the
// lobby, removing someone, locking, chat. Headless Chromium participants meet in a room of a
// real `ting` that admits nobody without a join token.
//
//   node tests/browser/control.test.mjs          (from the repository root)
//
// Environment (harness.mjs): TING_BIN, TING_LOG_LEVEL, CHROMIUM, as for meeting.test.mjs.
//
// The server runs with closed rooms and its REST API on (all set here, fresh each run):
//   TING_ROOMS_OPEN=false         only join tokens admit
//   TING_API_KEY                  the bearer key of the REST API
//   TING_TOKENS_SECRET            the key join tokens are signed with
//   TING_STORE_PATH               the SQLite file that keeps rooms and tokens, in a
//                                 temporary directory
// Through the API (POST /v1/rooms, POST /v1/rooms/<room>/tokens, GET
// /v1/rooms/<room>/participants) the test makes one room with a lobby and a link per person:
//   a. a guest waits in the lobby until the host admits them; then each sees the other;
//   d. a chat message reaches the others with its sender's name, an unread count shows
//      where the chat is closed, a private message reaches only its recipient;
//   c. the host removes a participant from the participant list: the removed page says so,
//      the others lose the tile, and the same link no longer admits;
//   b. the host locks the meeting: a newcomer with a valid link reads "This meeting is
//      locked";
// and at the end, the store holds no chat text (the database, its WAL and journal, read
// as bytes, while the server runs and after it stopped).
//
// Exits 0 when every check passed, 1 otherwise. Every wait has a deadline; the screenshots
// of each phase and the server log go to tests/browser/screenshots/<timestamp>-control/.

import { mkdtemp, readdir, readFile, rm } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import {
  api, chromiumArgs, closeParticipant, enteredMeeting, joinMeeting, launchParticipant, log,
  openMeeting, randomSecret, runTest, screenshot, shownErrors, stopTing, waitFor,
} from './harness.mjs';

const ROOM = 'e2e-control';
const API_KEY = randomSecret();
const STORE_DIR = await mkdtemp(join(tmpdir(), 'ting-e2e-store-'));
const STORE = join(STORE_DIR, 'ting.db');
// Four pages on a two-core machine: cameras at 10 fps, in small windows.
const ARGS = chromiumArgs({ fps: 10 });
const VIEWPORT = { width: 1024, height: 640 };
/** Chat texts no store may hold: the server relays chat and keeps none of it. */
const ROOM_TEXT = `Room note ${randomSecret().slice(0, 12)}`;
const PRIVATE_TEXT = `Private note ${randomSecret().slice(0, 12)}`;
const LATER_TEXT = `Later note ${randomSecret().slice(0, 12)}`;

/** Codes a join can be refused with, or a session ended with, that this test touches or
 *  that a person may meet with a link. */
const CONTROL_CODES = [
  'token_required', 'token_malformed', 'token_invalid', 'token_expired', 'token_wrong_room',
  'passcode_required', 'wrong_passcode', 'locked', 'denied', 'removed', 'meeting_ended',
  'outside_schedule', 'room_full', 'forbidden', 'unknown_participant', 'chat_too_long',
  'rate_limited',
];

// ---- the REST API ---------------------------------------------------------------------

async function expectStatus(what, want, call) {
  const res = await call;
  if (res.status !== want) throw new Error(`${what}: HTTP ${res.status}, expected ${want}: ${res.text}`);
  return res.body;
}

/** A join link for one person: the API's answer ({token, link, expires_at, ...}) and
 *  `path`, the link's path and query (the link may name the server's public address, which
 *  in this test is the loopback one anyway). */
async function linkFor(port, role, name, subject) {
  const body = await expectStatus(`a ${role} token for ${name}`, 201, api(port, API_KEY, 'POST',
    `/v1/rooms/${ROOM}/tokens`, { role, name, subject, expires_in_secs: 600 }));
  const url = new URL(String(body?.link ?? ''), 'http://link.invalid');
  if (url.pathname !== `/m/${ROOM}` || url.searchParams.get('t') !== body.token) {
    throw new Error(`the token's link is ${JSON.stringify(body?.link)}`);
  }
  return { ...body, path: `${url.pathname}${url.search}` };
}

/** Who the server says is in the room: [{id, name, role, ...}]. */
async function participantsInRoom(port) {
  const body = await expectStatus('the room\'s participants', 200,
    api(port, API_KEY, 'GET', `/v1/rooms/${ROOM}/participants`));
  return body?.participants ?? [];
}

// ---- what a page shows -----------------------------------------------------------------

/** Whether `selector` matches an element that is rendered (not hidden, in the layout). */
function shows(p, selector) {
  return p.page.evaluate((sel) => {
    const el = document.querySelector(sel);
    return Boolean(el && el.checkVisibility());
  }, selector);
}

/** What `p` shows of `other`'s camera tile: its name, and whether video frames play. */
function tileOf(p, other) {
  return p.page.evaluate((id) => {
    const fig = document.querySelector(`#tiles [data-participant="${id}"]`);
    const video = fig?.querySelector('video');
    return fig && {
      name: fig.querySelector('.name').textContent,
      playing: Boolean(video && !video.hidden && video.videoWidth > 0),
      hand: fig.dataset.hand,
    };
  }, other.id);
}

/** Waits until `p` shows `other`'s tile with their name, and their video if they may
 *  publish it. */
async function seesTile(p, other) {
  const publishes = await other.page.evaluate(() => window.ting.permissions?.publish_video);
  await waitFor(`${p.label} to show ${other.label}'s tile${publishes ? ' with video' : ''}`, async () => {
    const t = await tileOf(p, other);
    return { ok: Boolean(t && t.name === other.name && (t.playing || !publishes)), why: JSON.stringify(t) };
  }, 45000);
}

/** The chat messages `p` has: [{from, to, text, private}]. */
function chatLog(p) {
  return p.page.$$eval('#chat-log .chat-message', (els) => els.map((e) => ({
    from: e.querySelector('.chat-from').textContent,
    to: e.querySelector('.chat-to')?.textContent ?? null,
    text: e.querySelector('.chat-text').textContent,
    private: e.dataset.private === 'true',
  })));
}

/** The unread count on `p`'s chat button, or null while none shows. */
function unread(p) {
  return p.page.evaluate(() => {
    const badge = document.getElementById('chat-unread');
    return badge.hidden ? null : badge.textContent;
  });
}

/** Waits until `p` shows the error (or end view) with `code`; returns its text. */
async function refusal(p, code, timeoutMs = 15000) {
  const r = await waitFor(`${p.label} to show why (${code})`, async () => {
    const errors = await shownErrors(p);
    const e = errors.find((x) => x.code === code);
    return { ok: Boolean(e), why: JSON.stringify(errors), text: e?.text };
  }, timeoutMs);
  return r.text;
}

async function sendChat(p, text) {
  await p.page.fill('#chat-input', text);
  await p.page.click('#chat-send');
}

// ---- reading the store ---------------------------------------------------------------

/** The bytes of the store's files (the database and any -wal, -shm or -journal beside
 *  it): name -> Buffer. */
async function storeFiles() {
  const out = new Map();
  for (const name of await readdir(STORE_DIR)) {
    if (name.startsWith('ting.db')) out.set(name, await readFile(join(STORE_DIR, name)));
  }
  return out;
}

/** Fails if any store file holds any of `texts` (as UTF-8). */
async function checkStoreHoldsNone(texts, when) {
  const files = await storeFiles();
  if (!files.has('ting.db') || files.get('ting.db').length === 0) {
    throw new Error(`${when}: no store at ${STORE} (files: ${[...files.keys()].join(', ') || 'none'})`);
  }
  for (const [name, bytes] of files) {
    for (const text of texts) {
      if (bytes.includes(Buffer.from(text, 'utf8'))) throw new Error(`${when}: ${name} holds the chat text ${JSON.stringify(text)}`);
    }
  }
  const sizes = [...files].map(([name, b]) => `${name} ${b.length} B`).join(', ');
  log(`  ${when}: the store (${sizes}) holds no chat text`);
}

// ---- the scenario ---------------------------------------------------------------------

async function scenario({ port, shots, ting }) {
  await expectStatus('creating the room', 201, api(port, API_KEY, 'POST', '/v1/rooms', { name: ROOM, lobby: true }));
  const links = {
    host: await linkFor(port, 'host', 'Hanna Host', 'h-1'),
    guest: await linkFor(port, 'guest', 'Gustav Guest', 'g-1'),
    participant: await linkFor(port, 'participant', 'Pirjo Participant', 'p-1'),
    late: await linkFor(port, 'participant', 'Lauri Late', 'l-1'),
  };
  log(`room ${ROOM} made through the API, with a link for each of four people; store: ${STORE}`);

  const [h, g, q] = await Promise.all([
    launchParticipant('H', 'Hanna Host', { args: ARGS, viewport: VIEWPORT, mute: true }),
    launchParticipant('G', 'Gustav Guest', { args: ARGS, viewport: VIEWPORT, mute: true }),
    launchParticipant('P', 'Pirjo Participant', { args: ARGS, viewport: VIEWPORT, mute: true }),
  ]);
  const everyone = [h, g, q];
  try {
    // ---- the host is in at once, and may admit and moderate
    await joinMeeting(h, port, links.host.path);
    const hostState = await h.page.evaluate(() => ({ role: window.ting.role, permissions: window.ting.permissions }));
    if (hostState.role !== 'host' || !hostState.permissions.admit || !hostState.permissions.moderate) {
      throw new Error(`the host joined as ${JSON.stringify(hostState)}`);
    }
    for (const id of ['#lobby-toggle', '#invite-button', '#lock-toggle', '#end-meeting']) {
      if (!(await shows(h, id))) throw new Error(`the host's page does not show ${id}`);
    }
    // Every refusal reads as a sentence to act on.
    const sentences = await h.page.evaluate((codes) => Object.fromEntries(
      codes.map((code) => [code, window.ting.explain(code, 'the room is full: all 4 places are taken')]),
    ), CONTROL_CODES);
    for (const [code, text] of Object.entries(sentences)) {
      if (!/^[A-Z].*\.$/.test(text)) throw new Error(`${code} is explained as ${JSON.stringify(text)}`);
    }
    if (!sentences.locked.startsWith('This meeting is locked.')) throw new Error(`locked reads ${JSON.stringify(sentences.locked)}`);

    // ---- a. the guest waits in the lobby until the host lets them in
    log(`a. ${g.label} (guest) waits in the lobby; ${h.label} admits them`);
    await openMeeting(g, port, links.guest.path);
    const waitingId = await waitFor(`${g.label} to show the lobby screen`, async () => {
      const s = await g.page.evaluate(() => ({
        lobby: document.getElementById('lobby-screen').checkVisibility(),
        title: document.getElementById('lobby-screen-title').textContent,
        room: document.getElementById('lobby-room').textContent,
        id: window.ting.waitingId,
      }));
      const errors = await shownErrors(g);
      if (errors.length) throw Object.assign(new Error(`${g.label} was refused: ${JSON.stringify(errors)}`), { fatal: true });
      const ok = s.lobby && s.title.startsWith('Waiting for the host to let you in') && s.room === ROOM && Boolean(s.id);
      return { ok, why: JSON.stringify(s), id: s.id };
    }, 15000).then((r) => r.id);
    const listed = (await participantsInRoom(port)).find((x) => x.id === waitingId);
    if (!listed?.waiting || listed.role !== 'guest') throw new Error(`the API lists the waiting guest as ${JSON.stringify(listed)}`);
    const admit = `#lobby-panel [data-admit="${waitingId}"]`;
    await waitFor(`${h.label} to list ${g.label} in the lobby panel, with a count`, async () => {
      if (!(await shows(h, '#lobby-panel'))) await h.page.click('#lobby-toggle');
      const s = await h.page.evaluate((id) => ({
        name: document.querySelector(`#lobby-list [data-waiter="${id}"] .waiter-name`)?.textContent ?? null,
        count: document.getElementById('lobby-count').hidden ? null : document.getElementById('lobby-count').textContent,
      }), waitingId);
      return { ok: s.name === g.name && s.count === '1' && (await shows(h, admit)), why: JSON.stringify(s) };
    }, 10000);
    for (const p of [h, g]) await screenshot(p, shots, '1-lobby');
    await h.page.click(admit);
    await enteredMeeting(g);
    await seesTile(h, g);
    await seesTile(g, h);
    await waitFor(`${h.label}'s lobby count to go`, async () => {
      const s = await h.page.evaluate(() => ({ count: !document.getElementById('lobby-count').hidden, rows: document.querySelectorAll('#lobby-list .waiter').length }));
      return { ok: !s.count && s.rows === 0, why: JSON.stringify(s) };
    }, 5000);
    const roles = Object.fromEntries((await participantsInRoom(port)).map((x) => [x.id, x.role]));
    if (roles[h.id] !== 'host' || roles[g.id] !== 'guest') throw new Error(`the API lists ${JSON.stringify(roles)}`);
    log(`  ${g.label} was admitted; each page shows the other's tile; the API lists host and guest`);
    for (const p of [h, g]) await screenshot(p, shots, '2-admitted');

    // A raised hand shows on the others' pages, numbered.
    await g.page.click('#hand-toggle');
    await waitFor(`${h.label} to show ${g.label}'s hand`, async () => {
      const t = await tileOf(h, g);
      const hands = await h.page.evaluate(() => window.ting.hands);
      return { ok: t?.hand === '1' && hands[0] === g.id, why: JSON.stringify({ t, hands }) };
    }, 5000);
    await g.page.click('#hand-toggle');
    await waitFor(`${h.label} to show ${g.label}'s hand down`, async () => {
      const t = await tileOf(h, g);
      return { ok: t?.hand === '', why: JSON.stringify(t) };
    }, 5000);

    // ---- d. chat
    log(`d. ${q.label} comes in through "Admit all"; ${h.label} writes in the chat`);
    await openMeeting(q, port, links.participant.path);
    await waitFor(`${q.label} to wait and ${h.label} to see it`, async () => {
      const waiting = await shows(q, '#lobby-screen');
      const rows = await h.page.$$eval('#lobby-list .waiter', (els) => els.length);
      return { ok: waiting && rows === 1 && (await shows(h, '#admit-all')), why: `waiting ${waiting}, ${rows} rows` };
    }, 15000);
    await h.page.click('#admit-all');
    await enteredMeeting(q);
    await seesTile(h, q);

    await h.page.click('#chat-toggle');
    await sendChat(h, ROOM_TEXT);
    for (const p of [h, g, q]) {
      const open = p === h;
      await waitFor(`${p.label} to get the message${open ? '' : ' and count it unread'}`, async () => {
        if (!open) {
          const n = await unread(p);
          return { ok: n === '1', why: `unread ${JSON.stringify(n)}` };
        }
        const msgs = await chatLog(p);
        return { ok: msgs.some((x) => x.text === ROOM_TEXT && x.from === `${h.name} (you)`), why: JSON.stringify(msgs) };
      }, 10000);
    }
    if ((await unread(h)) !== null) throw new Error(`${h.label}'s open chat counts its own message as unread`);
    await screenshot(q, shots, '3-unread');
    await q.page.click('#chat-toggle');
    await waitFor(`${q.label} to show the message with ${h.label}'s name`, async () => {
      const msgs = await chatLog(q);
      const n = await unread(q);
      const ok = n === null && msgs.some((x) => x.text === ROOM_TEXT && x.from === h.name && !x.private);
      return { ok, why: `${JSON.stringify(msgs)}, unread ${n}` };
    }, 5000);

    // A private message reaches only its recipient (and its sender).
    await h.page.waitForSelector(`#chat-to option[value="${q.id}"]`, { state: 'attached', timeout: 5000 });
    await h.page.selectOption('#chat-to', q.id);
    await sendChat(h, PRIVATE_TEXT);
    await waitFor(`${q.label} to get the private message`, async () => {
      const msgs = await chatLog(q);
      return { ok: msgs.some((x) => x.text === PRIVATE_TEXT && x.private && x.from === h.name), why: JSON.stringify(msgs) };
    }, 10000);
    await h.page.selectOption('#chat-to', '');
    await sendChat(h, LATER_TEXT);
    // Messages reach a page in order: once G has the later one, it would have had the
    // private one before it.
    await waitFor(`${g.label} to count the later message, and only that`, async () => {
      const n = await unread(g);
      return { ok: n === '2', why: `unread ${JSON.stringify(n)}` };
    }, 10000);
    await g.page.click('#chat-toggle');
    const gSees = await waitFor(`${g.label} to show the room's messages`, async () => {
      const msgs = await chatLog(g);
      return { ok: msgs.some((x) => x.text === LATER_TEXT), why: JSON.stringify(msgs), msgs };
    }, 5000);
    if (gSees.msgs.some((x) => x.text === PRIVATE_TEXT)) throw new Error(`${g.label} got the private message`);
    log(`  the message reached ${g.label} and ${q.label} with ${h.label}'s name; unread counts showed; the private one reached ${q.label} only`);
    for (const p of everyone) await screenshot(p, shots, '4-chat');
    await checkStoreHoldsNone([ROOM_TEXT, PRIVATE_TEXT, LATER_TEXT], 'while the server runs');

    // ---- c. the host removes a participant
    log(`c. ${h.label} removes ${q.label} from the participant list`);
    await h.page.click('[data-testid="participants-toggle"]');
    const row = `#people-list [data-participant="${q.id}"]`;
    await h.page.click(`${row} button.person-menu`, { timeout: 5000 });
    await h.page.click(`${row} [data-action="remove"]`, { timeout: 5000 });
    await h.page.waitForSelector('#confirm-dialog[open] #confirm-yes', { timeout: 5000 });
    await screenshot(h, shots, '5-confirm-remove');
    await h.page.click('#confirm-yes');
    const removed = await refusal(q, 'removed', 10000);
    if (removed !== 'You were removed from this meeting.') throw new Error(`${q.label} reads ${JSON.stringify(removed)}`);
    for (const p of [h, g]) {
      await waitFor(`${p.label} to drop ${q.label}'s tile`, async () => {
        const n = await p.page.$$eval(`[data-participant="${q.id}"]`, (els) => els.length);
        return { ok: n === 0, why: `${n} elements of ${q.label} left` };
      }, 10000);
    }
    if ((await participantsInRoom(port)).some((x) => x.id === q.id)) throw new Error(`the API still lists ${q.label}`);
    await screenshot(q, shots, '5-removed');
    // The same link no longer lets them in.
    await openMeeting(q, port, links.participant.path);
    const again = await refusal(q, 'removed', 15000);
    if (again !== 'You were removed from this meeting.') throw new Error(`${q.label}'s second try reads ${JSON.stringify(again)}`);
    if (await shows(q, '#meeting') || await shows(q, '#lobby-screen')) throw new Error(`${q.label} got back in`);
    log(`  ${q.label} read "${removed}", the others dropped the tile, and the link was refused again`);

    // ---- b. the host locks the meeting
    log(`b. ${h.label} locks the meeting; a newcomer is refused`);
    await h.page.click('#lock-toggle');
    for (const p of [h, g]) {
      await waitFor(`${p.label} to show the meeting locked`, async () => ({
        ok: await shows(p, '#locked-indicator'), why: 'no lock indicator',
      }), 5000);
    }
    const pressed = await h.page.getAttribute('#lock-toggle', 'aria-pressed');
    if (pressed !== 'true') throw new Error(`the lock toggle is aria-pressed=${pressed}`);
    const late = await launchParticipant('L', 'Lauri Late', { args: ARGS, viewport: VIEWPORT, mute: true });
    everyone.push(late);
    await openMeeting(late, port, links.late.path);
    const locked = await refusal(late, 'locked', 15000);
    const body = await late.page.textContent('body');
    if (!locked.startsWith('This meeting is locked') || !body.includes('This meeting is locked')) {
      throw new Error(`${late.label} reads ${JSON.stringify(locked)}`);
    }
    if ((await participantsInRoom(port)).some((x) => x.name === late.name)) throw new Error(`${late.label} got in`);
    log(`  ${late.label} reads: ${locked}`);
    for (const p of [h, late]) await screenshot(p, shots, '6-locked');

    // Nothing went wrong on the pages of those still in.
    for (const p of [h, g]) {
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
  }

  // ---- the store, once the server has closed it: still no chat text
  await stopTing(ting.proc);
  await checkStoreHoldsNone([ROOM_TEXT, PRIVATE_TEXT, LATER_TEXT], 'after the server stopped');
  await rm(STORE_DIR, { recursive: true, force: true });
}

runTest({
  name: 'control',
  env: {
    TING_ROOMS_OPEN: 'false',
    TING_API_KEY: API_KEY,
    TING_TOKENS_SECRET: randomSecret(),
    TING_STORE_PATH: STORE,
    // The default, said here because the last check depends on it: chat is relayed, not
    // archived.
    TING_CHAT_ARCHIVE: 'false',
  },
}, scenario);
