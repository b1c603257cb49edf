// What a meeting page receives and shows of another participant, for the browser tests
// that take connections away: whether media flows from one page to another, and whether a
// page ever lost the other's tile while its connection was away.

import { log, sleep, waitFor } from './harness.mjs';

// ---- what a page receives ----------------------------------------------------------------

/** What one page receives: per receive slot, its inbound-rtp numbers, plus the slot map. */
export function sample(p) {
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
        bytesReceived: inbound?.bytesReceived ?? 0,
        framesDecoded: inbound?.framesDecoded ?? 0,
      };
    }
    return { slots: t.slots, receivers, connectionState: pc.connectionState };
  });
}

/** The mid of the slot that carries `source` of `participant` on this page, or null. */
export function midOf(s, participant, source) {
  for (const [mid, v] of Object.entries(s.slots)) {
    if (v.participant === participant && v.source === source) return mid;
  }
  return null;
}

/**
 * Samples twice, `gapMs` apart, and checks that the slot mapped to `source` of `other`
 * grows: framesDecoded for the camera and the screen, bytesReceived for the microphone.
 */
export async function flowing(p, other, source, gapMs = 500) {
  const a = await sample(p);
  await sleep(gapMs);
  const b = await sample(p);
  if (!a || !b) return { ok: false, why: 'no PeerConnection yet' };
  const mid = midOf(b, other.id, source);
  if (!mid) return { ok: false, why: `no slot maps ${other.label}'s ${source} (pc ${b.connectionState})` };
  const metric = source === 'microphone' ? 'bytesReceived' : 'framesDecoded';
  const before = a.receivers[mid]?.[metric] ?? 0;
  const after = b.receivers[mid]?.[metric] ?? 0;
  return {
    ok: after > before,
    why: `${other.label}'s ${source} on mid ${mid}: ${metric} ${before} -> ${after} (pc ${b.connectionState})`,
  };
}

/** Waits until each of `a` and `b` decodes the other's camera and hears the other (the
 *  four checked at once, so the time it took is the slowest of them). */
export async function mediaBothWays(a, b, when, timeoutMs = 20000) {
  const checks = [];
  for (const [p, other] of [[b, a], [a, b]]) {
    checks.push(waitFor(`${p.label} to decode ${other.label}'s camera ${when}`, () => flowing(p, other, 'camera'), timeoutMs, 100));
    checks.push(waitFor(`${p.label} to hear ${other.label} ${when}`, () => flowing(p, other, 'microphone'), timeoutMs, 100));
  }
  await Promise.all(checks);
}

// ---- what a page shows of the other -----------------------------------------------------

/**
 * Starts watching, in `p`'s page, what it shows of `other` every 50 ms: whether its tile
 * was ever missing (or named someone else), and whether the tile, the participant list or
 * the debug handle ever said it was reconnecting. Read with stopWatch().
 */
export function watchOther(p, other) {
  return p.page.evaluate(({ id, name }) => {
    clearInterval(window.__watch?.timer);
    const w = { samples: 0, missing: 0, wrongName: 0, tileMarked: false, rowMarked: false, listed: false };
    w.timer = setInterval(() => {
      w.samples++;
      const fig = document.querySelector(`#tiles [data-participant="${id}"]`);
      if (!fig) {
        w.missing++;
      } else {
        if (fig.querySelector('.name').textContent !== name) w.wrongName++;
        const badge = fig.querySelector('.reconnecting-badge');
        if (fig.dataset.reconnecting === 'true' && badge && !badge.hidden) w.tileMarked = true;
      }
      const row = document.querySelector(`#people-list [data-person="${id}"]`);
      if (row?.dataset.reconnecting === 'true' && row.querySelector('.state').textContent.includes('Reconnecting')) {
        w.rowMarked = true;
      }
      if (window.ting.reconnecting.includes(id)) w.listed = true;
    }, 50);
    window.__watch = w;
  }, { id: other.id, name: other.name });
}

export function stopWatch(p) {
  return p.page.evaluate(() => {
    const w = window.__watch;
    clearInterval(w.timer);
    window.__watch = null;
    const { timer, ...seen } = w;
    return seen;
  });
}

/** Checks what `watch` saw of `other` on `p`'s page: the tile never went away. */
export function checkNeverGone(p, other, watch, when) {
  if (watch.samples < 5) throw new Error(`${p.label} was hardly watched ${when}: ${JSON.stringify(watch)}`);
  if (watch.missing || watch.wrongName) {
    throw new Error(`${p.label} lost ${other.label}'s tile ${when}: ${JSON.stringify(watch)}`);
  }
  const marked = [watch.tileMarked && 'the tile', watch.rowMarked && 'the participant list'].filter(Boolean);
  log(`  ${p.label} kept ${other.label}'s tile ${when} (${watch.samples} looks); ${
    marked.length ? `"Reconnecting…" showed on ${marked.join(' and ')}` : 'no "Reconnecting…" was seen (too short to catch)'}`);
}

/** What page `p` receives of `who`'s camera: the slot the latest `slots` maps to it and
 *  that receiver's inbound-rtp numbers. */
export function cameraOf(p, who) {
  return p.page.evaluate(async (id) => {
    const t = window.ting;
    const entry = Object.entries(t.slots).find(([, s]) => s.participant === id && s.source === 'camera');
    if (!entry) return null;
    const [mid, slot] = entry;
    const tr = t.pc.getTransceivers().find((x) => x.mid === mid);
    let inbound = null;
    (await tr.receiver.getStats()).forEach((s) => {
      if (s.type === 'inbound-rtp' && s.kind === 'video') inbound = s;
    });
    return {
      mid,
      paused: Boolean(slot.paused),
      ssrc: inbound?.ssrc ?? null,
      frameWidth: inbound?.frameWidth ?? 0,
      frameHeight: inbound?.frameHeight ?? 0,
      framesDecoded: inbound?.framesDecoded ?? 0,
      framesReceived: inbound?.framesReceived ?? 0,
      keyFramesDecoded: inbound?.keyFramesDecoded ?? 0,
      bytesReceived: inbound?.bytesReceived ?? 0,
      pliCount: inbound?.pliCount ?? 0,
    };
  }, who.id);
}
