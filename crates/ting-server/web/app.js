// The page: landing (/), pre-join and meeting views (/m/<room>).
//
// All signalling and WebRTC lives in meeting.js; this file turns a Meeting's state into DOM
// and the user's clicks into calls on it.
//
// A meeting may hold 250 people, and the server sends `speaking` several times a second,
// so rendering is incremental and coalesced: each change of the Meeting marks what it
// makes stale (the arrangement of tiles, one person's tile, the speaking highlights, one
// row of the participant list, ...) and one requestAnimationFrame applies all of it,
// updating existing elements in place (a <video> keeps its srcObject unless the stream to
// show changed, so nothing flickers). After each frame that changed what is shown, the
// page tells the server its layout, which decides whose camera arrives at which size.
//
// No innerHTML anywhere: names come from other people and are only ever set as text.

import { CAMERA_CONSTRAINTS, Meeting, MeetingError, ROOM_NAME } from '/meeting.js';

const $ = (id) => document.getElementById(id);
const NAME_KEY = 'ting.name';
/** Tiles on one grid page: 5 x 5, as many as the server has camera slots by default. */
const GRID_PAGE = 25;
/** Thumbnails in the speaker view's strip. */
const STRIP = 8;
/** Camera tiles are 16:9, like the camera's layers; width / height. */
const TILE_RATIO = 16 / 9;
/** What a tile says while the server holds its video back (`paused` in `slots`). */
const VIDEO_PAUSED = 'Video paused (low bandwidth)';

/** The room of this page, from /m/<room>; null on the landing page. */
let room = null;
/** Camera and microphone for the pre-join preview; handed to the Meeting on Join. */
let preview = null;
let previewPending = null;
/** The session while in a meeting. */
let meeting = null;

// ---- errors and status ----------------------------------------------------------------

/** Shows an error until dismissed: a sentence to act on, and the code for whoever helps. */
function showError(code, message) {
  const box = $('errors');
  const item = document.createElement('div');
  item.className = 'error';
  item.dataset.code = code;
  const text = document.createElement('p');
  const c = document.createElement('code');
  c.textContent = code;
  text.append(message, ' ', c);
  const close = document.createElement('button');
  close.type = 'button';
  close.className = 'dismiss';
  close.textContent = 'Dismiss';
  close.setAttribute('aria-label', 'Dismiss this message');
  close.addEventListener('click', () => item.remove());
  item.append(text, close);
  box.append(item);
  // A flood of errors should not bury the page.
  while (box.children.length > 4) box.firstElementChild.remove();
  // The page may be scrolled down to the name field; the message is what matters now.
  item.scrollIntoView({ block: 'nearest' });
}

/** The server's own words, as the end of a sentence of ours: "the room name is too long". */
function detail(said) {
  const s = String(said ?? '').trim().replace(/\.$/, '');
  return s ? ` (the server says: ${s})` : '';
}

/**
 * What a refusal or failure means for the person, and what they can do about it. The
 * server's `message` is written for developers; its `code` is what we can rely on
 * (docs/protocol.md, Errors).
 */
function explain(code, said) {
  switch (code) {
    case 'room_full': {
      // "the room is full: all 250 places are taken"; the number is the room's size.
      const places = String(said ?? '').match(/\d+/)?.[0];
      const taken = places ? ` (${places} of ${places} places taken)` : '';
      return `This meeting is full${taken}. Try again later or ask the host.`;
    }
    case 'too_many_rooms':
      return 'This server is holding as many meetings as it can right now. Try again in a few minutes, or ask whoever runs it.';
    case 'bad_room':
      return `This meeting link is not valid${detail(said)}. A room name is 1 to 64 letters, digits, - or _; check the link you were given.`;
    case 'bad_name':
      return `That name cannot be used${detail(said)}. Use 1 to 64 characters, without control characters, and join again.`;
    case 'unavailable':
      return 'The server is not letting anyone in right now (it is starting or shutting down). Wait a moment and join again.';
    case 'unsupported_version':
      return 'This page is older than the server. Reload the page and join again.';
    case 'timeout':
      return 'The server did not answer in time. Check your connection and join again.';
    case 'connection':
      return said || 'Cannot reach the server. Check your connection and try again.';
    case 'media_failed':
      return 'The media connection failed (a firewall may block it). Join again to retry; if it keeps failing, try another network.';
    case 'bad_offer':
    case 'message_too_large':
      return `The server cannot use this browser's media setup${detail(said)}. Try a recent Chromium or Firefox.`;
    case 'not_joined':
    case 'already_joined':
    case 'already_connected':
    case 'bad_message':
      return `This page and the server got out of step${detail(said)}. Reload the page to continue.`;
    case 'internal':
      return `Something went wrong inside the server${detail(said)}. Join again; if it keeps happening, tell whoever runs it.`;
    case 'too_slow':
      return 'Your connection could not keep up with the meeting, so the server let it go. Check your network (or close other busy tabs) and join again.';
    case 'join_timeout':
      return 'The page waited too long before joining. Join again.';
    case 'rate_limited':
      return `This page sent the server more than it accepts${detail(said)}; one request was dropped. If something looks wrong, reload the page.`;
    default:
      return said || 'Something went wrong.';
  }
}

function showMeetingError(err) {
  if (err instanceof MeetingError) showError(err.code, explain(err.code, err.message));
  else showError('client', String(err?.message ?? err));
}

function setStatus(text) {
  if ($('status').textContent !== text) $('status').textContent = text;
}

function showView(id) {
  for (const v of ['landing', 'prejoin', 'meeting']) $(v).hidden = v !== id;
  document.body.classList.toggle('in-meeting', id === 'meeting');
}

// ---- landing --------------------------------------------------------------------------

/** A random room name such as `kfp-trwm-zha`: easy to read out, hard to guess. */
function randomRoomName() {
  const letters = 'abcdefghijkmnopqrstuvwxyz'; // no l: it looks like 1 and I
  const bytes = crypto.getRandomValues(new Uint8Array(10));
  const pick = (from, to) => Array.from(bytes.slice(from, to), (b) => letters[b % letters.length]).join('');
  return `${pick(0, 3)}-${pick(3, 7)}-${pick(7, 10)}`;
}

function showLanding() {
  showView('landing');
  document.title = 'ting';
  const input = $('room-name');
  input.value = randomRoomName();
  $('landing-form').addEventListener('submit', (e) => {
    e.preventDefault();
    const name = input.value.trim();
    if (!ROOM_NAME.test(name)) {
      showError('bad_room', 'A room name is 1 to 64 letters, digits, - or _.');
      return;
    }
    location.assign(`/m/${encodeURIComponent(name)}`);
  });
  input.focus();
  input.select();
}

// ---- pre-join -------------------------------------------------------------------------

function hasLiveTracks(stream) {
  return Boolean(stream?.getTracks().some((t) => t.readyState === 'live'));
}

/** Opens camera and microphone for the preview. Joining without either is allowed: the
 *  person can still see and hear the others. */
function startPreview() {
  if (hasLiveTracks(preview)) return Promise.resolve();
  if (previewPending) return previewPending;
  const note = $('preview-note');
  note.hidden = true;
  previewPending = (async () => {
    if (!navigator.mediaDevices?.getUserMedia) {
      note.textContent = 'This browser gives no access to camera or microphone here (it needs https).';
      note.hidden = false;
      return;
    }
    const attempts = [
      { audio: true, video: CAMERA_CONSTRAINTS },
      { audio: true },
      { video: CAMERA_CONSTRAINTS },
    ];
    let lastError = null;
    for (const constraints of attempts) {
      try {
        preview = await navigator.mediaDevices.getUserMedia(constraints);
        break;
      } catch (e) {
        lastError = e;
      }
    }
    if (!preview) {
      note.textContent = `No camera or microphone (${lastError?.name ?? 'unavailable'}). You can still join to watch and listen.`;
      note.hidden = false;
    } else if (!preview.getVideoTracks().length) {
      note.textContent = 'No camera: others will see your name only.';
      note.hidden = false;
    } else if (!preview.getAudioTracks().length) {
      note.textContent = 'No microphone: others will not hear you.';
      note.hidden = false;
    }
    $('preview').srcObject = preview;
  })().finally(() => {
    previewPending = null;
  });
  return previewPending;
}

function showPrejoin() {
  showView('prejoin');
  setStatus('');
  $('join').disabled = false;
  $('join').textContent = 'Join';
  startPreview();
  $('name').focus();
}

async function onJoin(e) {
  e.preventDefault();
  const name = $('name').value.trim();
  if (!name) return;
  try {
    localStorage.setItem(NAME_KEY, name);
  } catch {
    // Storage can be off (private windows); remembering the name is only a convenience.
  }
  const button = $('join');
  button.disabled = true;
  button.textContent = 'Joining…';
  await startPreview();
  const stream = preview;
  preview = null;
  $('preview').srcObject = null;

  const m = new Meeting({ room, name, stream });
  meeting = m;
  resetView();
  m.addEventListener('change', (ev) => onMeetingChange(m, ev.detail));
  m.addEventListener('error', (ev) => showMeetingError(ev.detail));
  try {
    await m.join();
  } catch (err) {
    if (meeting === m) meeting = null;
    clearMeetingView();
    showPrejoin();
    showMeetingError(err);
    return;
  }
  m.addEventListener('ended', (ev) => {
    const reason = ev.detail.reason;
    exitMeeting(m);
    if (reason instanceof MeetingError) showMeetingError(reason);
  });
  showView('meeting');
  invalidateAll();
}

// ---- meeting: state of the view ------------------------------------------------------

/** What the page shows and what is stale; reset for each meeting. */
let ui = null;

function resetView() {
  ui = {
    /** `speaker` (one large tile and a strip) or `grid` (pages of 25). */
    view: 'speaker',
    /** The grid page shown, from 0. */
    page: 0,
    /** Whom the person pinned to the large tile, or null to follow the active speaker. */
    pinned: null,
    peopleOpen: false,
    /** What is on screen now: the large tile's participant, the strip, the grid page. */
    shown: { large: null, strip: [], grid: [], pages: 1 },
    /** Participant id -> its camera tile, for the others on screen. */
    tiles: new Map(),
    selfTile: null,
    /** Participant id -> its row of the participant list. */
    rows: new Map(),
    /** Participants whose camera the last layout asked for. */
    inLayout: new Set(),
    /** The active speaker as highlighted now. */
    highlighted: null,
    /** Width of the large tile, CSS pixels. */
    largeWidth: 0,
    /** The grid's gap between tiles (CSS pixels), read once. */
    gridGap: null,
    /** The height of a tile (CSS pixels) in `large`, `strip` and `grid`, as last measured. */
    heights: {},
    frame: 0,
    dirty: null,
    renders: 0,
    /** Time spent rendering, in all and at most in one frame (ms), for the debug handle. */
    renderMs: 0,
    renderMaxMs: 0,
  };
  invalidateAll();
}

function freshDirty() {
  return {
    /** Which tiles go where: view, page, pin, speakers, people joining or leaving. */
    arrangement: false,
    /** Every shown tile's video and state (after `slots`). */
    allTiles: false,
    /** Only these participants' tiles. */
    tiles: new Set(),
    self: false,
    /** Speaking changed for these participants. */
    speaking: new Set(),
    activeSpeaker: false,
    /** These rows of the participant list, or all of them. */
    rows: new Set(),
    allRows: false,
    screens: false,
    sizes: false,
    controls: false,
    status: false,
    audio: false,
  };
}

function invalidateAll() {
  if (!ui) return;
  const d = freshDirty();
  for (const k of Object.keys(d)) if (typeof d[k] === 'boolean') d[k] = true;
  ui.dirty = d;
  scheduleRender();
}

/** Marks what a change of the Meeting makes stale; the next frame renders it. */
function onMeetingChange(m, detail) {
  if (m !== meeting || !ui) return;
  const d = ui.dirty;
  const ids = detail?.ids ?? null;
  switch (detail?.what) {
    case 'participants':
      d.arrangement = d.status = true;
      if (ids) {
        for (const id of ids) {
          d.tiles.add(id);
          d.rows.add(id);
        }
      } else {
        d.allTiles = d.allRows = true;
      }
      // A share starting or ending changes the screens.
      d.screens = true;
      break;
    case 'slots':
      d.allTiles = d.screens = true;
      // Without a pin, the large tile shows whom the server put there.
      d.arrangement = true;
      break;
    case 'speaking':
      for (const id of ids ?? []) d.speaking.add(id);
      // The strip holds the most recent speakers.
      if (ui.view === 'speaker') d.arrangement = true;
      break;
    case 'active_speaker':
      d.activeSpeaker = true;
      if (ui.view === 'speaker') d.arrangement = true;
      break;
    case 'local':
      d.self = d.controls = d.screens = true;
      d.rows.add(m.participantId);
      break;
    case 'state':
      d.status = true;
      break;
    case 'receivers':
      d.audio = true;
      break;
    default:
      invalidateAll();
      return;
  }
  scheduleRender();
}

function scheduleRender() {
  if (ui && !ui.frame) ui.frame = requestAnimationFrame(renderFrame);
}

// ---- meeting: leaving ------------------------------------------------------------------

/** Empties the meeting view, which rendering may have filled even if joining failed. */
function clearMeetingView() {
  if (ui?.frame) cancelAnimationFrame(ui.frame);
  ui = null;
  for (const id of ['large', 'grid', 'strip', 'self', 'screens', 'audio-sinks']) {
    for (const media of $(id).querySelectorAll('video, audio')) media.srcObject = null;
    $(id).replaceChildren();
  }
  $('people-list').replaceChildren();
  $('people').hidden = true;
  $('count').hidden = true;
  $('enable-audio').hidden = true;
  $('meeting').classList.remove('has-screen');
}

function exitMeeting(m) {
  if (meeting !== m) return;
  meeting = null;
  clearMeetingView();
  showPrejoin();
}

// ---- meeting: tiles --------------------------------------------------------------------

function initials(name) {
  const parts = name.trim().split(/\s+/).filter(Boolean);
  const first = parts[0]?.[0] ?? '?';
  const last = parts.length > 1 ? parts[parts.length - 1][0] : '';
  return (first + last).toUpperCase();
}

/** Sets text only when it differs: a page of 34 tiles is refreshed often. */
function setText(el, text) {
  if (el.textContent !== text) el.textContent = text;
}

/** A tile: a video (or a placeholder when there is none) and a caption. */
function createTile(participant, source) {
  const fig = document.createElement('figure');
  fig.className = `tile ${source}-tile`;
  fig.dataset.participant = participant;
  const video = document.createElement('video');
  video.dataset.source = source;
  video.autoplay = true;
  video.playsInline = true;
  // Tiles are silent: sound plays through the audio slots' own elements.
  video.muted = true;
  const placeholder = document.createElement('div');
  placeholder.className = 'placeholder';
  const avatar = document.createElement('span');
  avatar.className = 'avatar';
  avatar.setAttribute('aria-hidden', 'true');
  const note = document.createElement('span');
  note.className = 'placeholder-note';
  placeholder.append(avatar, note);
  const caption = document.createElement('figcaption');
  const name = document.createElement('span');
  name.className = 'name';
  const pinned = document.createElement('span');
  pinned.className = 'badge pinned-badge';
  pinned.textContent = 'Pinned';
  pinned.hidden = true;
  const muted = document.createElement('span');
  muted.className = 'badge muted-badge';
  muted.textContent = 'Muted';
  muted.hidden = true;
  caption.append(name, pinned, muted);
  fig.append(video, placeholder, caption);
  return fig;
}

/** Another person's camera tile: clicking it pins them to the large tile (or unpins). */
function createPersonTile(id) {
  const fig = createTile(id, 'camera');
  fig.classList.add('pinnable');
  fig.tabIndex = 0;
  fig.setAttribute('role', 'button');
  // The tile may be handed to someone else later (see place()): ask it whose it is now.
  fig.addEventListener('click', () => togglePin(fig.dataset.participant));
  fig.addEventListener('keydown', (e) => {
    if (e.key === 'Enter' || e.key === ' ') {
      e.preventDefault();
      togglePin(fig.dataset.participant);
    }
  });
  return fig;
}

/**
 * Updates a tile in place.
 * @param {HTMLElement} fig
 * @param {{name: string, stream: MediaStream|null, note: string, muted: boolean,
 *          speaking: boolean, active: boolean, pinned?: boolean, mirror?: boolean,
 *          label: string}} s
 */
function updateTile(fig, s) {
  const video = fig.querySelector('video');
  const stream = s.stream;
  if (video.srcObject !== stream) video.srcObject = stream;
  video.hidden = !stream;
  video.classList.toggle('mirror', Boolean(s.mirror));
  fig.querySelector('.placeholder').hidden = Boolean(stream);
  setText(fig.querySelector('.avatar'), initials(s.name));
  setText(fig.querySelector('.placeholder-note'), s.note);
  setText(fig.querySelector('.name'), s.label);
  fig.querySelector('.muted-badge').hidden = !s.muted;
  const pinned = fig.querySelector('.pinned-badge');
  if (pinned) pinned.hidden = !s.pinned;
  fig.dataset.muted = String(s.muted);
  fig.dataset.cameraOff = String(s.note === 'Camera off');
  fig.dataset.videoPaused = String(s.note === VIDEO_PAUSED);
  if (fig.getAttribute('role') === 'button') {
    fig.setAttribute('aria-pressed', String(Boolean(s.pinned)));
  }
  setHighlights(fig, s.label, s.muted, s.speaking, s.active);
}

/** The speaking border, the active speaker's ring, and the label naming both. */
function setHighlights(fig, label, muted, speaking, active) {
  fig.classList.toggle('speaking', speaking);
  fig.classList.toggle('active-speaker', active);
  const state = [muted && 'muted', speaking && 'speaking', active && 'active speaker']
    .filter(Boolean).join(', ');
  const text = state ? `${label} (${state})` : label;
  if (fig.getAttribute('aria-label') !== text) fig.setAttribute('aria-label', text);
}

/** What another person's tile shows now. */
function personTileState(m, id) {
  const p = m.participants.get(id);
  const slot = m.receiverFor(id, 'camera');
  const paused = m.isPaused(id, 'camera');
  // The slot may still hold the camera's last frame after it was turned off, and a slot
  // held back for bandwidth would show a frozen picture: show the name instead.
  const live = Boolean(p.media.video && slot && !paused);
  let note = 'Camera off';
  if (p.media.video) {
    if (paused) note = VIDEO_PAUSED;
    else if (!slot) note = ui.inLayout.has(id) ? 'Video starting…' : 'No video slot free';
    else note = '';
  }
  return {
    name: p.name,
    label: p.name,
    stream: live ? slot.stream : null,
    note,
    muted: !p.media.audio,
    speaking: m.speaking.has(id),
    active: m.activeSpeaker === id,
    pinned: ui.pinned === id,
  };
}

function fillPersonTile(m, id) {
  const fig = ui.tiles.get(id);
  if (fig && m.participants.has(id)) updateTile(fig, personTileState(m, id));
}

function fillSelfTile(m) {
  if (!ui.selfTile) {
    ui.selfTile = createTile(m.participantId ?? 'self', 'camera');
    ui.selfTile.classList.add('self-tile');
    $('self').append(ui.selfTile);
  }
  const me = m.media;
  const id = m.participantId;
  updateTile(ui.selfTile, {
    name: m.name,
    label: `${m.name} (you)`,
    stream: me.video ? m.cameraStream : null,
    note: me.video ? '' : 'Camera off',
    muted: !me.audio,
    speaking: m.speaking.has(id),
    active: m.activeSpeaker === id,
    mirror: true,
  });
  if (id && ui.selfTile.dataset.participant !== id) ui.selfTile.dataset.participant = id;
}

function releaseTile(fig) {
  const v = fig.querySelector('video');
  if (v) v.srcObject = null;
  fig.remove();
}

// ---- meeting: who goes where -------------------------------------------------------------

/** The person the large tile shows when nobody is pinned, as far as we know. */
function likelySpeaker(m) {
  const me = m.participantId;
  const present = (id) => id && id !== me && m.participants.has(id);
  if (present(m.activeSpeaker)) return m.activeSpeaker;
  const recent = m.recentSpeakers.find(present);
  if (recent) return recent;
  return m.participants.keys().next().value ?? null;
}

/** Which participants each part of the view shows, from the meeting's state. */
function arrange(m) {
  const me = m.participantId;
  const others = m.participants;
  if (ui.pinned && !others.has(ui.pinned)) ui.pinned = null;
  if (ui.view === 'grid') {
    const pages = Math.max(1, Math.ceil(others.size / GRID_PAGE));
    ui.page = Math.min(Math.max(0, ui.page), pages - 1);
    const from = ui.page * GRID_PAGE;
    const grid = [];
    let i = 0;
    for (const id of others.keys()) {
      if (i >= from + GRID_PAGE) break;
      if (i >= from) grid.push(id);
      i++;
    }
    return { large: null, strip: [], grid, pages };
  }
  let large = ui.pinned ?? likelySpeaker(m);
  // Who belongs in the strip: the most recent speakers, then the others in the order they
  // joined.
  const members = [];
  const take = (id) => {
    if (id !== me && id !== large && others.has(id) && !members.includes(id)) members.push(id);
  };
  for (const id of m.recentSpeakers) {
    if (members.length >= STRIP) break;
    take(id);
  }
  for (const id of others.keys()) {
    if (members.length >= STRIP) break;
    take(id);
  }
  // Where: thumbnails keep their places, and a newcomer takes the place of whoever left the
  // strip. Reordering by recency on every `speaking` would make faces jump around (and
  // change the layout reported to the server) each time someone says a word.
  const strip = ui.shown.strip.filter((id) => members.includes(id));
  const newcomers = members.filter((id) => !strip.includes(id));
  for (let i = 0; i < ui.shown.strip.length && newcomers.length; i++) {
    if (!members.includes(ui.shown.strip[i])) strip.splice(Math.min(i, strip.length), 0, newcomers.shift());
  }
  strip.push(...newcomers);
  // Unpinned, the large tile is "the active speaker" in our layout and the server decides
  // who that is (it skips people without a camera, and ourselves). If it put a camera into
  // a slot that no tile of ours names, that is its choice: show that one large.
  if (!ui.pinned && large && !m.receiverFor(large, 'camera')) {
    for (const s of m.slots.values()) {
      if (s.source === 'camera' && s.participant !== me && others.has(s.participant)
          && !strip.includes(s.participant)) {
        large = s.participant;
        break;
      }
    }
  }
  return { large, strip, grid: [], pages: 1 };
}

function sameList(a, b) {
  return a.length === b.length && a.every((x, i) => x === b[i]);
}

/**
 * Puts the tiles of `ids` into `container` in order, moving only what is out of place:
 * moving a playing <video> can pause it in some browsers. Someone without a tile takes
 * over a tile no longer wanted, preferably the one already at their place (a newcomer to
 * the strip takes the leaver's thumbnail as it stands); only without one is a tile made.
 * Tiles left over are removed by the caller, or moved to another container.
 */
function place(container, ids, wanted, created) {
  let prev = null;
  for (const id of ids) {
    const want = prev ? prev.nextElementSibling : container.firstElementChild;
    let el = ui.tiles.get(id);
    if (!el) {
      const spare = want && !wanted.has(want.dataset.participant) ? want : null;
      if (spare) {
        ui.tiles.delete(spare.dataset.participant);
        spare.dataset.participant = id;
        el = spare;
      } else {
        el = createPersonTile(id);
      }
      ui.tiles.set(id, el);
      created.add(id);
    }
    if (want !== el) container.insertBefore(el, want);
    prev = el;
  }
}

/** Applies a new arrangement to the DOM, marking in `d` the tiles to refill. Returns the
 *  ids of tiles created and whether anything moved. */
function applyArrangement(m, shown, d) {
  const created = new Set();
  const before = ui.shown;
  const changed = before.large !== shown.large || !sameList(before.strip, shown.strip)
    || !sameList(before.grid, shown.grid) || before.pages !== shown.pages;
  ui.shown = shown;
  if (changed) {
    const large = shown.large ? [shown.large] : [];
    const wanted = new Set([...large, ...shown.strip, ...shown.grid]);
    place($('large'), large, wanted, created);
    place($('strip'), shown.strip, wanted, created);
    place($('grid'), shown.grid, wanted, created);
    for (const [id, fig] of ui.tiles) {
      if (!wanted.has(id)) {
        releaseTile(fig);
        ui.tiles.delete(id);
      }
    }
    // The pinned badge moves with the pin.
    if (before.large !== shown.large) {
      if (before.large) d.tiles.add(before.large);
      if (shown.large) d.tiles.add(shown.large);
    }
  }
  const speaker = ui.view === 'speaker';
  $('meeting').classList.toggle('speaker-view', speaker);
  $('meeting').classList.toggle('grid-view', !speaker);
  $('large').hidden = !speaker;
  $('strip').hidden = !speaker;
  $('grid').hidden = speaker;
  $('pager').hidden = speaker;
  $('alone').hidden = m.participants.size > 0;
  setText($('page-label'), `Page ${ui.page + 1} of ${shown.pages}`);
  $('page-prev').disabled = ui.page <= 0;
  $('page-next').disabled = ui.page >= shown.pages - 1;
  return { created, changed };
}

// ---- meeting: sizes and the layout report ----------------------------------------------

/** The width of the largest 16:9 tile of which `n` fit into width x height. */
function fitTiles(width, height, n, gap) {
  let best = 0;
  for (let cols = 1; cols <= Math.max(1, n); cols++) {
    const rows = Math.ceil(n / cols);
    const w = Math.min((width - gap * (cols - 1)) / cols, ((height - gap * (rows - 1)) / rows) * TILE_RATIO);
    best = Math.max(best, w);
  }
  return best;
}

/** The stage's size, read at the start of a frame while the layout is still clean. */
function measureStage() {
  const stage = $('stage');
  return { width: stage.clientWidth, height: stage.clientHeight };
}

function setVar(el, name, value) {
  if (el.style.getPropertyValue(name) !== value) el.style.setProperty(name, value);
}

/** Sizes the large tile and the grid's tiles to the stage. */
function sizeTiles({ width, height }) {
  ui.largeWidth = Math.max(64, Math.floor(fitTiles(width, height, 1, 0)));
  setVar($('large'), '--large-w', `${ui.largeWidth}px`);
  const grid = $('grid');
  if (ui.gridGap === null) ui.gridGap = parseFloat(getComputedStyle(grid).columnGap) || 0;
  const best = fitTiles(width, height, ui.shown.grid.length, ui.gridGap);
  // Below a recognisable size, let the page scroll instead.
  setVar(grid, '--tile-w', `${Math.max(120, Math.floor(best))}px`);
}

/** Whose cameras the layout asks for: the tiles on screen, at most one per video slot. */
function layoutIds(m) {
  const ids = ui.view === 'speaker' ? [ui.shown.large, ...ui.shown.strip] : ui.shown.grid;
  const max = m.limits?.video_slots ?? ids.length;
  return new Set(ids.slice(0, max).filter(Boolean));
}

/**
 * Tells the server what is shown: the tiles of other people, most important first, with
 * their height in device pixels, which picks the layer the server sends. In speaker view
 * an unpinned large tile is `null`: the server follows the speaker itself, without waiting
 * for us. At most one message per frame; the Meeting drops repeats.
 */
function reportLayout(m, remeasure) {
  // Before the meeting view shows (the answer comes in while the pre-join view is still
  // up), tiles have no size worth reporting; showing it renders again.
  if ($('meeting').hidden) return;
  const dpr = window.devicePixelRatio || 1;
  const px = (cssHeight) => Math.max(1, Math.round(cssHeight * dpr));
  // All tiles of one container have the same height. Reading one forces a layout pass, so
  // read it only when sizes may have changed; a new face in the strip has the same size.
  if (remeasure) ui.heights = {};
  const heightIn = (group, id) => {
    if (ui.heights[group] === undefined) {
      const fig = id ? ui.tiles.get(id) : null;
      if (!fig) return null;
      ui.heights[group] = fig.clientHeight;
    }
    return ui.heights[group];
  };
  const tiles = [];
  if (ui.view === 'speaker') {
    // Kept while alone too: whoever joins first goes straight into the large tile.
    const large = heightIn('large', ui.shown.large) ?? ui.largeWidth / TILE_RATIO;
    tiles.push({ participant: ui.pinned, height: px(large) });
    for (const id of ui.shown.strip) tiles.push({ participant: id, height: px(heightIn('strip', id)) });
  } else {
    for (const id of ui.shown.grid) tiles.push({ participant: id, height: px(heightIn('grid', id)) });
  }
  const max = m.limits?.video_slots ?? tiles.length;
  m.setLayout({ view: ui.view, page: ui.page, tiles: tiles.slice(0, max) });
}

// ---- meeting: the participant list ---------------------------------------------------

function createRow(id, self) {
  const li = document.createElement('li');
  li.className = 'person';
  li.dataset.person = id;
  const name = document.createElement('span');
  name.className = 'person-name';
  const state = document.createElement('span');
  state.className = 'state';
  li.append(name, state);
  if (!self) {
    const pin = document.createElement('button');
    pin.type = 'button';
    pin.className = 'pin';
    li.append(pin);
  }
  return li;
}

function fillRow(m, li, id) {
  const self = id === m.participantId;
  const p = self ? { name: m.name, media: m.media } : m.participants.get(id);
  setText(li.querySelector('.person-name'), self ? `${p.name} (you)` : p.name);
  const state = [];
  if (!p.media.audio) state.push('Muted');
  if (!p.media.video) state.push('Camera off');
  if (p.media.screen) state.push('Sharing');
  setText(li.querySelector('.state'), state.join(' · '));
  li.dataset.muted = String(!p.media.audio);
  li.dataset.cameraOff = String(!p.media.video);
  li.classList.toggle('speaking', m.speaking.has(id));
  const pin = li.querySelector('.pin');
  if (pin) {
    const pinned = ui.pinned === id;
    setText(pin, pinned ? 'Unpin' : 'Pin');
    pin.setAttribute('aria-pressed', String(pinned));
    const label = pinned ? `Unpin ${p.name}` : `Pin ${p.name} to the large tile`;
    if (pin.getAttribute('aria-label') !== label) pin.setAttribute('aria-label', label);
  }
}

/** Updates the rows marked dirty, keyed by id: a join, a leave or a mute touches one row
 *  of 250. The list is only kept current while open. */
function renderPeople(m, d) {
  if (!ui.peopleOpen) return;
  const list = $('people-list');
  const me = m.participantId;
  if (d.allRows) {
    const ids = [me, ...m.participants.keys()];
    const keep = new Set(ids);
    for (const [id, li] of ui.rows) {
      if (!keep.has(id)) {
        li.remove();
        ui.rows.delete(id);
      }
    }
    let prev = null;
    for (const id of ids) {
      let li = ui.rows.get(id);
      if (!li) {
        li = createRow(id, id === me);
        ui.rows.set(id, li);
      }
      const want = prev ? prev.nextElementSibling : list.firstElementChild;
      if (want !== li) list.insertBefore(li, want);
      fillRow(m, li, id);
      prev = li;
    }
    return;
  }
  for (const id of new Set([...d.rows, ...d.speaking])) {
    const present = id === me || m.participants.has(id);
    let li = ui.rows.get(id);
    if (!present) {
      li?.remove();
      ui.rows.delete(id);
      continue;
    }
    if (!li) {
      // Someone new: the list is in order of joining, so they go last.
      li = createRow(id, id === me);
      ui.rows.set(id, li);
      list.append(li);
    }
    fillRow(m, li, id);
  }
}

// ---- meeting: the rest of the page ---------------------------------------------------

function screenTiles(m) {
  const tiles = [];
  if (m.screenTrack) {
    tiles.push({
      id: m.participantId,
      name: m.name,
      label: 'Your screen (others see this)',
      stream: m.screenStream,
      note: '',
      muted: false,
      speaking: false,
      active: false,
    });
  }
  for (const [mid, s] of m.slots) {
    if (s.source !== 'screen') continue;
    const p = m.participants.get(s.participant);
    if (!p || !p.media.screen) continue;
    tiles.push({
      id: p.id,
      name: p.name,
      label: `${p.name}'s screen`,
      stream: s.paused ? null : m.receivers.get(mid)?.stream ?? null,
      note: s.paused ? VIDEO_PAUSED : '',
      muted: false,
      speaking: false,
      active: false,
    });
  }
  return tiles;
}

/** Makes #screens hold exactly the screen tiles of `wanted`, in order, reusing elements.
 *  Returns whether a tile came or went. */
function syncScreens(wanted) {
  const container = $('screens');
  const existing = new Map();
  for (const el of container.children) existing.set(el.dataset.participant, el);
  let changed = false;
  let prev = null;
  for (const w of wanted) {
    let el = existing.get(w.id);
    existing.delete(w.id);
    if (!el) {
      el = createTile(w.id, 'screen');
      changed = true;
    }
    updateTile(el, w);
    const want = prev ? prev.nextElementSibling : container.firstElementChild;
    if (want !== el) container.insertBefore(el, want);
    prev = el;
  }
  for (const el of existing.values()) {
    releaseTile(el);
    changed = true;
  }
  return changed;
}

/** One <audio> per audio receive slot, bound once for the whole session. */
function ensureAudioSinks(m) {
  const box = $('audio-sinks');
  if (box.children.length) return;
  for (const r of m.receivers.values()) {
    if (r.kind !== 'audio') continue;
    const audio = document.createElement('audio');
    audio.autoplay = true;
    audio.dataset.mid = r.mid;
    audio.srcObject = r.stream;
    box.append(audio);
    playAudio(audio);
  }
}

/** Starts playback; if the browser blocks sound until the user clicks, offers a button. */
function playAudio(audio) {
  audio.play().catch((e) => {
    if (e.name === 'NotAllowedError') $('enable-audio').hidden = false;
  });
}

function renderControls(m) {
  const mute = $('mute');
  mute.disabled = !m.micTrack;
  setText(mute, m.micTrack ? (m.micEnabled ? 'Mute' : 'Unmute') : 'No microphone');
  setText($('camera'), m.cameraTrack ? 'Camera off' : 'Camera on');
  const share = $('share');
  share.disabled = !navigator.mediaDevices?.getDisplayMedia;
  setText(share, m.screenTrack ? 'Stop sharing' : 'Share screen');
  setText($('view'), ui.view === 'speaker' ? 'Grid view' : 'Speaker view');
  $('people-toggle').setAttribute('aria-expanded', String(ui.peopleOpen));
  setText($('people-toggle'), ui.peopleOpen ? 'Hide people' : 'People');
}

function renderStatus(m) {
  document.title = `${room} · ting`;
  setStatus(m.state === 'connected' ? 'Connected' : 'Connecting media…');
  const n = m.participants.size + (m.participantId ? 1 : 0);
  const max = Number(m.limits?.max_participants) || 0;
  const count = $('count');
  // Servers that do not say how many fit give 0: then the number alone.
  setText(count, max ? `${n} / ${max}` : `${n}`);
  const label = max ? `${n} of ${max} places taken` : `${n} in this meeting`;
  if (count.title !== label) count.title = label;
  count.hidden = !m.participantId;
  setText($('people-title'), `People (${n})`);
}

/** Applies everything marked stale since the last frame. */
function renderFrame() {
  ui.frame = 0;
  const m = meeting;
  if (!m || m.state === 'closed') return;
  const d = ui.dirty;
  ui.dirty = freshDirty();
  ui.renders++;
  const started = performance.now();
  try {
    renderDirty(m, d);
  } finally {
    const took = performance.now() - started;
    ui.renderMs += took;
    ui.renderMaxMs = Math.max(ui.renderMaxMs, took);
  }
}

function renderDirty(m, d) {
  // Reads first, writes after, and the one read that needs the new layout (the tiles'
  // heights for the server) last: at most one layout pass per frame, and none at all when
  // only who is shown changed, not how large.
  const next = d.arrangement ? arrange(m) : null;
  // The tiles' size follows the stage (the window, the panel) and the grid's count.
  const resize = d.sizes || Boolean(next && next.grid.length !== ui.shown.grid.length);
  const stage = resize ? measureStage() : null;

  if (d.audio) ensureAudioSinks(m);
  if (d.controls) renderControls(m);
  if (d.status) renderStatus(m);

  let layoutStale = resize;
  let remeasure = resize;
  let created = new Set();
  if (next) {
    const r = applyArrangement(m, next, d);
    created = r.created;
    if (r.changed) {
      layoutStale = true;
      ui.inLayout = layoutIds(m);
    }
  }
  if (d.screens) {
    const screens = screenTiles(m);
    // A share starting or ending resizes the stage: the ResizeObserver sizes the tiles in
    // the next frame; their heights are measured again now and then.
    if (syncScreens(screens)) layoutStale = remeasure = true;
    $('meeting').classList.toggle('has-screen', screens.length > 0);
  }
  if (resize) sizeTiles(stage);

  if (d.allTiles) {
    for (const id of ui.tiles.keys()) fillPersonTile(m, id);
  } else {
    for (const id of new Set([...d.tiles, ...created])) fillPersonTile(m, id);
  }
  if (d.self || d.allTiles || d.speaking.has(m.participantId) || d.activeSpeaker) fillSelfTile(m);

  // Speaking and the active speaker touch only the tiles whose state changed.
  const highlight = (id) => {
    const fig = id === m.participantId ? ui.selfTile : ui.tiles.get(id);
    if (!fig || (id !== m.participantId && !m.participants.has(id))) return;
    if (id === m.participantId) {
      fillSelfTile(m);
    } else {
      const s = personTileState(m, id);
      setHighlights(fig, s.label, s.muted, s.speaking, s.active);
    }
  };
  if (!d.allTiles) for (const id of d.speaking) highlight(id);
  if (d.activeSpeaker && ui.highlighted !== m.activeSpeaker) {
    const before = ui.highlighted;
    ui.highlighted = m.activeSpeaker;
    if (!d.allTiles) {
      if (before) highlight(before);
      if (m.activeSpeaker) highlight(m.activeSpeaker);
    }
  }

  renderPeople(m, d);

  if (layoutStale) reportLayout(m, remeasure);
}

// ---- meeting: what the person does -----------------------------------------------------

/** Pins `id` to the large tile of the speaker view, or unpins them if they were. */
function togglePin(id) {
  const m = meeting;
  if (!m || !ui || !m.participants.has(id)) return;
  const before = ui.pinned;
  ui.pinned = before === id ? null : id;
  // Pinning is for the speaker view; from the grid, pinning someone is asking to see them.
  if (ui.pinned) ui.view = 'speaker';
  const d = ui.dirty;
  for (const x of [before, ui.pinned]) {
    if (x) {
      d.tiles.add(x);
      d.rows.add(x);
    }
  }
  d.arrangement = d.controls = d.sizes = true;
  scheduleRender();
}

function setView(view) {
  if (!ui || ui.view === view) return;
  ui.view = view;
  ui.dirty.arrangement = ui.dirty.controls = ui.dirty.sizes = true;
  scheduleRender();
}

function setPage(page) {
  if (!ui) return;
  ui.page = page;
  ui.dirty.arrangement = true;
  scheduleRender();
}

/** Runs a control action with its button disabled, showing what went wrong if it fails. */
async function withButton(id, action) {
  const button = $(id);
  button.disabled = true;
  try {
    await action();
  } catch (e) {
    // Cancelling the browser's screen picker is a choice, not an error.
    if (!(id === 'share' && e.name === 'NotAllowedError')) {
      const what = id === 'share' ? 'Screen sharing failed' : 'The camera could not be turned on';
      showError(id === 'share' ? 'screen_share' : 'camera', `${what} (${e.name ?? 'Error'}: ${e.message}).`);
    }
  } finally {
    button.disabled = false;
    if (ui) {
      ui.dirty.controls = true;
      scheduleRender();
    }
  }
}

function wireControls() {
  $('mute').addEventListener('click', () => meeting?.setMicEnabled(!meeting.micEnabled));
  $('camera').addEventListener('click', () => {
    const m = meeting;
    if (m) withButton('camera', () => m.setCameraEnabled(!m.cameraTrack));
  });
  $('share').addEventListener('click', () => {
    const m = meeting;
    if (!m) return;
    // getDisplayMedia must run inside the click (user activation), so nothing is awaited
    // before it.
    withButton('share', () => (m.screenTrack ? m.stopScreenShare() : m.startScreenShare()));
  });
  $('view').addEventListener('click', () => setView(ui?.view === 'speaker' ? 'grid' : 'speaker'));
  $('page-prev').addEventListener('click', () => setPage((ui?.page ?? 0) - 1));
  $('page-next').addEventListener('click', () => setPage((ui?.page ?? 0) + 1));
  $('people-toggle').addEventListener('click', () => {
    if (!ui) return;
    ui.peopleOpen = !ui.peopleOpen;
    $('people').hidden = !ui.peopleOpen;
    // Rows were not kept current while closed.
    ui.dirty.allRows = ui.peopleOpen;
    ui.dirty.controls = ui.dirty.sizes = true;
    scheduleRender();
  });
  // One listener for every pin button of the list, however long it gets.
  $('people-list').addEventListener('click', (e) => {
    const button = e.target.closest('button.pin');
    const row = button?.closest('.person');
    if (row) togglePin(row.dataset.person);
  });
  $('leave').addEventListener('click', () => meeting?.leave());
  // A resized window (or panel) changes tile sizes, and so the layers worth receiving.
  new ResizeObserver(() => {
    if (!ui) return;
    ui.dirty.sizes = true;
    scheduleRender();
  }).observe($('stage'));
  $('enable-audio').addEventListener('click', () => {
    $('enable-audio').hidden = true;
    for (const a of $('audio-sinks').children) playAudio(a);
  });
  // Closing the tab closes the socket, which the server takes as leaving; saying so is
  // quicker and clearer.
  window.addEventListener('pagehide', () => meeting?.leave());
}

// ---- start ----------------------------------------------------------------------------

/** A read-only handle for tests and debugging, e.g. `ting.pc.getStats()` in the console. */
function exposeDebugHandle() {
  const handle = {
    get pc() { return meeting?.pc ?? null; },
    get participantId() { return meeting?.participantId ?? null; },
    get state() { return meeting?.state ?? 'idle'; },
    /** mid -> {participant, source}, from the latest `slots` message. */
    get slots() {
      return meeting ? Object.fromEntries([...meeting.slots].map(([mid, s]) => [mid, { ...s }])) : {};
    },
    /** The receive slots: [{mid, kind: 'audio'|'video'|'screen'}]. */
    get receivers() {
      return meeting ? [...meeting.receivers.values()].map((r) => ({ mid: r.mid, kind: r.kind })) : [];
    },
    /** `speaker` or `grid`, the grid page (from 0) and how many there are. */
    get view() { return ui?.view ?? null; },
    get page() { return ui?.page ?? 0; },
    get pages() { return ui?.shown.pages ?? 1; },
    /** Whom the large tile is pinned to, or null (it follows the active speaker). */
    get pinned() { return ui?.pinned ?? null; },
    /** Who is on screen: {large, strip: [...], grid: [...]}, participant ids. */
    get shown() {
      return ui ? { large: ui.shown.large, strip: [...ui.shown.strip], grid: [...ui.shown.grid] } : null;
    },
    /** The last `layout` sent ({view, page, tiles}) and how many were sent. */
    get layout() { return meeting?.layout ? structuredClone(meeting.layout) : null; },
    get layoutsSent() { return meeting?.layoutsSent ?? 0; },
    /** Per source, what `send_layers` asked for and what the sender was set to, e.g.
     *  {camera: {wanted: [false, true, true], applied: [false, true, true]}}. */
    get sendLayers() {
      if (!meeting) return null;
      const out = {};
      for (const source of ['camera', 'screen']) {
        out[source] = {
          wanted: meeting.sendLayers[source] ? [...meeting.sendLayers[source]] : null,
          applied: meeting.layersApplied[source] ? [...meeting.layersApplied[source]] : null,
        };
      }
      return out;
    },
    get activeSpeaker() { return meeting?.activeSpeaker ?? null; },
    get speaking() { return meeting ? [...meeting.speaking] : []; },
    /** Everyone in the meeting, this page included, and how many the room holds (0 when
     *  the server does not say). */
    get participantCount() { return meeting ? meeting.participants.size + 1 : 0; },
    get maxParticipants() { return Number(meeting?.limits?.max_participants) || 0; },
    /** Frames rendered so far: rendering is coalesced, so this grows by at most one per
     *  animation frame however many messages arrive. */
    get renders() { return ui?.renders ?? 0; },
    /** Milliseconds spent rendering: {total, max} (one frame at most). */
    get renderTime() { return { total: ui?.renderMs ?? 0, max: ui?.renderMaxMs ?? 0 }; },
    /** The sentence shown for a server error code (with the server's own message). */
    explain,
  };
  Object.defineProperty(window, 'ting', { value: Object.freeze(handle), enumerable: true });
}

function main() {
  exposeDebugHandle();
  const match = location.pathname.match(/^\/m\/([^/]+)\/?$/);
  let name = null;
  if (match) {
    try {
      name = decodeURIComponent(match[1]);
    } catch {
      name = null;
    }
  }
  if (!match) {
    showLanding();
    return;
  }
  if (!name || !ROOM_NAME.test(name)) {
    showLanding();
    showError('bad_room', 'This meeting link is not valid: a room name is 1 to 64 letters, digits, - or _.');
    return;
  }
  room = name;
  document.title = `${room} · ting`;
  $('room-label').textContent = room;
  $('prejoin-room').textContent = room;
  try {
    $('name').value = localStorage.getItem(NAME_KEY) ?? '';
  } catch {
    // see onJoin
  }
  $('join-form').addEventListener('submit', onJoin);
  wireControls();
  showPrejoin();
}

main();
