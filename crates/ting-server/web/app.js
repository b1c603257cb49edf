// The page: landing (/), pre-join and meeting views (/m/<room>).
//
// All signalling and WebRTC lives in meeting.js; this file turns a Meeting's state into DOM
// and the user's clicks into calls on it. Rendering is idempotent: every change re-runs
// render(), which updates the existing elements in place (a <video> keeps its srcObject
// unless the stream to show changed, so nothing flickers).
//
// No innerHTML anywhere: names come from other people and are only ever set as text.

import { CAMERA_CONSTRAINTS, Meeting, MeetingError, ROOM_NAME } from '/meeting.js';

const $ = (id) => document.getElementById(id);
const NAME_KEY = 'ting.name';

/** The room of this page, from /m/<room>; null on the landing page. */
let room = null;
/** Camera and microphone for the pre-join preview; handed to the Meeting on Join. */
let preview = null;
let previewPending = null;
/** The session while in a meeting. */
let meeting = null;

// ---- errors and status ----------------------------------------------------------------

/** Shows an error until dismissed. `code` is the server's error code (or one of ours). */
function showError(code, message) {
  const box = $('errors');
  const item = document.createElement('div');
  item.className = 'error';
  item.dataset.code = code;
  const text = document.createElement('p');
  const c = document.createElement('code');
  c.textContent = code;
  text.append(c, ' ', message);
  const close = document.createElement('button');
  close.type = 'button';
  close.className = 'dismiss';
  close.textContent = 'Dismiss';
  close.setAttribute('aria-label', `Dismiss error ${code}`);
  close.addEventListener('click', () => item.remove());
  item.append(text, close);
  box.append(item);
  // A flood of errors should not bury the page.
  while (box.children.length > 4) box.firstElementChild.remove();
}

function showMeetingError(err) {
  if (err instanceof MeetingError) showError(err.code, err.message);
  else showError('client', String(err?.message ?? err));
}

function setStatus(text) {
  $('status').textContent = text;
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
  m.addEventListener('change', render);
  m.addEventListener('error', (ev) => showMeetingError(ev.detail));
  try {
    await m.join();
  } catch (err) {
    if (meeting === m) meeting = null;
    clearMeetingView();
    showMeetingError(err);
    showPrejoin();
    return;
  }
  m.addEventListener('ended', (ev) => {
    const reason = ev.detail.reason;
    if (reason instanceof MeetingError) showMeetingError(reason);
    exitMeeting(m);
  });
  showView('meeting');
  render();
}

// ---- meeting --------------------------------------------------------------------------

/** Empties the meeting view, which render() may have filled even if joining failed. */
function clearMeetingView() {
  for (const id of ['tiles', 'screens', 'audio-sinks']) {
    for (const media of $(id).querySelectorAll('video, audio')) media.srcObject = null;
    $(id).replaceChildren();
  }
  $('enable-audio').hidden = true;
  $('meeting').classList.remove('has-screen');
}

function exitMeeting(m) {
  if (meeting !== m) return;
  meeting = null;
  clearMeetingView();
  showPrejoin();
}

function initials(name) {
  const parts = name.trim().split(/\s+/).filter(Boolean);
  const first = parts[0]?.[0] ?? '?';
  const last = parts.length > 1 ? parts[parts.length - 1][0] : '';
  return (first + last).toUpperCase();
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
  const muted = document.createElement('span');
  muted.className = 'badge muted-badge';
  muted.textContent = 'Muted';
  muted.hidden = true;
  caption.append(name, muted);
  fig.append(video, placeholder, caption);
  return fig;
}

/**
 * Updates a tile in place.
 * @param {HTMLElement} fig
 * @param {{name: string, stream: MediaStream|null, showVideo: boolean, note: string,
 *          muted: boolean, speaking: boolean, mirror?: boolean, label: string}} s
 */
function updateTile(fig, s) {
  const video = fig.querySelector('video');
  const stream = s.showVideo ? s.stream : null;
  if (video.srcObject !== stream) video.srcObject = stream;
  video.hidden = !stream;
  video.classList.toggle('mirror', Boolean(s.mirror));
  const placeholder = fig.querySelector('.placeholder');
  placeholder.hidden = Boolean(stream);
  fig.querySelector('.avatar').textContent = initials(s.name);
  fig.querySelector('.placeholder-note').textContent = s.note;
  fig.querySelector('.name').textContent = s.label;
  fig.querySelector('.muted-badge').hidden = !s.muted;
  fig.dataset.muted = String(s.muted);
  fig.dataset.cameraOff = String(!s.showVideo);
  fig.classList.toggle('speaking', s.speaking);
  const state = [s.muted && 'muted', s.speaking && 'speaking'].filter(Boolean).join(', ');
  fig.setAttribute('aria-label', state ? `${s.label} (${state})` : s.label);
}

/** Makes `container` hold exactly the tiles of `wanted`, in order, reusing elements. */
function syncTiles(container, wanted, source) {
  const existing = new Map();
  for (const el of container.children) existing.set(el.dataset.participant, el);
  let prev = null;
  for (const w of wanted) {
    let el = existing.get(w.id);
    existing.delete(w.id);
    if (!el) el = createTile(w.id, source);
    updateTile(el, w);
    // Move only when out of place: moving a playing <video> can pause it in some browsers.
    const want = prev ? prev.nextElementSibling : container.firstElementChild;
    if (want !== el) container.insertBefore(el, want);
    prev = el;
  }
  for (const el of existing.values()) {
    const v = el.querySelector('video');
    if (v) v.srcObject = null;
    el.remove();
  }
}

function cameraTiles(m) {
  const me = m.media;
  const tiles = [{
    id: m.participantId,
    name: m.name,
    label: `${m.name} (you)`,
    stream: m.cameraStream,
    showVideo: me.video,
    note: 'Camera off',
    muted: !me.audio,
    speaking: m.speaking.has(m.participantId),
    mirror: true,
  }];
  for (const p of m.participants.values()) {
    const slot = m.receiverFor(p.id, 'camera');
    tiles.push({
      id: p.id,
      name: p.name,
      label: p.name,
      stream: slot?.stream ?? null,
      // The slot may still hold the camera's last frame after it was turned off.
      showVideo: Boolean(p.media.video && slot),
      note: p.media.video ? 'No video slot free' : 'Camera off',
      muted: !p.media.audio,
      speaking: m.speaking.has(p.id),
    });
  }
  return tiles;
}

function screenTiles(m) {
  const tiles = [];
  if (m.screenTrack) {
    tiles.push({
      id: m.participantId,
      name: m.name,
      label: 'Your screen (others see this)',
      stream: m.screenStream,
      showVideo: true,
      note: '',
      muted: false,
      speaking: false,
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
      stream: m.receivers.get(mid)?.stream ?? null,
      showVideo: true,
      note: '',
      muted: false,
      speaking: false,
    });
  }
  return tiles;
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
  mute.textContent = m.micTrack ? (m.micEnabled ? 'Mute' : 'Unmute') : 'No microphone';
  const camera = $('camera');
  camera.textContent = m.cameraTrack ? 'Camera off' : 'Camera on';
  const share = $('share');
  share.disabled = !navigator.mediaDevices?.getDisplayMedia;
  share.textContent = m.screenTrack ? 'Stop sharing' : 'Share screen';
}

function render() {
  const m = meeting;
  if (!m || m.state === 'closed') return;
  document.title = `${room} · ting`;
  ensureAudioSinks(m);
  renderControls(m);
  syncTiles($('tiles'), cameraTiles(m), 'camera');
  const screens = screenTiles(m);
  syncTiles($('screens'), screens, 'screen');
  $('meeting').classList.toggle('has-screen', screens.length > 0);
  layoutTiles();
  const others = m.participants.size;
  const people = others === 0 ? 'only you here' : `${others + 1} people`;
  setStatus(m.state === 'connected' ? `Connected · ${people}` : `Connecting media… · ${people}`);
}

/** Sizes the camera tiles so that all of them fit the gallery, as large as they can be. */
function layoutTiles() {
  const box = $('tiles');
  const n = box.children.length;
  if (!n || $('meeting').classList.contains('has-screen')) return;
  const gap = parseFloat(getComputedStyle(box).columnGap) || 0;
  const width = box.clientWidth;
  const height = box.clientHeight;
  let best = 0;
  for (let cols = 1; cols <= n; cols++) {
    const rows = Math.ceil(n / cols);
    const w = Math.min((width - gap * (cols - 1)) / cols, ((height - gap * (rows - 1)) / rows) * (4 / 3));
    best = Math.max(best, w);
  }
  // Below a readable size, let the gallery scroll instead.
  box.style.setProperty('--tile-w', `${Math.max(160, Math.floor(best))}px`);
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
      showError(id === 'share' ? 'screen_share' : 'camera', `${e.name ?? 'Error'}: ${e.message}`);
    }
  } finally {
    button.disabled = false;
    render();
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
  $('leave').addEventListener('click', () => meeting?.leave());
  new ResizeObserver(() => layoutTiles()).observe($('tiles'));
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
