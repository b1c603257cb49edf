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
// No innerHTML anywhere: names and chat come from other people and are only ever set as
// text.
//
// What tests (and anyone scripting the page) can rely on:
//   views        #landing, #prejoin, #lobby-screen (waiting to be let in), #meeting, #ended
//                (removed, turned away, meeting over; #ended-message says which and
//                #ended[data-code] holds the code)
//   refusals     #errors .error[data-code] p: one sentence per server error code;
//                window.ting.explain(code) gives the sentence. #notices .notice: things
//                done to us (a moderator muted us, our role changed).
//   passcode     #passcode-form, #passcode, #passcode-submit, #passcode-cancel
//   lobby        #lobby-leave on the lobby screen; for those who may admit: #lobby-toggle
//                with #lobby-count, #lobby-panel, rows li[data-waiter="<id>"] with buttons
//                [data-admit="<id>"] and [data-deny="<id>"], #admit-all, #deny-all
//   people       #people-toggle ([data-testid="participants-toggle"]), #people
//                ([data-testid="participants-panel"]), rows .person[data-person="<id>"]
//                [data-participant="<id>"] with data-role and data-hand (place in the
//                queue, or empty), .person-name, .person-role, .state, .person-hand; for
//                people we may moderate a menu: button.person-menu opens .action-list
//                with buttons [data-action=mute-microphone|mute-camera|mute-screen|
//                lower-hand|allow-screen|revoke-screen|make-moderator|make-participant|
//                remove]; #hands-queue li[data-hand="<id>"] in order
//   hands        #hand-toggle (aria-pressed); tiles show .hand-badge and data-hand
//   chat         #chat-toggle with #chat-unread, #chat-panel, #chat-log .chat-message
//                (.chat-from, .chat-to, .chat-time, .chat-text; data-from, data-private),
//                #chat-to (value "" is everyone, else a participant id), #chat-input,
//                #chat-send
//   moderation   #lock-toggle (aria-pressed), #locked-indicator, #end-meeting,
//                #confirm-dialog with #confirm-yes and #confirm-no (removing, ending)
//   invite       #invite-button, #invite-dialog: #invite-role, #invite-lobby,
//                #invite-expiry, #invite-create, #invite-link, #invite-copy, #invite-close
//   reconnecting #reconnecting-banner while our connection is being resumed (#status says
//                "Reconnecting…"); others' tiles and rows carry data-reconnecting="true"
//                and show .reconnecting-badge / "Reconnecting…" while theirs is
//   connection   every tile and row carries data-connection="connected|poor|reconnecting"
//                as the server measures that person's network; a poor one shows
//                .poor-badge / "Weak connection" (our own tile too, for our network)
//   e2ee         a link with #key=<43 characters> joins end-to-end encrypted (a malformed key
//                is refused with #errors .error[data-code="e2ee_key"]); #prejoin-e2ee says so
//                before joining; in the meeting #e2ee-badge and #e2ee-code (the verification
//                code, two groups of four digits) show; tiles and rows carry
//                data-e2ee="ok|none|invalid|failing|encrypted" (none: not encrypting;
//                invalid: another meeting key; failing: frames do not decrypt), the tile's
//                .placeholder-note says "Can't decrypt <name>" or "Not encrypted" and
//                .placeholder-detail how many frames failed; on the landing page #new-e2ee
//                makes a link (#e2ee-link, #e2ee-copy, #e2ee-open)
//   window.ting  a read-only debug handle (exposeDebugHandle, at the end), with one test
//                hook: dropSignalling()
//   window.tingE2ee  the same for end-to-end encryption: enabled, own KIDs, the KIDs held
//                per participant, decryption counts per participant and source, the code,
//                and test hooks recordSamples(n) (plaintext bytes 10..42 of camera frames)
//                and resetGaps()

import {
  CAMERA_CONSTRAINTS, CHAT_KEEP, FINAL_ERRORS, Meeting, MeetingError, ROOM_NAME, storedSession,
} from '/meeting.js';
import { generateLinkKey, linkFragment, parseLinkKey } from '/e2ee.js';

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
/** What a tile, a row and the status say while a connection is being resumed. */
const RECONNECTING = 'Reconnecting…';
/** What a tile and the participant list say of someone whose network struggles. */
const WEAK_CONNECTION = 'Weak connection';

/** How long a notice stays up, in milliseconds. */
const NOTICE_MS = 15000;
/** What a role is called on the page. */
const ROLE_LABEL = { host: 'Host', moderator: 'Moderator', participant: 'Participant', guest: 'Guest' };
/** Why a source cannot be turned on, for the button's title. */
const BLOCKED_TITLE = {
  microphone: {
    not_allowed: 'Your role in this meeting does not let you speak. A moderator can change that.',
    moderated: 'A moderator muted your microphone. Raise your hand to ask to speak.',
  },
  camera: {
    not_allowed: 'Your role in this meeting does not let you show your camera. A moderator can change that.',
    moderated: 'A moderator turned off your camera. Raise your hand to ask to turn it on.',
  },
  screen: {
    not_allowed: 'You are not allowed to share your screen in this meeting. A moderator can allow it.',
    moderated: 'A moderator stopped your screen share. Raise your hand to ask to share again.',
  },
};
/** What the person is told when a moderator turned one of their sources off. */
const MODERATED_NOTICE = {
  microphone: 'A moderator muted your microphone.',
  camera: 'A moderator turned off your camera.',
  screen: 'A moderator stopped your screen share.',
};

/** The room of this page, from /m/<room>; null on the landing page. */
let room = null;
/** The join token from the link (`?t=`), or null. */
let token = null;
/** The meeting key from the link (`#key=`): the meeting is end-to-end encrypted. Kept in this
 *  page only; a key that is there but malformed is `e2eeKeyError` and nobody joins. */
let e2eeKey = null;
let e2eeKeyError = null;
/** The passcode that let us in last, offered again on the next join from this page. */
let knownPasscode = null;
/** Resolves the passcode question the pending join is waiting on. */
let answerPasscode = null;
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
    case 'token_required':
      return 'This meeting is open only to people with an invitation link. Ask the host for yours.';
    case 'token_malformed':
      return 'This meeting link is damaged. Copy the whole link again, or ask for a new one.';
    case 'token_invalid':
      return 'This meeting link is not valid here. Ask for a new one.';
    case 'token_expired':
      return 'This meeting link has expired. Ask for a new one.';
    case 'token_wrong_room':
      return 'This meeting link is for another meeting. Open the link exactly as you were given it.';
    case 'passcode_required':
      return 'This meeting needs a passcode. Enter the one you were given.';
    case 'wrong_passcode':
      return 'That passcode is not right. Check it and enter it again.';
    case 'locked':
      return 'This meeting is locked. Ask the host to unlock it, then join again.';
    case 'denied':
      return 'The host did not let you in.';
    case 'removed':
      return 'You were removed from this meeting.';
    case 'meeting_ended':
      return 'The meeting has ended.';
    case 'outside_schedule':
      return 'This meeting is not open at this time. Check when it starts, and join again then.';
    case 'forbidden':
      return 'Your role in this meeting does not allow that.';
    case 'unknown_participant':
      return 'That person is no longer in the meeting.';
    case 'chat_too_long': {
      const max = Number(meeting?.limits?.max_chat_chars) || 0;
      return `That message is too long${max ? ` (at most ${max} characters)` : ''}. Shorten it and send it again.`;
    }
    case 'e2ee_required':
      return 'This meeting is end-to-end encrypted: open it with its full link, the one that contains #key=, exactly as you were given it. Ask the host if you do not have it.';
    case 'e2ee_key':
      return `The meeting key in this link is damaged${said ? ` (${String(said).replace(/\.$/, '')})` : ''}. Copy the whole link again, exactly as you were given it; this page does not join an encrypted meeting without its key.`;
    case 'e2ee_unsupported':
      return `${said || 'This browser cannot encrypt audio and video end to end.'} Open the link in a recent Chromium, Chrome, Edge, Firefox or Safari.`;
    case 'e2ee_worker':
    case 'e2ee':
      return said || 'End-to-end encryption stopped working in this page. Reload it to join again.';
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
    case 'connection_lost':
    case 'resume_failed':
      return 'Your connection was lost for too long; join again.';
    case 'resume_pending':
      return 'The server is still closing your previous connection. Trying again.';
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

/** Tells the person what was done to them: not an error, and gone after a while. */
function showNotice(message) {
  const box = $('notices');
  const item = document.createElement('div');
  item.className = 'notice';
  const text = document.createElement('p');
  text.textContent = message;
  const close = document.createElement('button');
  close.type = 'button';
  close.className = 'dismiss';
  close.textContent = 'Dismiss';
  close.setAttribute('aria-label', 'Dismiss this message');
  close.addEventListener('click', () => item.remove());
  item.append(text, close);
  box.append(item);
  while (box.children.length > 3) box.firstElementChild.remove();
  setTimeout(() => item.remove(), NOTICE_MS);
}

function setStatus(text) {
  if ($('status').textContent !== text) $('status').textContent = text;
}

function showView(id) {
  for (const v of ['landing', 'prejoin', 'lobby-screen', 'meeting', 'ended']) $(v).hidden = v !== id;
  document.body.classList.toggle('in-meeting', id === 'meeting');
}

/** The end of the road: removed, turned away at the lobby, or the meeting is over. Not
 *  the pre-join view, as joining again would be refused the same way. */
function showEnded(err) {
  showView('ended');
  setStatus('');
  document.title = `${room} · ting`;
  const ended = $('ended');
  ended.dataset.code = err.code;
  $('ended-message').textContent = explain(err.code, err.message);
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
  $('new-e2ee').addEventListener('click', () => {
    // The room typed, or a fresh one; a fresh key either way.
    const name = ROOM_NAME.test(input.value.trim()) ? input.value.trim() : randomRoomName();
    const url = new URL(`/m/${encodeURIComponent(name)}`, location.origin);
    url.hash = linkFragment(generateLinkKey());
    $('e2ee-link').value = url.href;
    $('e2ee-open').href = url.href;
    $('e2ee-link-box').hidden = false;
    $('e2ee-link').select();
  });
  $('e2ee-copy').addEventListener('click', () => copyField($('e2ee-link'), $('e2ee-copy')));
  input.focus();
  input.select();
}

// ---- pre-join -------------------------------------------------------------------------

function hasLiveTracks(stream) {
  return Boolean(stream?.getTracks().some((t) => t.readyState === 'live'));
}

/** Opens camera and microphone for the preview. Joining without either is allowed: the
 *  person can still see and hear the others. `withCamera: false` opens the microphone only
 *  (coming back after a reload with the camera off). */
function startPreview(withCamera = true) {
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
    const attempts = withCamera ? [
      { audio: true, video: CAMERA_CONSTRAINTS },
      { audio: true },
      { video: CAMERA_CONSTRAINTS },
    ] : [{ audio: true }];
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
  hidePasscodeForm();
  // A damaged key: no joining at all, rather than joining without encryption.
  $('join').disabled = Boolean(e2eeKeyError);
  $('join').textContent = 'Join';
  $('prejoin-e2ee').hidden = !e2eeKey;
  startPreview();
  $('name').focus();
}

/**
 * The claims of a join token, read only to show the name it gives (which the server uses
 * instead of the one typed). Not checked here: the server does that. Null if unreadable.
 */
function tokenClaims(jwt) {
  const part = jwt?.split('.')[1];
  if (!part) return null;
  try {
    const b64 = part.replace(/-/g, '+').replace(/_/g, '/').padEnd(Math.ceil(part.length / 4) * 4, '=');
    const bytes = Uint8Array.from(atob(b64), (c) => c.charCodeAt(0));
    const claims = JSON.parse(new TextDecoder().decode(bytes));
    return claims && typeof claims === 'object' ? claims : null;
  } catch {
    return null;
  }
}

/** The name a join token gives, if it gives one. */
function tokenName() {
  const name = tokenClaims(token)?.name;
  return typeof name === 'string' && name.trim() ? name.trim().slice(0, 64) : null;
}

// ---- passcode -------------------------------------------------------------------------

/** Asks for the room's passcode on the pre-join view; resolves with it, or null if the
 *  person cancels. The join waits meanwhile, its socket open. */
function askPasscode(code) {
  showView('prejoin');
  setStatus('');
  $('passcode-prompt').textContent = explain(code);
  $('join-form').hidden = true;
  $('passcode-form').hidden = false;
  const input = $('passcode');
  input.value = '';
  input.focus();
  return new Promise((resolve) => {
    answerPasscode = resolve;
  });
}

function hidePasscodeForm() {
  $('passcode-form').hidden = true;
  $('join-form').hidden = false;
  const answer = answerPasscode;
  answerPasscode = null;
  answer?.(null);
}

function onPasscode(e) {
  e.preventDefault();
  const value = $('passcode').value;
  if (!value || !answerPasscode) return;
  const answer = answerPasscode;
  answerPasscode = null;
  $('passcode-form').hidden = true;
  $('join-form').hidden = false;
  answer(value);
}

// ---- joining --------------------------------------------------------------------------

async function onJoin(e) {
  e.preventDefault();
  const typed = $('name').value.trim();
  if (!typed) return;
  if (e2eeKeyError) {
    showError('e2ee_key', explain('e2ee_key', e2eeKeyError.message));
    return;
  }
  try {
    localStorage.setItem(NAME_KEY, typed);
  } catch {
    // Storage can be off (private windows); remembering the name is only a convenience.
  }
  // Others see the name the invitation gives, whatever was typed: show ourselves the same.
  const name = tokenName() ?? typed;
  const button = $('join');
  button.disabled = true;
  button.textContent = 'Joining…';
  await startPreview();
  const stream = preview;
  preview = null;
  $('preview').srcObject = null;

  const m = new Meeting({ room, name, stream, token, passcode: knownPasscode, askPasscode, e2eeKey });
  await runSession(m, () => m.join());
}

/**
 * Makes `m` the page's meeting and runs `start` (joining, or resuming after a reload) to
 * the end: then the meeting view shows, or what went wrong does.
 */
async function runSession(m, start) {
  meeting = m;
  resetView();
  m.addEventListener('change', (ev) => onMeetingChange(m, ev.detail));
  m.addEventListener('error', (ev) => showMeetingError(ev.detail));
  m.addEventListener('moderated', (ev) => onModerated(m, ev.detail));
  m.addEventListener('role', (ev) => {
    if (m === meeting) showNotice(`You are now ${article(ev.detail.role)} ${roleLabel(ev.detail.role).toLowerCase()}.`);
  });
  try {
    await start();
  } catch (err) {
    if (meeting === m) meeting = null;
    clearMeetingView();
    if (err instanceof MeetingError && FINAL_ERRORS.has(err.code)) {
      showEnded(err);
    } else {
      showPrejoin();
      // Leaving the lobby or not giving a passcode is the person's own choice.
      if (!(err instanceof MeetingError && (err.code === 'left' || err.code === 'cancelled'))) showMeetingError(err);
    }
    return;
  }
  if (meeting !== m) return;
  knownPasscode = m.passcode;
  $('lobby-preview').srcObject = null;
  m.addEventListener('ended', (ev) => exitMeeting(m, ev.detail.reason));
  showView('meeting');
  invalidateAll();
}

/**
 * The page was reloaded in a meeting (this tab kept a session that may still be resumed):
 * back into it without the name form, with the camera and microphone that were on, while
 * the others still see our tile. If that fails, the pre-join view says why.
 */
async function resumeAfterReload(saved) {
  showView('meeting');
  setStatus(RECONNECTING);
  $('reconnecting-banner').hidden = false;
  // What was off stays off: the camera's light must not come on by itself, and a muted
  // microphone stays muted.
  await startPreview(saved.video);
  const stream = preview;
  preview = null;
  $('preview').srcObject = null;
  for (const t of stream?.getAudioTracks() ?? []) t.enabled = saved.audio;
  const name = $('name').value.trim();
  const m = new Meeting({ room, name, stream, token, resume: saved, e2eeKey });
  await runSession(m, () => m.resume());
}

/** In the lobby: the person waits until someone admits them, then the meeting opens. */
function showLobbyScreen(m) {
  showView('lobby-screen');
  setStatus('In the lobby');
  $('lobby-room').textContent = room;
  $('lobby-preview').srcObject = m.cameraStream;
  $('lobby-leave').focus();
}

function roleLabel(role) {
  return ROLE_LABEL[role] ?? ROLE_LABEL.participant;
}

function article(role) {
  return /^[aeiou]/i.test(roleLabel(role)) ? 'an' : 'a';
}

/** A moderator turned one of our sources off: the Meeting has switched it off already. */
function onModerated(m, { source }) {
  if (m !== meeting) return;
  const base = MODERATED_NOTICE[source];
  if (!base) return;
  const again = m.blocked(source) ? ' Only a moderator can let you turn it back on.' : '';
  showNotice(base + again);
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
    /** Which side panels are open. The participant list is kept current only while open. */
    peopleOpen: false,
    chatOpen: false,
    lobbyOpen: false,
    /** Chat messages already in #chat-log (by `seq`), and how many arrived unseen. */
    chatSeq: 0,
    unread: 0,
    /** Participant ids in the chat's recipient list. */
    recipients: new Set(),
    /** Waiting people already seen, to notice newcomers; whether the lobby list was opened
     *  for them (and so closes once nobody waits) rather than by the person. */
    waitersSeen: new Set(),
    lobbyAuto: false,
    /** Waiting id -> its row of the lobby list. */
    waiters: new Map(),
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
    /** The queue of raised hands in the participant list. */
    hands: false,
    /** The lobby list, the chat log, the chat's recipients and form, the lock indicator. */
    lobby: false,
    chat: false,
    recipients: false,
    room: false,
    /** The encryption badge and verification code. */
    e2ee: false,
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
      d.arrangement = d.status = d.e2ee = true;
      if (ids) {
        for (const id of ids) {
          d.tiles.add(id);
          d.rows.add(id);
        }
        // The recipients change when someone comes or goes, not when they mute.
        if (ids.some((id) => m.participants.has(id) !== ui.recipients.has(id))) d.recipients = true;
      } else {
        d.allTiles = d.allRows = d.recipients = true;
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
      // Our media connection: the status, and our tile (reconnecting while it is lost).
      d.status = d.self = true;
      if (m.participantId) d.rows.add(m.participantId);
      break;
    case 'connection':
      // Ours dropped or came back: the status, the banner, our tile, what we may send.
      d.status = d.self = d.controls = true;
      if (m.participantId) d.rows.add(m.participantId);
      break;
    case 'reconnecting':
      // Someone's connection state (ours too: the server's view of our network).
      for (const id of ids ?? []) {
        if (id === m.participantId) d.self = true;
        else d.tiles.add(id);
        d.rows.add(id);
      }
      break;
    case 'receivers':
      // A new media connection (after a resume) has new tracks in every slot.
      d.audio = d.allTiles = d.screens = true;
      break;
    case 'waiting':
      showLobbyScreen(m);
      return;
    case 'permissions':
      // What we may do changes buttons everywhere, and whom we may moderate.
      d.controls = d.allRows = d.lobby = d.chat = d.room = d.self = true;
      break;
    case 'roles':
      for (const id of ids ?? []) d.rows.add(id);
      break;
    case 'room':
      d.room = d.controls = true;
      break;
    case 'lobby': {
      d.lobby = d.controls = true;
      // Someone new waits: open the list for whoever may let them in.
      const fresh = m.lobby.some((w) => !ui.waitersSeen.has(w.id));
      ui.waitersSeen = new Set(m.lobby.map((w) => w.id));
      if (fresh && m.permissions.admit && !ui.lobbyOpen) {
        setPanel('lobby', true);
        ui.lobbyAuto = true;
      } else if (!m.lobby.length && ui.lobbyAuto && ui.lobbyOpen) {
        // Opened for the people who waited; they are all in (or away) now.
        setPanel('lobby', false);
      }
      break;
    }
    case 'hands':
      for (const id of ids ?? []) {
        d.tiles.add(id);
        d.rows.add(id);
      }
      d.self = d.controls = d.hands = true;
      break;
    case 'chat':
      d.chat = d.controls = true;
      break;
    case 'e2ee':
      // Our keys or the verification code.
      d.e2ee = true;
      break;
    case 'decryption':
      // Someone's frames started or stopped failing to decrypt.
      for (const id of ids ?? []) {
        d.tiles.add(id);
        d.rows.add(id);
      }
      d.screens = true;
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
  $('lobby-preview').srcObject = null;
  for (const id of ['people-list', 'hands-queue', 'lobby-list', 'chat-log']) $(id).replaceChildren();
  const everyone = document.createElement('option');
  everyone.value = '';
  everyone.textContent = 'Everyone';
  $('chat-to').replaceChildren(everyone);
  $('chat-input').value = '';
  for (const id of ['people', 'chat-panel', 'lobby-panel', 'side', 'hands', 'chat-unread', 'lobby-count',
    'locked-indicator', 'count', 'e2ee-badge', 'e2ee-code']) {
    $(id).hidden = true;
  }
  for (const id of ['confirm-dialog', 'invite-dialog']) if ($(id).open) $(id).close();
  $('enable-audio').hidden = true;
  $('reconnecting-banner').hidden = true;
  $('meeting').classList.remove('has-screen');
}

/** The session is over: back to the pre-join view, or to the end if it cannot go on. */
function exitMeeting(m, reason) {
  if (meeting !== m) return;
  meeting = null;
  clearMeetingView();
  if (reason instanceof MeetingError && FINAL_ERRORS.has(reason.code)) {
    showEnded(reason);
    return;
  }
  showPrejoin();
  if (reason instanceof MeetingError) showMeetingError(reason);
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
  const detailNote = document.createElement('span');
  detailNote.className = 'placeholder-detail';
  placeholder.append(avatar, note, detailNote);
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
  const hand = document.createElement('span');
  hand.className = 'badge hand-badge';
  hand.hidden = true;
  const reconnecting = document.createElement('span');
  reconnecting.className = 'badge reconnecting-badge';
  reconnecting.textContent = RECONNECTING;
  reconnecting.hidden = true;
  const poor = document.createElement('span');
  poor.className = 'badge poor-badge';
  poor.textContent = WEAK_CONNECTION;
  poor.title = 'This person’s network loses data or is slow: their picture and sound may stutter.';
  poor.hidden = true;
  const e2ee = document.createElement('span');
  e2ee.className = 'badge e2ee-tile-badge';
  e2ee.hidden = true;
  caption.append(name, pinned, muted, hand, reconnecting, poor, e2ee);
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
 *          hand?: number, reconnecting?: boolean, label: string, e2ee?: string|null,
 *          detail?: string}} s  `hand`: place in the
 *          queue of raised hands (from 1), 0 or absent if the hand is down; `reconnecting`:
 *          their connection dropped and the server waits for them to come back; `e2ee`:
 *          what end-to-end encryption says of them (see e2eeTileState), `detail` a second
 *          line under the note.
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
  setText(fig.querySelector('.placeholder-detail'), s.detail ?? '');
  setText(fig.querySelector('.name'), s.label);
  const e2ee = s.e2ee ?? '';
  if (fig.dataset.e2ee !== e2ee) fig.dataset.e2ee = e2ee;
  const badge = fig.querySelector('.e2ee-tile-badge');
  const badgeText = E2EE_TILE_BADGE[e2ee] ?? '';
  badge.hidden = !badgeText;
  setText(badge, badgeText);
  fig.querySelector('.muted-badge').hidden = !s.muted;
  const hand = fig.querySelector('.hand-badge');
  const place = s.hand || 0;
  hand.hidden = !place;
  setText(hand, place ? `Hand ${place}` : '');
  const handLabel = place ? `Hand raised, number ${place} in the queue` : '';
  if (hand.title !== handLabel) hand.title = handLabel;
  fig.dataset.hand = place ? String(place) : '';
  const pinned = fig.querySelector('.pinned-badge');
  if (pinned) pinned.hidden = !s.pinned;
  fig.dataset.muted = String(s.muted);
  fig.querySelector('.reconnecting-badge').hidden = !s.reconnecting;
  fig.dataset.reconnecting = String(Boolean(s.reconnecting));
  const poor = Boolean(s.poor && !s.reconnecting);
  fig.querySelector('.poor-badge').hidden = !poor;
  fig.dataset.connection = s.reconnecting ? 'reconnecting' : poor ? 'poor' : 'connected';
  fig.dataset.cameraOff = String(s.cameraOff ?? s.note === 'Camera off');
  fig.dataset.videoPaused = String(s.note === VIDEO_PAUSED);
  if (fig.getAttribute('role') === 'button') {
    fig.setAttribute('aria-pressed', String(Boolean(s.pinned)));
  }
  setHighlights(fig, s.label, s.muted, s.speaking, s.active, place);
}

/** The speaking border, the active speaker's ring, and the label naming both (and the raised
 *  hand and a dropped connection, which updateTile notes on the tile). */
function setHighlights(fig, label, muted, speaking, active, hand = Number(fig.dataset.hand) || 0) {
  fig.classList.toggle('speaking', speaking);
  fig.classList.toggle('active-speaker', active);
  const reconnecting = fig.dataset.reconnecting === 'true';
  fig.classList.toggle('reconnecting', reconnecting);
  const weak = fig.dataset.connection === 'poor';
  const state = [reconnecting && 'reconnecting', weak && 'weak connection', muted && 'muted', speaking && 'speaking',
    active && 'active speaker', hand && 'hand raised'].filter(Boolean).join(', ');
  const text = state ? `${label} (${state})` : label;
  if (fig.getAttribute('aria-label') !== text) fig.setAttribute('aria-label', text);
}

/** What a tile's badge says of someone's encryption. */
const E2EE_TILE_BADGE = { none: 'Not encrypted', invalid: "Can't decrypt", failing: "Can't decrypt" };

/**
 * What end-to-end encryption says of `source` of participant `id`, for their tile: `state`
 * is null in a meeting nobody encrypts; `ok` (shown as usual); `none` (they do not encrypt,
 * so an encrypted page shows nothing of them); `invalid` (they hold another meeting key);
 * `failing` (their frames do not decrypt); `encrypted` (they encrypt and this page has no
 * key). `note` and `detail` replace the video when it is not `ok`.
 */
function e2eeTileState(m, id, source) {
  const p = m.participants.get(id);
  const e = m.e2eeState(id);
  const failed = e.failed[source] ?? 0;
  const count = failed ? `${failed} frame${failed === 1 ? '' : 's'} could not be decrypted.` : '';
  switch (e.status) {
    case 'off':
      return p.e2ee
        ? { state: 'encrypted', note: 'End-to-end encrypted', detail: 'Open the meeting link with its key (#key=) to see and hear them.' }
        : { state: null };
    case 'none':
      return { state: 'none', note: 'Not encrypted', detail: 'They joined without the meeting key: their video and sound are not shown.' };
    case 'invalid':
      return { state: 'invalid', note: `Can't decrypt ${p.name}`, detail: `They joined with another meeting key. ${count}`.trim() };
    default:
      return e.failing[source] ? { state: 'failing', note: `Can't decrypt ${p.name}`, detail: count } : { state: 'ok' };
  }
}

/** What another person's tile shows now. */
function personTileState(m, id) {
  const p = m.participants.get(id);
  const slot = m.receiverFor(id, 'camera');
  const paused = m.isPaused(id, 'camera');
  const e2ee = e2eeTileState(m, id, 'camera');
  const hidden = e2ee.state !== null && e2ee.state !== 'ok';
  // The slot may still hold the camera's last frame after it was turned off, and a slot
  // held back for bandwidth would show a frozen picture: show the name instead. Frames that
  // cannot be decrypted are dropped: the tile says so rather than staying black.
  const live = Boolean(p.media.video && slot && !paused && !hidden);
  let note = 'Camera off';
  let detail = '';
  if (hidden && e2ee.state !== 'failing') {
    // Whether or not their camera is on: nothing of theirs can be shown.
    note = e2ee.note;
    detail = e2ee.detail;
  } else if (p.media.video) {
    if (hidden) {
      note = e2ee.note;
      detail = e2ee.detail;
    } else if (paused) note = VIDEO_PAUSED;
    else if (!slot) note = ui.inLayout.has(id) ? 'Video starting…' : 'No video slot free';
    else note = '';
  }
  return {
    name: p.name,
    label: p.name,
    stream: live ? slot.stream : null,
    note,
    detail,
    cameraOff: !p.media.video,
    e2ee: e2ee.state,
    muted: !p.media.audio,
    speaking: m.speaking.has(id),
    active: m.activeSpeaker === id,
    pinned: ui.pinned === id,
    hand: m.hands.indexOf(id) + 1,
    reconnecting: p.reconnecting,
    poor: p.connection === 'poor',
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
    hand: id ? m.hands.indexOf(id) + 1 : 0,
    reconnecting: m.connection === 'reconnecting' || m.state === 'reconnecting',
    poor: m.ownConnection === 'poor',
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
  li.dataset.participant = id;
  const hand = document.createElement('span');
  hand.className = 'person-hand';
  hand.hidden = true;
  const main = document.createElement('div');
  main.className = 'person-main';
  const name = document.createElement('span');
  name.className = 'person-name';
  const detail = document.createElement('span');
  detail.className = 'person-detail';
  const role = document.createElement('span');
  role.className = 'person-role';
  const state = document.createElement('span');
  state.className = 'state';
  detail.append(role, state);
  main.append(name, detail);
  li.append(hand, main);
  if (!self) {
    const pin = document.createElement('button');
    pin.type = 'button';
    pin.className = 'pin';
    li.append(pin);
  }
  return li;
}

/**
 * The menu of what we may do to someone, for people we outrank while we may moderate: a
 * button in the row, and the actions on a line of their own below it when open. Its
 * buttons are made when it opens, so that a list of 250 stays light.
 */
function createActionsMenu(li) {
  const button = document.createElement('button');
  button.type = 'button';
  button.className = 'person-menu';
  button.textContent = '⋯';
  button.setAttribute('aria-expanded', 'false');
  const list = document.createElement('div');
  list.className = 'action-list';
  list.id = `actions-${li.dataset.person}`;
  list.hidden = true;
  button.setAttribute('aria-controls', list.id);
  li.append(button, list);
}

/** Opens or closes someone's menu of actions. */
function setActionsOpen(m, li, open) {
  const button = li.querySelector('.person-menu');
  const list = li.querySelector('.action-list');
  if (!button) return;
  button.setAttribute('aria-expanded', String(open));
  list.hidden = !open;
  if (open) fillActions(m, list, li.dataset.person);
}

/** What a moderator may do to `id` now: [action, label] pairs. */
function actionsFor(m, id) {
  const p = m.participants.get(id);
  const actions = [];
  if (p.media.audio) actions.push(['mute-microphone', 'Mute microphone']);
  if (p.media.video) actions.push(['mute-camera', 'Turn off camera']);
  if (p.media.screen) actions.push(['mute-screen', 'Stop screen share']);
  if (m.hands.includes(id)) actions.push(['lower-hand', 'Lower hand']);
  actions.push(m.mayShareScreen(id)
    ? ['revoke-screen', 'Revoke screen sharing']
    : ['allow-screen', 'Allow screen sharing']);
  // A role below one's own: only a host makes moderators (or makes them participants again).
  if (p.role !== 'moderator' && m.role === 'host') actions.push(['make-moderator', 'Make moderator']);
  if (p.role !== 'participant') actions.push(['make-participant', 'Make participant']);
  actions.push(['remove', 'Remove from meeting']);
  return actions;
}

function fillActions(m, list, id) {
  if (!m.participants.has(id)) return;
  const actions = actionsFor(m, id);
  const key = actions.map((a) => a[0]).join(' ');
  if (list.dataset.actions === key) return;
  list.dataset.actions = key;
  const name = m.participants.get(id).name;
  const buttons = actions.map(([action, label]) => {
    const b = document.createElement('button');
    b.type = 'button';
    b.dataset.action = action;
    b.textContent = label;
    b.setAttribute('aria-label', `${label}: ${name}`);
    if (action === 'remove') b.className = 'danger';
    return b;
  });
  list.replaceChildren(...buttons);
}

function fillRow(m, li, id) {
  const self = id === m.participantId;
  const p = self ? { name: m.name, media: m.media, role: m.role } : m.participants.get(id);
  setText(li.querySelector('.person-name'), self ? `${p.name} (you)` : p.name);
  setText(li.querySelector('.person-role'), roleLabel(p.role));
  const reconnecting = self ? m.connection === 'reconnecting' || m.state === 'reconnecting' : p.reconnecting;
  const poor = !reconnecting && (self ? m.ownConnection : p.connection) === 'poor';
  const state = [];
  if (reconnecting) state.push(RECONNECTING);
  if (poor) state.push(WEAK_CONNECTION);
  if (!p.media.audio) state.push('Muted');
  if (!p.media.video) state.push('Camera off');
  if (p.media.screen) state.push('Sharing');
  const e2ee = self ? null : rowE2ee(m, id);
  if (e2ee?.text) state.push(e2ee.text);
  if ((li.dataset.e2ee ?? '') !== (e2ee?.state ?? '')) li.dataset.e2ee = e2ee?.state ?? '';
  setText(li.querySelector('.state'), state.join(' · '));
  li.dataset.reconnecting = String(Boolean(reconnecting));
  li.dataset.connection = reconnecting ? 'reconnecting' : poor ? 'poor' : 'connected';
  li.dataset.muted = String(!p.media.audio);
  li.dataset.cameraOff = String(!p.media.video);
  if (li.dataset.role !== p.role) li.dataset.role = p.role;
  const place = m.hands.indexOf(id) + 1;
  const hand = li.querySelector('.person-hand');
  hand.hidden = !place;
  setText(hand, place ? `Hand ${place}` : '');
  const handLabel = place ? `Hand raised, number ${place} in the queue` : '';
  if (hand.title !== handLabel) hand.title = handLabel;
  if (li.dataset.hand !== (place ? String(place) : '')) li.dataset.hand = place ? String(place) : '';
  li.classList.toggle('speaking', m.speaking.has(id));
  const pin = li.querySelector('.pin');
  if (pin) {
    const pinned = ui.pinned === id;
    setText(pin, pinned ? 'Unpin' : 'Pin');
    pin.setAttribute('aria-pressed', String(pinned));
    const label = pinned ? `Unpin ${p.name}` : `Pin ${p.name} to the large tile`;
    if (pin.getAttribute('aria-label') !== label) pin.setAttribute('aria-label', label);
  }
  if (self) return;
  let menu = li.querySelector('.person-menu');
  if (m.canModerate(id)) {
    if (!menu) {
      createActionsMenu(li);
      menu = li.querySelector('.person-menu');
    }
    const label = `Manage ${p.name}`;
    if (menu.getAttribute('aria-label') !== label) {
      menu.setAttribute('aria-label', label);
      menu.title = label;
    }
    const list = li.querySelector('.action-list');
    if (!list.hidden) fillActions(m, list, id);
  } else if (menu) {
    menu.remove();
    li.querySelector('.action-list').remove();
  }
}

/** What the participant list says of someone's encryption: {state, text}. */
function rowE2ee(m, id) {
  const e = m.e2eeState(id);
  if (e.status === 'off') return m.participants.get(id)?.e2ee ? { state: 'encrypted', text: 'Encrypted' } : null;
  if (e.status === 'none') return { state: 'none', text: 'Not encrypted' };
  if (e.status === 'invalid') return { state: 'invalid', text: "Can't decrypt (another meeting key)" };
  if (Object.values(e.failing).some(Boolean)) return { state: 'failing', text: "Can't decrypt" };
  return { state: 'ok', text: '' };
}

/** The raised hands in order, above the participant list. */
function renderHands(m) {
  const queue = m.hands.filter((id) => id === m.participantId || m.participants.has(id));
  $('hands').hidden = queue.length === 0;
  const items = queue.map((id) => {
    const li = document.createElement('li');
    li.dataset.hand = id;
    li.textContent = id === m.participantId ? `${m.name} (you)` : m.participants.get(id).name;
    return li;
  });
  $('hands-queue').replaceChildren(...items);
}

/** Updates the rows marked dirty, keyed by id: a join, a leave or a mute touches one row
 *  of 250. The list is only kept current while open. */
function renderPeople(m, d) {
  if (!ui.peopleOpen) return;
  if (d.hands || d.allRows) renderHands(m);
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

// ---- meeting: the lobby, chat and room state --------------------------------------------

/** The people waiting in the lobby, each with Admit and Deny; for those who may admit. */
function renderLobby(m) {
  const list = $('lobby-list');
  if (!m.permissions.admit) {
    list.replaceChildren();
    ui.waiters.clear();
    if (ui.lobbyOpen) setPanel('lobby', false);
    return;
  }
  const keep = new Set(m.lobby.map((w) => w.id));
  for (const [id, li] of ui.waiters) {
    if (!keep.has(id)) {
      li.remove();
      ui.waiters.delete(id);
    }
  }
  let prev = null;
  for (const w of m.lobby) {
    let li = ui.waiters.get(w.id);
    if (!li) {
      li = createWaiterRow(w);
      ui.waiters.set(w.id, li);
    }
    const want = prev ? prev.nextElementSibling : list.firstElementChild;
    if (want !== li) list.insertBefore(li, want);
    prev = li;
  }
  const n = m.lobby.length;
  $('lobby-empty').hidden = n > 0;
  $('admit-all').disabled = n === 0;
  $('deny-all').disabled = n === 0;
}

function createWaiterRow(w) {
  const li = document.createElement('li');
  li.className = 'waiter';
  li.dataset.waiter = w.id;
  const who = document.createElement('div');
  who.className = 'person-main';
  const name = document.createElement('span');
  name.className = 'waiter-name';
  name.textContent = w.name;
  const role = document.createElement('span');
  role.className = 'person-detail';
  role.textContent = roleLabel(w.role);
  who.append(name, role);
  const admit = document.createElement('button');
  admit.type = 'button';
  admit.className = 'primary';
  admit.dataset.admit = w.id;
  admit.textContent = 'Admit';
  admit.setAttribute('aria-label', `Admit ${w.name}`);
  const deny = document.createElement('button');
  deny.type = 'button';
  deny.dataset.deny = w.id;
  deny.textContent = 'Deny';
  deny.setAttribute('aria-label', `Deny ${w.name}`);
  li.append(who, admit, deny);
  return li;
}

/** The lock indicator in the top bar, for everyone in the meeting. */
function renderRoomState(m) {
  $('locked-indicator').hidden = !m.roomState.locked;
}

/** A participant's name for the chat, or a stand-in once they have left. */
function nameOf(m, id) {
  if (id === m.participantId) return m.name;
  return m.participants.get(id)?.name ?? 'someone who left';
}

function chatItem(m, msg) {
  const mine = msg.from === m.participantId;
  const li = document.createElement('li');
  li.className = 'chat-message';
  li.dataset.from = msg.from;
  li.dataset.private = String(Boolean(msg.to));
  li.classList.toggle('private', Boolean(msg.to));
  li.classList.toggle('mine', mine);
  const meta = document.createElement('div');
  meta.className = 'chat-meta';
  const from = document.createElement('span');
  from.className = 'chat-from';
  from.textContent = mine ? `${msg.name || m.name} (you)` : msg.name;
  meta.append(from);
  if (msg.to) {
    const to = document.createElement('span');
    to.className = 'chat-to';
    to.textContent = mine ? `to ${nameOf(m, msg.to)}, privately` : 'to you, privately';
    meta.append(to);
  }
  const when = new Date(msg.at);
  const time = document.createElement('time');
  time.className = 'chat-time';
  time.dateTime = when.toISOString();
  time.textContent = when.toLocaleTimeString([], { hour: '2-digit', minute: '2-digit' });
  meta.append(time);
  const text = document.createElement('p');
  text.className = 'chat-text';
  if (msg.unreadable) {
    // Encrypted under a key this page does not hold (sent before we came, or this page has
    // no meeting key): nothing to show but that.
    li.classList.add('unreadable');
    li.dataset.unreadable = 'true';
    text.textContent = m.encrypted
      ? 'Encrypted message this page cannot read (it was sent under a key this page never received).'
      : 'Encrypted message: open the meeting link with its key (#key=) to read it.';
  } else {
    text.textContent = msg.text;
  }
  if (m.encrypted && msg.encrypted === false) {
    // In an encrypted meeting, a message in clear may come from anyone, the server included.
    const plain = document.createElement('span');
    plain.className = 'chat-plain';
    plain.textContent = 'not encrypted';
    plain.title = 'This message was sent without end-to-end encryption: the server could have read or written it.';
    meta.append(plain);
    li.dataset.encrypted = 'false';
  }
  li.append(meta, text);
  return li;
}

/** Appends the messages not yet shown; counts those that came while the chat was closed. */
function renderChat(m) {
  const log = $('chat-log');
  const atEnd = log.scrollHeight - log.scrollTop - log.clientHeight < 40;
  let mineAdded = false;
  for (const msg of m.chat) {
    if (msg.seq <= ui.chatSeq) continue;
    ui.chatSeq = msg.seq;
    log.append(chatItem(m, msg));
    if (msg.from === m.participantId) mineAdded = true;
    else if (!ui.chatOpen) ui.unread++;
  }
  while (log.childElementCount > CHAT_KEEP) log.firstElementChild.remove();
  // Follow the conversation, unless the person scrolled back to read.
  if (atEnd || mineAdded) log.scrollTop = log.scrollHeight;
}

/** Whom a message can go to: everyone, or one of the others. Kept only while the chat is
 *  open (it is rebuilt on opening). */
function renderRecipients(m) {
  if (!ui.chatOpen) return;
  const select = $('chat-to');
  const chosen = select.value;
  const everyone = document.createElement('option');
  everyone.value = '';
  everyone.textContent = 'Everyone';
  const options = [everyone];
  for (const p of m.participants.values()) {
    const o = document.createElement('option');
    o.value = p.id;
    o.textContent = `${p.name} (privately)`;
    options.push(o);
  }
  select.replaceChildren(...options);
  ui.recipients = new Set(m.participants.keys());
  // Someone who left can no longer be written to: back to everyone.
  select.value = m.participants.has(chosen) ? chosen : '';
}

function chatLimit(m) {
  return Number(m.limits?.max_chat_chars) || 0;
}

/** The chat form: whether we may write, and the length limit. */
function renderChatForm(m) {
  const input = $('chat-input');
  const allowed = m.permissions.chat;
  input.disabled = !allowed;
  $('chat-to').disabled = !allowed;
  const placeholder = allowed ? 'Message' : 'Your role in this meeting does not let you write in the chat.';
  if (input.placeholder !== placeholder) input.placeholder = placeholder;
  const max = chatLimit(m);
  if (max && input.maxLength !== max) input.maxLength = max;
  updateChatRemaining();
}

/** Characters as the server counts them (code points, not UTF-16 units). */
function charCount(text) {
  return Array.from(text).length;
}

/** Says how many characters are left once the message nears the limit. */
function updateChatRemaining() {
  const m = meeting;
  const note = $('chat-remaining');
  const input = $('chat-input');
  const max = m ? chatLimit(m) : 0;
  const used = charCount(input.value);
  const left = max - used;
  const show = Boolean(max) && left < Math.min(100, max / 5);
  note.hidden = !show;
  const chars = (n) => `${n} character${n === 1 ? '' : 's'}`;
  if (show) setText(note, left >= 0 ? `${chars(left)} left.` : `${chars(-left)} too many.`);
  // While reconnecting a message would be lost: the text waits in the field.
  const away = m?.connection === 'reconnecting';
  $('chat-send').disabled = !m?.permissions.chat || away || !input.value.trim() || (max > 0 && left < 0);
}

function onChatSubmit(e) {
  e.preventDefault();
  const m = meeting;
  const input = $('chat-input');
  const text = input.value.trim();
  if (!m || !text || !m.permissions.chat || m.connection === 'reconnecting') return;
  const max = chatLimit(m);
  if (max && charCount(text) > max) {
    showError('chat_too_long', explain('chat_too_long'));
    return;
  }
  m.sendChat(text, $('chat-to').value || null);
  input.value = '';
  updateChatRemaining();
  input.focus();
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
    const e2ee = e2eeTileState(m, p.id, 'screen');
    const hidden = e2ee.state !== null && e2ee.state !== 'ok';
    tiles.push({
      id: p.id,
      name: p.name,
      label: `${p.name}'s screen`,
      stream: s.paused || hidden ? null : m.receivers.get(mid)?.stream ?? null,
      note: hidden ? e2ee.note : s.paused ? VIDEO_PAUSED : '',
      detail: hidden ? e2ee.detail : '',
      e2ee: e2ee.state,
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

/** One <audio> per audio receive slot, bound once per media connection (a new one, after
 *  a resume, has new tracks). */
function ensureAudioSinks(m) {
  const box = $('audio-sinks');
  const existing = new Map([...box.children].map((a) => [a.dataset.mid, a]));
  for (const r of m.receivers.values()) {
    if (r.kind !== 'audio') continue;
    let audio = existing.get(r.mid);
    existing.delete(r.mid);
    if (!audio) {
      audio = document.createElement('audio');
      audio.autoplay = true;
      audio.dataset.mid = r.mid;
      box.append(audio);
    }
    if (audio.srcObject !== r.stream) {
      audio.srcObject = r.stream;
      playAudio(audio);
    }
  }
  for (const audio of existing.values()) {
    audio.srcObject = null;
    audio.remove();
  }
}

/** Silences the audio slots that carry someone who encrypts while this page has no key: what
 *  would play is noise. (An encrypted page's worker drops such frames itself.) */
function muteUnreadableAudio(m) {
  for (const audio of $('audio-sinks').children) {
    const slot = m.slots.get(audio.dataset.mid);
    const p = slot ? m.participants.get(slot.participant) : null;
    const mute = Boolean(!m.encrypted && p?.e2ee);
    if (audio.muted !== mute) audio.muted = mute;
  }
}

/** Starts playback; if the browser blocks sound until the user clicks, offers a button. */
function playAudio(audio) {
  audio.play().catch((e) => {
    if (e.name === 'NotAllowedError') $('enable-audio').hidden = false;
  });
}

function setTitle(el, title) {
  if (el.title !== title) el.title = title;
}

function setAttr(el, name, value) {
  if (el.getAttribute(name) !== value) el.setAttribute(name, value);
}

/** Shows a count on a button's badge, hidden at zero. */
function setBadge(badge, n) {
  badge.hidden = n === 0;
  setText(badge, n ? String(n) : '');
}

function renderControls(m) {
  // Turning a source off is always possible; turning it on may not be (role, moderator).
  const mute = $('mute');
  const micBlocked = !m.micEnabled ? m.blocked('microphone') : null;
  mute.disabled = !m.micTrack || Boolean(micBlocked);
  setText(mute, m.micTrack ? (m.micEnabled ? 'Mute' : 'Unmute') : 'No microphone');
  setTitle(mute, m.micTrack && micBlocked ? BLOCKED_TITLE.microphone[micBlocked] : '');
  const camera = $('camera');
  const cameraBlocked = !m.cameraTrack ? m.blocked('camera') : null;
  camera.disabled = Boolean(cameraBlocked);
  setText(camera, m.cameraTrack ? 'Camera off' : 'Camera on');
  setTitle(camera, cameraBlocked ? BLOCKED_TITLE.camera[cameraBlocked] : '');
  const share = $('share');
  const canShare = Boolean(navigator.mediaDevices?.getDisplayMedia);
  const shareBlocked = !m.screenTrack ? m.blocked('screen') : null;
  share.disabled = !canShare || Boolean(shareBlocked);
  setText(share, m.screenTrack ? 'Stop sharing' : 'Share screen');
  setTitle(share, !canShare ? 'This browser cannot share its screen.'
    : shareBlocked ? BLOCKED_TITLE.screen[shareBlocked] : '');
  const hand = $('hand-toggle');
  setText(hand, m.handRaised ? 'Lower hand' : 'Raise hand');
  setAttr(hand, 'aria-pressed', String(m.handRaised));
  setText($('view'), ui.view === 'speaker' ? 'Grid view' : 'Speaker view');
  $('people-toggle').setAttribute('aria-expanded', String(ui.peopleOpen));
  setText($('people-toggle'), ui.peopleOpen ? 'Hide people' : 'People');

  const chat = $('chat-toggle');
  setAttr(chat, 'aria-expanded', String(ui.chatOpen));
  setText(chat.querySelector('.label'), ui.chatOpen ? 'Hide chat' : 'Chat');
  if (ui.chatOpen) ui.unread = 0;
  setBadge($('chat-unread'), ui.unread);
  setAttr(chat, 'aria-label', ui.unread ? `Chat, ${ui.unread} unread` : chat.querySelector('.label').textContent);
  renderChatForm(m);

  // Letting people in, inviting: for those who may admit.
  const admit = m.permissions.admit;
  const lobby = $('lobby-toggle');
  lobby.hidden = !admit;
  setAttr(lobby, 'aria-expanded', String(ui.lobbyOpen));
  const waiting = admit ? m.lobby.length : 0;
  setBadge($('lobby-count'), waiting);
  setAttr(lobby, 'aria-label', waiting ? `Lobby, ${waiting} waiting` : 'Lobby');
  lobby.classList.toggle('attention', waiting > 0);
  $('invite-button').hidden = !admit;

  // Locking and ending: for moderators.
  const moderate = m.permissions.moderate;
  const lock = $('lock-toggle');
  lock.hidden = !moderate;
  setText(lock, m.roomState.locked ? 'Unlock meeting' : 'Lock meeting');
  setAttr(lock, 'aria-pressed', String(Boolean(m.roomState.locked)));
  $('end-meeting').hidden = !moderate;
}

function renderStatus(m) {
  document.title = `${room} · ting`;
  const reconnecting = m.connection === 'reconnecting' || m.state === 'reconnecting';
  setStatus(reconnecting ? RECONNECTING : m.state === 'connected' ? 'Connected' : 'Connecting media…');
  $('reconnecting-banner').hidden = !reconnecting;
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

/** The encryption badge and the verification code in the top bar. */
function renderE2ee(m) {
  const on = m.encrypted;
  $('e2ee-badge').hidden = !on;
  const code = m.e2ee?.code ?? null;
  const el = $('e2ee-code');
  el.hidden = !on || !code;
  setText(el, code ? `Code ${code}` : '');
  if (el.dataset.code !== (code ?? '')) el.dataset.code = code ?? '';
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
  if (d.audio || d.allTiles || d.tiles.size) muteUnreadableAudio(m);
  if (d.e2ee || d.status) renderE2ee(m);
  // The chat before the controls: new messages change the unread count on its button.
  if (d.chat) renderChat(m);
  if (d.recipients) renderRecipients(m);
  if (d.controls) renderControls(m);
  if (d.status) renderStatus(m);
  if (d.room) renderRoomState(m);
  if (d.lobby) renderLobby(m);

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

// ---- meeting: panels, moderation, chat, invites ------------------------------------------

const PANELS = { people: 'people', chat: 'chat-panel', lobby: 'lobby-panel' };

/** Opens or closes a side panel (`people`, `chat`, `lobby`). */
function setPanel(name, open) {
  if (!ui) return;
  ui[`${name}Open`] = open;
  if (name === 'lobby') ui.lobbyAuto = false;
  $(PANELS[name]).hidden = !open;
  $('side').hidden = !(ui.peopleOpen || ui.chatOpen || ui.lobbyOpen);
  const d = ui.dirty;
  if (name === 'people') {
    if (open) {
      // Rows are not kept while closed: build them all now.
      d.allRows = true;
    } else {
      // Rows left behind would go stale (and still name people who left).
      $('people-list').replaceChildren();
      $('hands-queue').replaceChildren();
      ui.rows.clear();
    }
  } else if (name === 'chat' && open) {
    ui.unread = 0;
    d.recipients = true;
  } else if (name === 'lobby' && open) {
    d.lobby = true;
  }
  d.controls = d.sizes = true;
  scheduleRender();
}

/**
 * Asks before something that cannot be undone; resolves with the answer. The page's own
 * dialog, not `confirm()`: it can be styled, read by screen readers and driven by tests.
 */
function confirmAction(text, yesLabel) {
  const dialog = $('confirm-dialog');
  if (dialog.open) return Promise.resolve(false);
  $('confirm-text').textContent = text;
  $('confirm-yes').textContent = yesLabel;
  dialog.returnValue = '';
  dialog.showModal();
  // The safe answer has the focus: Enter does not remove anyone.
  $('confirm-no').focus();
  return new Promise((resolve) => {
    dialog.addEventListener('close', () => resolve(dialog.returnValue === 'yes'), { once: true });
  });
}

/** One of the actions in a participant's menu. */
async function onPersonAction(id, action, button) {
  const m = meeting;
  if (!m || !m.participants.has(id)) return;
  const row = button.closest('.person');
  switch (action) {
    case 'mute-microphone':
      m.muteParticipant(id, 'microphone');
      break;
    case 'mute-camera':
      m.muteParticipant(id, 'camera');
      break;
    case 'mute-screen':
      m.muteParticipant(id, 'screen');
      break;
    case 'lower-hand':
      m.lowerHand(id);
      break;
    case 'allow-screen':
    case 'revoke-screen':
      m.allowScreen(id, action === 'allow-screen');
      break;
    case 'make-moderator':
      m.setRole(id, 'moderator');
      break;
    case 'make-participant':
      m.setRole(id, 'participant');
      break;
    case 'remove': {
      const name = m.participants.get(id).name;
      const sure = await confirmAction(
        `Remove ${name} from the meeting? Their link will not let them in again.`, 'Remove');
      if (sure && meeting === m && m.participants.has(id)) m.removeParticipant(id);
      break;
    }
    default:
      return;
  }
  if (row && meeting === m) setActionsOpen(m, row, false);
}

function onLobbyClick(e) {
  const button = e.target.closest('button[data-admit], button[data-deny]');
  const m = meeting;
  if (!button || !m) return;
  // Once is enough; the row goes when the server's list no longer has them.
  const buttons = button.closest('.waiter').querySelectorAll('button');
  for (const b of buttons) b.disabled = true;
  setTimeout(() => {
    for (const b of buttons) b.disabled = false;
  }, 5000);
  if (button.dataset.admit) m.admit(button.dataset.admit);
  else m.deny(button.dataset.deny);
}

async function onDenyAll() {
  const m = meeting;
  const n = m?.lobby.length ?? 0;
  if (!n) return;
  const who = n === 1 ? 'the person waiting' : `all ${n} people waiting`;
  if (await confirmAction(`Turn away ${who} in the lobby?`, 'Deny all')) {
    if (meeting === m) m.deny();
  }
}

async function onEndMeeting() {
  const m = meeting;
  if (!m) return;
  if (await confirmAction('End the meeting for everyone? Everyone in it is disconnected.', 'End meeting')) {
    if (meeting === m) m.endMeeting();
  }
}

function openInvite() {
  $('invite-error').hidden = true;
  $('invite-result').hidden = true;
  $('invite-create').disabled = false;
  $('invite-dialog').showModal();
}

/** The full link of an invite: its path on this server. A link that is not a path on
 *  this server is not used as given. */
function inviteUrl(invite) {
  const path = String(invite.link ?? '');
  let url;
  if (path.startsWith('/') && !path.startsWith('//')) {
    url = new URL(path, location.origin);
  } else {
    url = new URL(`/m/${encodeURIComponent(room)}`, location.origin);
    url.searchParams.set('t', invite.token);
  }
  // An encrypted meeting's link carries its key, added here: the server never sees it.
  if (e2eeKey) url.hash = linkFragment(e2eeKey);
  return url.href;
}

async function onInviteSubmit(e) {
  e.preventDefault();
  const m = meeting;
  if (!m) return;
  const create = $('invite-create');
  const error = $('invite-error');
  const lobby = $('invite-lobby').checked;
  create.disabled = true;
  error.hidden = true;
  try {
    const invite = await m.invite({
      role: $('invite-role').value,
      lobby,
      expiresInSecs: Number($('invite-expiry').value),
    });
    $('invite-link').value = inviteUrl(invite);
    const until = new Date(Number(invite.expires_at) * 1000)
      .toLocaleString([], { dateStyle: 'medium', timeStyle: 'short' });
    const wait = lobby ? ' They wait in the lobby until someone lets them in.' : '';
    const key = e2eeKey ? " The link carries the meeting's encryption key: send it only to that person." : '';
    $('invite-note').textContent = `Whoever has this link can join as ${article(invite.role)} ${roleLabel(invite.role).toLowerCase()} until ${until}.${wait}${key}`;
    $('invite-result').hidden = false;
    $('invite-link').select();
  } catch (err) {
    if (err instanceof MeetingError && (err.code === 'closed' || err.code === 'cancelled')) return;
    error.textContent = err instanceof MeetingError ? explain(err.code, err.message) : String(err?.message ?? err);
    error.hidden = false;
  } finally {
    create.disabled = false;
  }
}

function copyInvite() {
  return copyField($('invite-link'), $('invite-copy'));
}

/** Copies the text of `input` to the clipboard; `button` says whether that worked. */
async function copyField(input, button) {
  let copied = false;
  try {
    await navigator.clipboard.writeText(input.value);
    copied = true;
  } catch {
    // No clipboard access (an insecure origin, a denied permission): the old way.
    input.select();
    try {
      copied = document.execCommand('copy');
    } catch {
      copied = false;
    }
  }
  input.select();
  setText(button, copied ? 'Copied' : 'Press Ctrl+C to copy');
  setTimeout(() => setText(button, 'Copy'), 2500);
}

function wireMeetingExtras() {
  $('hand-toggle').addEventListener('click', () => meeting?.setHandRaised(!meeting.handRaised));
  $('chat-toggle').addEventListener('click', () => {
    if (!ui) return;
    setPanel('chat', !ui.chatOpen);
    if (ui.chatOpen) {
      const log = $('chat-log');
      log.scrollTop = log.scrollHeight;
      $('chat-input').focus();
    }
  });
  $('lobby-toggle').addEventListener('click', () => setPanel('lobby', !ui?.lobbyOpen));
  $('chat-form').addEventListener('submit', onChatSubmit);
  $('chat-input').addEventListener('input', updateChatRemaining);
  $('chat-input').addEventListener('keydown', (e) => {
    // Enter sends, Shift+Enter starts a new line; not while an input method composes.
    if (e.key === 'Enter' && !e.shiftKey && !e.isComposing) {
      e.preventDefault();
      $('chat-form').requestSubmit();
    }
  });
  $('lobby-list').addEventListener('click', onLobbyClick);
  $('admit-all').addEventListener('click', () => meeting?.admit());
  $('deny-all').addEventListener('click', onDenyAll);
  $('lock-toggle').addEventListener('click', () => meeting?.setLocked(!meeting.roomState.locked));
  $('end-meeting').addEventListener('click', onEndMeeting);
  $('invite-button').addEventListener('click', openInvite);
  $('invite-form').addEventListener('submit', onInviteSubmit);
  $('invite-copy').addEventListener('click', copyInvite);
  $('invite-close').addEventListener('click', () => $('invite-dialog').close());
  $('lobby-leave').addEventListener('click', () => meeting?.leave());
  $('passcode-form').addEventListener('submit', onPasscode);
  $('passcode-cancel').addEventListener('click', hidePasscodeForm);
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
  $('people-toggle').addEventListener('click', () => setPanel('people', !ui?.peopleOpen));
  // One listener for every button of the list, however long it gets.
  $('people-list').addEventListener('click', (e) => {
    const button = e.target.closest('button');
    const row = button?.closest('.person');
    if (!row || !meeting) return;
    if (button.dataset.action) onPersonAction(row.dataset.person, button.dataset.action, button);
    else if (button.classList.contains('person-menu')) {
      setActionsOpen(meeting, row, button.getAttribute('aria-expanded') !== 'true');
    } else if (button.classList.contains('pin')) togglePin(row.dataset.person);
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
  // The page cannot tell a reload from the tab closing. In a meeting it keeps the session
  // for a reload to resume (the socket closing without `leave` is a drop to the server); a
  // closed tab's participant is then removed when the server times it out. Waiting in the
  // lobby, or joining, there is nothing to resume: leave.
  window.addEventListener('pagehide', () => {
    if (meeting?.resumable) meeting.suspend();
    else meeting?.leave();
  });
}

// ---- start ----------------------------------------------------------------------------

/** A read-only handle for tests and debugging, e.g. `ting.pc.getStats()` in the console. */
function exposeDebugHandle() {
  const handle = {
    get pc() { return meeting?.pc ?? null; },
    get participantId() { return meeting?.participantId ?? null; },
    get state() { return meeting?.state ?? 'idle'; },
    /** Our connection to the meeting: `connecting` (joining), `connected`, or
     *  `reconnecting` (resuming after a drop or a reload); null outside a meeting. */
    get connectionState() { return meeting?.connection ?? null; },
    /** How many times this page came back into its meeting with `resume`. */
    get resumeCount() { return meeting?.resumeCount ?? 0; },
    /** ICE restarts the server answered (the media connection came back after a network
     *  change or drop), and how long the last loss of media lasted in ms (null: none). */
    get iceRestarts() { return meeting?.iceRestarts ?? 0; },
    get lastMediaOutageMs() { return meeting?.lastMediaOutageMs ?? null; },
    /** How the server sees each connection, ours included: {id: 'connected' | 'poor' |
     *  'reconnecting'}. */
    get connections() {
      if (!meeting) return {};
      const out = Object.fromEntries([...meeting.participants.values()].map((p) => [p.id, p.connection]));
      if (meeting.participantId) out[meeting.participantId] = meeting.ownConnection;
      return out;
    },
    /** The others whose connection dropped and who the server waits for, by id. */
    get reconnecting() {
      return meeting ? [...meeting.participants.values()].filter((p) => p.reconnecting).map((p) => p.id) : [];
    },
    /** Test hook: closes the signalling socket without `leave`, as a network drop would;
     *  the page resumes on a new one. */
    dropSignalling() { meeting?.dropSignalling(); },
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
    /** Our role, what it permits now, and the room's settings ({locked, lobby, passcode}). */
    get role() { return meeting?.role ?? null; },
    get permissions() { return meeting ? { ...meeting.permissions } : null; },
    get roomState() { return meeting ? { ...meeting.roomState } : null; },
    /** Our id while waiting in the lobby (null once admitted or never there). */
    get waitingId() { return meeting?.state === 'waiting' ? meeting.waitingId : null; },
    /** Who waits in the lobby ([{id, name, role}]; only known to those who may admit). */
    get lobby() { return meeting ? meeting.lobby.map((w) => ({ ...w })) : []; },
    /** Raised hands, in order. */
    get hands() { return meeting ? [...meeting.hands] : []; },
    /** Everyone else's role: {id: role}. */
    get roles() {
      return meeting ? Object.fromEntries([...meeting.participants.values()].map((p) => [p.id, p.role])) : {};
    },
    /** The sentence shown for a server error code (with the server's own message). */
    explain,
  };
  Object.defineProperty(window, 'ting', { value: Object.freeze(handle), enumerable: true });

  /** End-to-end encryption, for tests and debugging. KIDs are decimal strings. */
  const e2ee = {
    /** Whether this page's meeting is end-to-end encrypted (its link has a key). */
    get enabled() { return Boolean(meeting?.encrypted ?? e2eeKey); },
    /** Our current KID, the next one between a re-key and the switch, and the one the
     *  worker last encrypted with. */
    get kid() { return meeting?.e2ee?.current?.kid.toString() ?? null; },
    get nextKid() { return meeting?.e2ee?.next?.kid.toString() ?? null; },
    get sendingKid() { return meeting?.e2eeSend?.kid ?? null; },
    /** Frames the worker encrypted per source, and dropped (never sent in clear). */
    get sent() { return meeting?.e2eeSend ? structuredClone(meeting.e2eeSend) : null; },
    /** The KIDs this page holds keys for: {participant: [kid]} (two latest per sender), and
     *  every KID it ever held. */
    get held() { return meeting?.e2ee?.heldKids() ?? {}; },
    get everHeld() { return [...(meeting?.e2ee?.everHeld ?? [])]; },
    /** Each participant's encryption: {id: 'none' | 'invalid' | 'ok'}. */
    get peers() {
      if (!meeting?.e2ee) return {};
      return Object.fromEntries([...meeting.participants.keys()].map((id) => [id, meeting.e2ee.status(id)]));
    },
    /** Decryption per participant and source: {id: {source: {ok, fail, kid, failing,
     *  failedFrames, gapMaxMs, gapMaxEnd, reason}}}: frames decrypted and not, the KID of the
     *  last one decrypted, whether the tile shows "Can't decrypt", the longest gap between
     *  decrypted frames since resetGaps() and when it ended (ms since the epoch). */
    get decryption() {
      if (!meeting) return {};
      return Object.fromEntries([...meeting.decryption].map(([id, d]) => [id, structuredClone(d.sources)]));
    },
    /** The verification code ("1234 5678"). */
    get code() { return meeting?.e2ee?.code ?? null; },
    /** Plaintext samples of our camera asked for with recordSamples: [{kid, ctr, keyframe,
     *  length, hex}] with hex bytes 10..42 of the frame before encryption. */
    get samples() { return meeting ? structuredClone(meeting.e2eeSamples) : []; },
    recordSamples(count) { meeting?.recordSamples(count); },
    resetGaps() { meeting?.resetDecryptGaps(); },
  };
  Object.defineProperty(window, 'tingE2ee', { value: Object.freeze(e2ee), enumerable: true });
}

function main() {
  exposeDebugHandle();
  // The server marks its page when its certificate is the self-signed development one.
  if ('devCertificate' in document.body.dataset) $('dev-certificate').hidden = false;
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
  // The invitation in the link (/m/<room>?t=<token>), sent with every join from this page.
  token = new URLSearchParams(location.search).get('t')?.trim() || null;
  // The meeting key in the fragment (/m/<room>#key=…): the meeting is end-to-end encrypted.
  try {
    e2eeKey = parseLinkKey(location.hash);
  } catch (e) {
    e2eeKeyError = e;
  }
  // Another key pasted into this tab's address bar changes only the fragment, which does not
  // load the page again: do, so that the page joins with the key it shows.
  window.addEventListener('hashchange', () => location.reload());
  try {
    $('name').value = localStorage.getItem(NAME_KEY) ?? '';
  } catch {
    // see onJoin
  }
  // An invitation that names its holder wins over a remembered name: the server uses it.
  const invited = tokenName();
  if (invited) $('name').value = invited;
  $('join-form').addEventListener('submit', onJoin);
  wireControls();
  wireMeetingExtras();
  const saved = e2eeKeyError ? null : storedSession(room);
  if (saved) resumeAfterReload(saved);
  else showPrejoin();
  if (e2eeKeyError) showError('e2ee_key', explain('e2ee_key', e2eeKeyError.message));
}

main();
