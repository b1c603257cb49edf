#!/usr/bin/env node
// Simulcast layers chosen by what each viewer shows: four headless Chromium participants
// in one room of a real `ting`, all publishing their camera in three layers (q, h, f).
//
//   node tests/browser/layers.test.mjs          (from the repository root)
//
// What it proves, from each browser's own WebRTC statistics:
//   1. a viewer who shows A large (B pins A) receives a larger layer of A's camera than a
//      viewer who shows A as a small grid tile (C);
//   2. a layer of A that nobody shows stops being sent by A's browser once the server says
//      so (`send_layers`): its outbound-rtp `bytesSent` stops growing, and a camera turned
//      off and on again keeps sending only what is wanted;
//   1b. a thumbnail gets half the frame rate (the server forwards two of the camera's three
//      VP8 temporal layers to a tile under 360 px) and the large tile every frame, and
//      both decode what they get;
//   3. when C makes A large, C's layer of A goes up while its decoder keeps decoding (no
//      stall at the switch), and A's browser sends the layer it had stopped again;
//   4. the room's limit is shown as a count, and a fifth person is refused with a sentence.
//
// The windows are 1024x600, so tiles are at most about 320 px high: the server sends the
// 640x360 layer (h) to a large tile, the 320x180 one (q) to a grid tile of four, and the
// 1280x720 one (f) to nobody. The participants join with their camera only (the microphone
// permission is not granted, which the client handles as "no microphone"): Chromium's fake
// audio path costs more CPU than this two-core machine has to spare next to four video
// encoders, and tests/browser/meeting.test.mjs covers audio.
//
// Environment: see harness.mjs (TING_BIN, TING_LOG_LEVEL, CHROMIUM). Needs `npm install` in
// tests/browser once. Exits 0 when every check passed, 1 otherwise; screenshots and the
// server log go to tests/browser/screenshots/<timestamp>-layers/.

import {
  chromiumArgs, closeParticipant, joinMeeting, launchParticipant, log, runTest, screenshot,
  shownErrors, sleep, waitFor,
} from './harness.mjs';
import { cameraOf } from './observe.mjs';

const ROOM = 'e2e-layers';
// The room holds exactly the four, so that a fifth is refused.
const MAX_PARTICIPANTS = 4;
// 10 fps keeps four 720p simulcast encoders within reach of two cores, with some CPU to
// spare: a starved browser answers late, and the server reads late answers as a congested
// network and holds video back (see the estimates this test prints).
const ARGS = chromiumArgs({ fps: 10, grantAll: false });
const VIEWPORT = { width: 1024, height: 600 };
// Tile heights (device pixels) at which the server picks each layer of a 720p camera: the
// smallest layer at least 85 % of the tile's height.
const Q_MAX = 211;
const H_MAX = 423;
// Generous: the server's bandwidth estimate for each browser starts at 1.5 Mbit/s and
// grows over seconds, and the layers wait for it.
const LAYER_DEADLINE_MS = 60000;

/** What page `p` sends of its own camera, per rid, and what the server asked for. */
function cameraLayersSent(p) {
  return p.page.evaluate(async () => {
    const t = window.ting;
    // The camera is the sender with simulcast encodings.
    const sender = t.pc.getSenders().find((s) => s.getParameters().encodings?.some((e) => e.rid));
    const rids = {};
    (await sender.getStats()).forEach((s) => {
      if (s.type === 'outbound-rtp') {
        rids[s.rid] = {
          bytesSent: s.bytesSent ?? 0,
          framesEncoded: s.framesEncoded ?? 0,
          active: s.active,
          frameWidth: s.frameWidth ?? 0,
          limitation: s.qualityLimitationReason,
        };
      }
    });
    const params = sender.getParameters();
    return {
      order: params.encodings.map((e) => e.rid),
      configured: params.encodings.map((e) => e.active),
      rids,
      sendLayers: t.sendLayers.camera,
    };
  });
}

const launchOptions = { args: ARGS, mute: true, viewport: VIEWPORT, permissions: ['camera'] };

/**
 * Samples A's outbound layers twice, `ms` apart, and checks that exactly the layers the
 * server wants grow. Returns {ok, why, growth, wanted, order}.
 */
async function sendsOnlyWanted(p, ms, extra = () => null) {
  const s1 = await cameraLayersSent(p);
  const wanted = s1.sendLayers.wanted;
  if (!wanted) return { ok: false, why: 'no send_layers yet' };
  const notYet = extra(s1);
  if (notYet) return { ok: false, why: notYet };
  if (s1.configured.some((on, i) => on !== wanted[i])) {
    return { ok: false, why: `encodings active ${JSON.stringify(s1.configured)}, send_layers ${JSON.stringify(wanted)}` };
  }
  await sleep(ms);
  const s2 = await cameraLayersSent(p);
  const problems = [];
  const growth = {};
  s2.order.forEach((rid, i) => {
    const grew = s2.rids[rid].bytesSent - s1.rids[rid].bytesSent;
    growth[rid] = grew;
    if (!s2.sendLayers.wanted[i] && grew > 0) problems.push(`${rid} is unwanted but sent ${grew} bytes in ${ms} ms`);
    if (s2.sendLayers.wanted[i] && grew <= 0) problems.push(`${rid} is wanted but sent nothing in ${ms} ms`);
  });
  if (JSON.stringify(s2.sendLayers.wanted) !== JSON.stringify(wanted)) problems.push('send_layers changed meanwhile');
  return { ok: problems.length === 0, why: problems.join('; '), growth, wanted, order: s2.order };
}

const growthText = (r) => r.order.map((rid) => `${rid} +${r.growth[rid]} B`).join(', ');

const describe = (c) => (c ? `${c.frameWidth}x${c.frameHeight} on mid ${c.mid}${c.paused ? ' (paused)' : ''}, ${c.framesDecoded} frames` : 'no slot');

async function scenario({ port, shots }) {
  const names = [['A', 'Aino Virtanen'], ['B', 'Björn Ek'], ['C', 'Chidi Okafor'], ['D', 'Dana Levi']];
  // Launched one at a time: four browsers starting at once starve this machine.
  const everyone = [];
  try {
    for (const [label, name] of names) everyone.push(await launchParticipant(label, name, launchOptions));
    const [a, b, c, d] = everyone;
    const othersOf = (p) => everyone.filter((o) => o !== p);
    log('four Chromium instances running');
    for (const p of everyone) await joinMeeting(p, port, ROOM);

    // ---- media flows: everyone decodes A, A decodes someone, A publishes three layers.
    // (Not every camera on every page: on a busy machine the server may hold some back for
    // a while, and the checks below are about A's.)
    for (const p of othersOf(a)) {
      await waitFor(`${p.label} to decode A's camera`, async () => {
        const cam = await cameraOf(p, a);
        return { ok: Boolean(cam && cam.framesDecoded > 0), why: describe(cam) };
      }, LAYER_DEADLINE_MS, 500);
    }
    await waitFor('A to decode another camera', async () => {
      const cams = await Promise.all(othersOf(a).map((o) => cameraOf(a, o)));
      return { ok: cams.some((x) => x && x.framesDecoded > 0), why: cams.map(describe).join('; ') };
    }, LAYER_DEADLINE_MS, 500);
    const published = await cameraLayersSent(a);
    if (published.order.join() !== 'q,h,f') {
      throw new Error(`A's camera encodings are ${JSON.stringify(published.order)}, expected q,h,f (lowest first)`);
    }
    log(`  B, C and D decode A, A decodes others; A publishes layers ${published.order.join(', ')}`);

    // ---- the count and the limit
    for (const p of everyone) {
      await waitFor(`${p.label} to show "4 / ${MAX_PARTICIPANTS}"`, async () => {
        const text = await p.page.textContent('#count');
        return { ok: text === `4 / ${MAX_PARTICIPANTS}`, why: `count shows ${JSON.stringify(text)}` };
      }, 5000);
    }

    // ---- 1. B pins A (from the participant list); C and D show the grid
    log(`B pins A from the participant list; C and D switch to the grid`);
    await b.page.click('#people-toggle');
    await b.page.waitForSelector(`#people-list [data-person="${a.id}"] button.pin`, { timeout: 5000 });
    const rows = await b.page.$$eval('#people-list .person', (els) => els.length);
    if (rows !== 4) throw new Error(`B's participant list has ${rows} rows, expected 4`);
    await b.page.click(`#people-list [data-person="${a.id}"] button.pin`);
    for (const p of [c, d]) await p.page.click('#view');

    await waitFor('B to show A pinned large and report it', async () => {
      const s = await b.page.evaluate(() => ({ view: window.ting.view, pinned: window.ting.pinned, large: window.ting.shown.large, layout: window.ting.layout }));
      const first = s.layout?.tiles?.[0];
      const ok = s.view === 'speaker' && s.pinned === a.id && s.large === a.id && first?.participant === a.id
        && first.height > Q_MAX && first.height <= H_MAX;
      return { ok, why: JSON.stringify(s) };
    }, 5000);
    let cTileHeight = 0;
    for (const p of [c, d]) {
      await waitFor(`${p.label} to show the grid and report A small`, async () => {
        const s = await p.page.evaluate(() => ({ view: window.ting.view, layout: window.ting.layout }));
        const tile = s.layout?.tiles?.find((t) => t.participant === a.id);
        if (p === c && tile) cTileHeight = tile.height;
        const ok = s.view === 'grid' && s.layout?.view === 'grid' && tile && tile.height <= Q_MAX;
        return { ok, why: JSON.stringify(s) };
      }, 5000);
    }
    const bLayout = await b.page.evaluate(() => window.ting.layout);
    log(`  B reports A large (${bLayout.tiles[0].height} px high), C reports A in the grid (${cTileHeight} px high)`);

    const sizes = await waitFor('B to receive a larger layer of A than C', async () => {
      const [x, y] = [await cameraOf(b, a), await cameraOf(c, a)];
      const ok = x && y && !x.paused && !y.paused && y.frameWidth > 0 && x.frameWidth > y.frameWidth;
      return { ok, why: `B gets A at ${describe(x)}; C gets A at ${describe(y)}`, x, y };
    }, LAYER_DEADLINE_MS, 500);
    log(`  B (A large) decodes A at ${describe(sizes.x)}; C (A in the grid) at ${describe(sizes.y)}`);
    // Thumbnails get half the frame rate: Chromium's VP8 simulcast sends three temporal
    // layers, and the server forwards layers 0 and 1 to a tile under 360 px (C's grid
    // tile) and every frame to the large tile (B's), whose decoders keep up either way.
    const rates = await waitFor("C to decode about half of A's frames and B all of them", async () => {
      const [s1, b1, c1] = [await cameraLayersSent(a), await cameraOf(b, a), await cameraOf(c, a)];
      await sleep(4000);
      const [s2, b2, c2] = [await cameraLayersSent(a), await cameraOf(b, a), await cameraOf(c, a)];
      if (!b1 || !b2 || !c1 || !c2) return { ok: false, why: 'a slot went away' };
      const encQ = s2.rids.q.framesEncoded - s1.rids.q.framesEncoded;
      const encH = s2.rids.h.framesEncoded - s1.rids.h.framesEncoded;
      const decB = b2.framesDecoded - b1.framesDecoded;
      const decC = c2.framesDecoded - c1.framesDecoded;
      const sameLayers = b1.frameWidth === b2.frameWidth && c1.frameWidth === c2.frameWidth;
      const ok = sameLayers && encQ >= 12 && encH >= 12
        && decC >= 0.3 * encQ && decC <= 0.7 * encQ && decB >= 0.8 * encH;
      return { ok, why: `in 4 s A encoded q ${encQ} and h ${encH} frames; C decoded ${decC} of q, B ${decB} of h`, encQ, encH, decB, decC };
    }, LAYER_DEADLINE_MS, 500);
    log(`  in 4 s A encoded ${rates.encQ} q and ${rates.encH} h frames; C (grid) decoded ${rates.decC}, B (large) ${rates.decB}`);
    // No tile is taller than the 360p layer needs, so nobody receives A's 720p layer.
    const noF = await waitFor("A's browser to send only the layers someone receives (not f)", () => sendsOnlyWanted(a, 2000,
      (s) => (s.sendLayers.wanted[2] !== false ? `send_layers ${JSON.stringify(s.sendLayers.wanted)}` : null)), LAYER_DEADLINE_MS, 500);
    log(`  A's browser sends ${growthText(noF)} in 2 s (send_layers ${JSON.stringify(noF.wanted)})`);
    for (const p of everyone) await screenshot(p, shots, '1-b-pins-a');

    // ---- 2. nobody shows A large: its middle layer stops too
    log('B switches to the grid too: nobody shows A large');
    await b.page.click('#view');
    const stopped = await waitFor("A's browser to stop sending h, which nobody receives now", () => sendsOnlyWanted(a, 2000,
      (s) => (s.sendLayers.wanted[1] !== false || s.sendLayers.wanted[2] !== false ? `send_layers ${JSON.stringify(s.sendLayers.wanted)}` : null)),
    LAYER_DEADLINE_MS, 500);
    log(`  A's browser sends ${growthText(stopped)} in 2 s (send_layers ${JSON.stringify(stopped.wanted)})`);

    // The wish survives the camera going off and on: the new track sends only q too.
    log('A turns the camera off and on again');
    await a.page.click('#camera');
    await waitFor("A's camera to be off", async () => ({ ok: (await a.page.textContent('#camera')) === 'Camera on', why: 'still on' }), 5000);
    await waitFor(`C to show A's camera off`, async () => {
      const off = await c.page.$eval(`#tiles [data-participant="${a.id}"]`, (el) => el.dataset.cameraOff);
      return { ok: off === 'true', why: `data-camera-off=${off}` };
    }, 10000);
    await a.page.click('#camera');
    await waitFor("A's camera to be on", async () => ({ ok: (await a.page.textContent('#camera')) === 'Camera off', why: 'still off' }), 10000);
    const again = await waitFor("A's browser to send only q after the camera came back", () => sendsOnlyWanted(a, 2000,
      (s) => (s.sendLayers.wanted.join() !== 'true,false,false' ? `send_layers ${JSON.stringify(s.sendLayers.wanted)}` : null)),
    LAYER_DEADLINE_MS, 500);
    log(`  after the camera came back A's browser sends ${growthText(again)} in 2 s`);
    await waitFor('C to decode A again', async () => {
      const x1 = await cameraOf(c, a);
      await sleep(1000);
      const x2 = await cameraOf(c, a);
      return { ok: Boolean(x1 && x2 && x2.framesDecoded > x1.framesDecoded), why: `C gets A at ${describe(x2)}` };
    }, LAYER_DEADLINE_MS, 500);
    for (const p of everyone) await screenshot(p, shots, '2-nobody-large');

    // ---- 3. C makes A large by clicking A's tile: the layer goes up without a stall
    const before = await cameraOf(c, a);
    log(`C clicks A's tile to pin A (C decodes A at ${describe(before)})`);
    await c.page.click(`#grid [data-participant="${a.id}"]`);
    await waitFor('C to show A pinned large', async () => {
      const s = await c.page.evaluate(() => ({ view: window.ting.view, pinned: window.ting.pinned, layout: window.ting.layout }));
      const first = s.layout?.tiles?.[0];
      return { ok: s.view === 'speaker' && s.pinned === a.id && first?.participant === a.id && first.height > Q_MAX, why: JSON.stringify(s) };
    }, 5000);
    // Sampled all along the switch: the decoder must never go long without a new frame.
    // What C receives and what A sends are kept, to explain a stall if there is one.
    const trace = [];
    const history = [];
    const t0 = Date.now();
    const note = async (x) => {
      const out = await cameraLayersSent(a).catch(() => null);
      const rids = out ? out.order.map((rid) => `${rid}${out.configured[out.order.indexOf(rid)] ? '' : '(off)'}:${out.rids[rid].bytesSent}`).join(' ') : '?';
      const limited = out ? [...new Set(Object.values(out.rids).map((r) => r.limitation))].join('/') : '?';
      history.push(`${((Date.now() - t0) / 1000).toFixed(1)}s C: ${describe(x)}, received ${x?.framesReceived} frames ${x?.bytesReceived} B, ${x?.keyFramesDecoded} keyframes, ${x?.pliCount} PLIs | A sends ${rids} (limited by ${limited})`);
    };
    const stalledError = (msg) => new Error(`${msg}\n  what C received and A sent meanwhile:\n    ${history.join('\n    ')}`);
    let lastFrames = before.framesDecoded;
    let lastGrowth = Date.now();
    let longestStall = 0;
    const up = await waitFor("C's layer of A to go up", async () => {
      const x = await cameraOf(c, a);
      await note(x);
      const now = Date.now();
      // Time since the last sample that saw new frames: about the sampling interval while
      // frames keep coming.
      longestStall = Math.max(longestStall, now - lastGrowth);
      if (x && x.framesDecoded > lastFrames) {
        lastFrames = x.framesDecoded;
        lastGrowth = now;
      }
      trace.push(x?.frameWidth ?? 0);
      if (longestStall > 3000) {
        throw Object.assign(stalledError(`C's decoder of A stalled for ${longestStall} ms (${describe(x)})`), { fatal: true });
      }
      return { ok: Boolean(x && x.frameWidth > before.frameWidth), why: `C gets A at ${describe(x)}`, x };
    }, LAYER_DEADLINE_MS, 250);
    // And it goes on decoding at the new size.
    for (let i = 0; i < 4; i++) {
      await sleep(500);
      await note(await cameraOf(c, a));
    }
    const after = await cameraOf(c, a);
    if (!(after.framesDecoded > up.x.framesDecoded)) {
      throw stalledError(`C stopped decoding A after the switch: ${describe(up.x)} -> ${describe(after)}`);
    }
    if (after.ssrc !== before.ssrc || after.mid !== before.mid) {
      throw new Error(`A moved to another stream on C (${before.mid}/${before.ssrc} -> ${after.mid}/${after.ssrc}): a slot should change layer in place`);
    }
    const widths = trace.filter((w, i) => i === 0 || w !== trace[i - 1]).join(' -> ');
    log(`  C decodes A at ${describe(after)} (widths seen: ${widths}); longest wait for a new decoded frame ${longestStall} ms (sampled every 250 ms)`);
    const resumed = await waitFor("A's browser to send h again", () => sendsOnlyWanted(a, 1000,
      (s) => (s.sendLayers.wanted[1] !== true ? `send_layers ${JSON.stringify(s.sendLayers.wanted)}` : null)), LAYER_DEADLINE_MS, 500);
    log(`  A's browser sends ${growthText(resumed)} in 1 s (send_layers ${JSON.stringify(resumed.wanted)})`);
    for (const p of everyone) await screenshot(p, shots, '3-c-pins-a');

    // ---- 4. a fifth person finds the room full, and is told so in words
    log('E tries to join the full room');
    const e = await launchParticipant('E', 'Eero Salo', launchOptions);
    everyone.push(e);
    let refused = null;
    try {
      await joinMeeting(e, port, ROOM);
    } catch (err) {
      refused = err.errors ?? (await shownErrors(e));
    }
    const full = refused?.find((x) => x.code === 'room_full');
    const want = `This meeting is full (${MAX_PARTICIPANTS} of ${MAX_PARTICIPANTS} places taken). Try again later or ask the host.`;
    if (!full || !full.text.startsWith(want)) {
      throw new Error(`E should see "${want}", the page shows ${JSON.stringify(refused)}`);
    }
    log(`  E sees: ${full.text}`);
    await screenshot(e, shots, '4-room-full');

    for (const p of everyone) {
      const errors = p === e ? [] : await shownErrors(p);
      if (errors.length) throw new Error(`${p.label} showed errors: ${JSON.stringify(errors)}`);
      if (p.problems.length) throw new Error(`${p.label} had script errors: ${p.problems.join('; ')}`);
    }
  } catch (err) {
    for (const p of everyone) await screenshot(p, shots, 'failure').catch(() => {});
    throw err;
  } finally {
    await Promise.all(everyone.map(closeParticipant));
  }
}

runTest({
  name: 'layers',
  room: ROOM,
  env: { TING_LIMITS_MAX_PARTICIPANTS_PER_ROOM: String(MAX_PARTICIPANTS) },
}, scenario);
