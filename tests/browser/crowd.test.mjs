#!/usr/bin/env node
// The browser client in a room of 250: one headless Chromium page joins a real `ting`, and
// the test, standing between the page and the server (Playwright's WebSocket routing),
// adds 249 more people to what the server says: a `welcome` that lists them, then a flood
// of `speaking`, `active_speaker` and `participant_updated` messages such as a big meeting
// sends. Real media flows only to and from the server; the others are names.
//
//   node tests/browser/crowd.test.mjs          (from the repository root)
//
// What it proves:
//   - the top bar counts "250 / 250", the participant list holds 250 rows, the grid has 10
//     pages of at most 25 tiles with working page buttons, and each view reports a layout
//     of at most `video_slots` tiles (speaker view: the large tile and 8 thumbnails);
//   - rendering is coalesced and incremental: under 50 messages a second, at most one
//     render per animation frame, list rows and tiles are updated in place (the same
//     elements before and after), no long stalls of the page, and at most one `layout`
//     message per frame;
//   - names are text only: a name that looks like HTML stays text.
//
// Environment: see harness.mjs. Exits 0 when every check passed, 1 otherwise; screenshots
// and the server log go to tests/browser/screenshots/<timestamp>-crowd/.

import {
  chromiumArgs, closeParticipant, joinMeeting, launchParticipant, log, runTest, screenshot,
  shownErrors, sleep, waitFor,
} from './harness.mjs';

const ROOM = 'e2e-crowd';
const PEOPLE = 250;
const FLOOD_MS = 6000;
const NASTY = '<img src=x onerror="window.pwned=1">Mallory';

const hex = (n) => n.toString(16).padStart(16, '0');
/** 249 people who exist only in the messages the test adds. */
const crowd = Array.from({ length: PEOPLE - 1 }, (_, i) => ({
  id: hex(0xc0ffee0000 + i),
  name: i === 7 ? NASTY : `Person ${String(i + 1).padStart(3, '0')}`,
  media: { audio: i % 3 !== 0, video: i % 4 !== 0, screen: false },
}));

async function scenario({ port, shots }) {
  const p = await launchParticipant('P', 'Pia Virtanen', {
    args: chromiumArgs({ fps: 10, grantAll: false }),
    permissions: ['camera'],
    mute: true,
    viewport: { width: 1280, height: 800 },
  });
  try {
    // Messages from the server pass through, the welcome with the crowd added; messages
    // from the page pass through too, and `layout` ones are counted.
    let toPage = null;
    const layouts = [];
    await p.page.routeWebSocket(/\/ws$/, (ws) => {
      const server = ws.connectToServer();
      toPage = (msg) => ws.send(JSON.stringify(msg));
      server.onMessage((text) => {
        const msg = JSON.parse(text);
        if (msg.type === 'welcome') msg.participants.push(...crowd);
        ws.send(JSON.stringify(msg));
      });
      ws.onMessage((text) => {
        const msg = JSON.parse(text);
        if (msg.type === 'layout') layouts.push({ at: Date.now(), msg });
        server.send(text);
      });
    });
    await joinMeeting(p, port, ROOM);

    await waitFor('the top bar to count 250 of 250', async () => {
      const text = await p.page.textContent('#count');
      return { ok: text === `${PEOPLE} / ${PEOPLE}`, why: `count shows ${JSON.stringify(text)}` };
    }, 5000);

    // ---- speaker view: a large tile and 8 thumbnails
    const speaker = await waitFor('the speaker view layout', async () => {
      const s = await p.page.evaluate(() => ({ shown: window.ting.shown, layout: window.ting.layout }));
      const ok = s.layout?.view === 'speaker' && s.layout.tiles.length === 9 && s.layout.tiles[0].participant === null
        && s.shown.strip.length === 8;
      return { ok, why: JSON.stringify(s), s };
    }, 10000);
    log(`  speaker view: large ${speaker.s.shown.large}, 8 thumbnails; layout of ${speaker.s.layout.tiles.length} tiles`);

    // ---- a tile shows the slot `slots` maps to its person, and no frozen picture while
    // the server holds that slot back (`paused`)
    const first = crowd[1];
    const mid = await p.page.evaluate(() => window.ting.receivers.find((r) => r.kind === 'video').mid);
    const tileOf = (id) => p.page.evaluate(({ id, mid }) => {
      const fig = document.querySelector(`#tiles [data-participant="${id}"]`);
      const video = fig?.querySelector('video');
      const track = window.ting.pc.getTransceivers().find((t) => t.mid === mid).receiver.track;
      return fig && {
        paused: fig.dataset.videoPaused,
        note: fig.querySelector('.placeholder-note').textContent,
        placeholder: !fig.querySelector('.placeholder').hidden,
        videoShown: !video.hidden,
        bound: video.srcObject?.getVideoTracks()[0] === track,
      };
    }, { id, mid });
    toPage({ type: 'slots', slots: [{ mid, participant: first.id, source: 'camera', paused: true }] });
    await waitFor(`${first.name}'s tile to say the video is paused`, async () => {
      const t = await tileOf(first.id);
      const ok = t && t.paused === 'true' && t.note === 'Video paused (low bandwidth)' && t.placeholder && !t.videoShown;
      return { ok, why: JSON.stringify(t) };
    }, 5000);
    toPage({ type: 'slots', slots: [{ mid, participant: first.id, source: 'camera' }] });
    await waitFor(`${first.name}'s tile to show slot ${mid}`, async () => {
      const t = await tileOf(first.id);
      return { ok: t && t.videoShown && t.bound && !t.placeholder, why: JSON.stringify(t) };
    }, 5000);
    toPage({ type: 'slots', slots: [] });
    log(`  a tile shows the receive slot mapped to its person, and "Video paused (low bandwidth)" while paused`);

    // ---- the participant list: 250 rows, updated in place
    await p.page.click('#people-toggle');
    await waitFor('the participant list to hold 250 rows', async () => {
      const n = await p.page.$$eval('#people-list .person', (els) => els.length);
      return { ok: n === PEOPLE, why: `${n} rows` };
    }, 5000);
    const nasty = await p.page.evaluate((id) => {
      const row = document.querySelector(`#people-list [data-person="${id}"] .person-name`);
      return { text: row?.textContent, images: document.querySelectorAll('img').length, pwned: Boolean(window.pwned) };
    }, crowd[7].id);
    if (nasty.text !== NASTY || nasty.images !== 0 || nasty.pwned) {
      throw new Error(`a name that looks like HTML was not kept as text: ${JSON.stringify(nasty)}`);
    }

    // Mark the elements, so that the flood can be shown not to replace them.
    await p.page.evaluate(() => {
      for (const el of document.querySelectorAll('#people-list .person, #tiles .tile')) el.tingMark = true;
    });

    // ---- the flood: who speaks changes 50 times a second, with mutes and speaker changes
    const flood = async (what) => {
      const before = await p.page.evaluate(() => {
        window.tingProbe = { frames: 0, longTasks: [], stop: false };
        const tick = () => {
          if (window.tingProbe.stop) return;
          window.tingProbe.frames++;
          requestAnimationFrame(tick);
        };
        requestAnimationFrame(tick);
        new PerformanceObserver((list) => {
          for (const e of list.getEntries()) window.tingProbe.longTasks.push(Math.round(e.duration));
        }).observe({ type: 'longtask', buffered: false });
        return { renders: window.ting.renders, layouts: window.ting.layoutsSent, renderMs: window.ting.renderTime.total };
      });
      const layoutsBefore = layouts.length;
      let sent = 0;
      const end = Date.now() + FLOOD_MS;
      for (let i = 0; Date.now() < end; i++) {
        const speakers = [crowd[(i * 7) % crowd.length].id, crowd[(i * 13 + 5) % crowd.length].id];
        toPage({ type: 'speaking', participants: speakers });
        sent++;
        if (i % 5 === 0) {
          const who = crowd[(i * 3) % crowd.length];
          who.media = { ...who.media, audio: !who.media.audio };
          toPage({ type: 'participant_updated', participant: who.id, media: who.media });
          sent++;
        }
        if (i % 25 === 0) {
          toPage({ type: 'active_speaker', participant: crowd[(i * 11) % crowd.length].id });
          sent++;
        }
        await sleep(20);
      }
      await sleep(300);
      const after = await p.page.evaluate(() => {
        window.tingProbe.stop = true;
        return {
          renders: window.ting.renders,
          layouts: window.ting.layoutsSent,
          renderMs: window.ting.renderTime.total,
          frames: window.tingProbe.frames,
          longTasks: window.tingProbe.longTasks,
          rows: document.querySelectorAll('#people-list .person').length,
          replacedRows: [...document.querySelectorAll('#people-list .person')].filter((e) => !e.tingMark).length,
        };
      });
      const renders = after.renders - before.renders;
      const layoutMsgs = layouts.length - layoutsBefore;
      const worst = Math.max(0, ...after.longTasks);
      const stalled = after.longTasks.reduce((a, b) => a + b, 0);
      const perRender = (after.renderMs - before.renderMs) / Math.max(1, renders);
      log(`  ${what}: ${sent} messages in ${FLOOD_MS / 1000} s -> ${renders} renders (${perRender.toFixed(1)} ms each) in ${after.frames} frames, ${layoutMsgs} layout messages; long tasks: ${after.longTasks.length} (worst ${worst} ms, ${stalled} ms in all)`);
      if (renders > after.frames + 2) throw new Error(`${renders} renders in ${after.frames} frames: rendering is not coalesced`);
      if (renders >= sent) throw new Error(`${renders} renders for ${sent} messages: rendering is not coalesced`);
      if (layoutMsgs > after.frames + 2) throw new Error(`${layoutMsgs} layout messages in ${after.frames} frames`);
      // A render of this page takes a few milliseconds; whole seconds of stalls mean work
      // grows with the room instead of with what changed.
      if (worst > 250 || stalled > FLOOD_MS * 0.2) throw new Error(`the page stalled: long tasks ${JSON.stringify(after.longTasks)}`);
      if (after.rows !== PEOPLE || after.replacedRows) {
        throw new Error(`the list has ${after.rows} rows, ${after.replacedRows} of them rebuilt`);
      }
      return { renders, frames: after.frames };
    };
    await flood('speaker view');

    // The mutes of the flood reached the rows: the list shows what the messages said.
    const mismatched = await p.page.evaluate((people) => people.filter((x) => {
      const row = document.querySelector(`#people-list [data-person="${x.id}"]`);
      return row?.dataset.muted !== String(!x.media.audio);
    }).length, crowd.map((x) => ({ id: x.id, media: x.media })));
    if (mismatched) throw new Error(`${mismatched} rows do not show the latest mute state`);
    await screenshot(p, shots, '1-speaker-view');

    // ---- the grid: 10 pages of at most 25
    await p.page.click('#view');
    const grid = await waitFor('the first grid page', async () => {
      const s = await p.page.evaluate(() => ({ view: window.ting.view, page: window.ting.page, pages: window.ting.pages, shown: window.ting.shown.grid, layout: window.ting.layout, label: document.getElementById('page-label').textContent }));
      const ok = s.view === 'grid' && s.pages === 10 && s.shown.length === 25 && s.label === 'Page 1 of 10'
        && s.layout?.view === 'grid' && s.layout.page === 0 && s.layout.tiles.length === 25
        && s.layout.tiles.every((t, i) => t.participant === crowd[i].id && t.height > 0);
      return { ok, why: JSON.stringify({ ...s, layout: s.layout && { ...s.layout, tiles: s.layout.tiles.length } }), s };
    }, 5000);
    log(`  grid: ${grid.s.label}, 25 tiles ${grid.s.layout.tiles[0].height} px high`);
    await p.page.click('#page-next');
    await waitFor('the second grid page', async () => {
      const s = await p.page.evaluate(() => ({ page: window.ting.page, layout: window.ting.layout, label: document.getElementById('page-label').textContent }));
      const ok = s.page === 1 && s.label === 'Page 2 of 10' && s.layout?.page === 1
        && s.layout.tiles.length === 25 && s.layout.tiles[0].participant === crowd[25].id;
      return { ok, why: JSON.stringify({ page: s.page, label: s.label, first: s.layout?.tiles[0] }) };
    }, 5000);
    for (let i = 0; i < 8; i++) await p.page.click('#page-next');
    await waitFor('the last grid page', async () => {
      const s = await p.page.evaluate(() => ({ page: window.ting.page, shown: window.ting.shown.grid.length, next: document.getElementById('page-next').disabled, label: document.getElementById('page-label').textContent }));
      return { ok: s.page === 9 && s.shown === 24 && s.next && s.label === 'Page 10 of 10', why: JSON.stringify(s) };
    }, 5000);
    await p.page.click('#page-prev');
    // Mark the tiles once that page is on screen (rendering waits for a frame).
    await waitFor('the page before the last', async () => {
      const s = await p.page.evaluate(() => ({ page: window.ting.page, tiles: document.querySelectorAll('#grid .tile').length }));
      return { ok: s.page === 8 && s.tiles >= 25, why: JSON.stringify(s) };
    }, 5000);
    await p.page.evaluate(() => new Promise((resolve) => requestAnimationFrame(() => requestAnimationFrame(resolve))));
    await p.page.evaluate(() => {
      for (const el of document.querySelectorAll('#grid .tile, #tiles .tile')) el.tingMark = true;
    });
    await flood('grid view');
    const replacedTiles = await p.page.evaluate(() => [...document.querySelectorAll('#grid .tile')].filter((e) => !e.tingMark).length);
    if (replacedTiles) throw new Error(`${replacedTiles} grid tiles were rebuilt during the flood`);
    await screenshot(p, shots, '2-grid');

    // ---- people leave: the page shrinks, the count follows
    for (const x of crowd.slice(-30)) toPage({ type: 'participant_left', participant: x.id, reason: 'left' });
    await waitFor('30 people to leave', async () => {
      const s = await p.page.evaluate(() => ({ count: document.getElementById('count').textContent, pages: window.ting.pages, rows: document.querySelectorAll('#people-list .person').length }));
      return { ok: s.count === `${PEOPLE - 30} / ${PEOPLE}` && s.pages === 9 && s.rows === PEOPLE - 30, why: JSON.stringify(s) };
    }, 5000);

    const errors = await shownErrors(p);
    if (errors.length) throw new Error(`the page showed errors: ${JSON.stringify(errors)}`);
    if (p.problems.length) throw new Error(`script errors: ${p.problems.join('; ')}`);
  } catch (e) {
    await screenshot(p, shots, 'failure').catch(() => {});
    throw e;
  } finally {
    await closeParticipant(p);
  }
}

runTest({ name: 'crowd', room: ROOM }, scenario);
