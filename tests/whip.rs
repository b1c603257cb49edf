//! WHIP and WHEP against a real server: a publisher appears in the meeting with its
//! sources on and leaves on `DELETE`; a viewer counts but is never shown; ICE restarts and
//! trickle over `PATCH`; and every refusal (no token, a bad one, another room's, an unknown
//! room, a body that is no offer, the wrong content type, an unknown resource) has its
//! status and leaves the meeting as it was.
//!
//! Media through WHIP and WHEP is checked with independent stacks in `tests/interop/`.

mod common;

use std::time::{Duration, Instant};

use common::{TestServer, start_server};
use serde_json::{Value, json};
use str0m::media::{Direction, MediaKind};
use str0m::{Candidate, Rtc};
use ting_bench::Signal;
use ting_proto::{ClientMsg, Join, PROTOCOL_VERSION, ServerMsg};

const SECRET: &str = "a-token-secret-for-tests-0123456789ab";
const WAIT: Duration = Duration::from_secs(5);

const API_KEY: &str = "an-api-key-for-tests-0123456789abcdef";

async fn server() -> TestServer {
    start_server(&[
        ("rooms.open", "false"),
        ("tokens.secret", SECRET),
        ("api.key", API_KEY),
    ])
    .await
}

/// A token for `room` whose signature is wrong.
fn forged_for(room: &str) -> String {
    forge(&token(room, "participant", None))
}

/// `token` with one character of its signature changed (not the last, whose low bits
/// base64 leaves unused).
fn forge(token: &str) -> String {
    let mut chars: Vec<char> = token.chars().collect();
    let at = chars.len() - 10;
    chars[at] = if chars[at] == 'A' { 'B' } else { 'A' };
    chars.into_iter().collect()
}

/// A join token for `room`, signed as the organisation's own system would.
fn token(room: &str, role: &str, name: Option<&str>) -> String {
    let exp = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_secs()
        + 600;
    let mut claims =
        json!({"room": room, "exp": exp, "role": role, "jti": rand::random::<u64>().to_string()});
    if let Some(n) = name {
        claims["name"] = json!(n);
    }
    jsonwebtoken::encode(
        &jsonwebtoken::Header::new(jsonwebtoken::Algorithm::HS256),
        &claims,
        &jsonwebtoken::EncodingKey::from_secret(SECRET.as_bytes()).unwrap(),
    )
    .unwrap()
}

/// An offer from an independent str0m client: audio and video, in `direction`.
fn offer(direction: Direction) -> String {
    let mut rtc = Rtc::builder().build(Instant::now());
    let candidate = Candidate::host("127.0.0.1:40000".parse().unwrap(), "udp").unwrap();
    rtc.add_local_candidate(candidate);
    let mut api = rtc.sdp_api();
    api.add_media(MediaKind::Audio, direction, None, None, None);
    api.add_media(MediaKind::Video, direction, None, None, None);
    let (offer, _) = api.apply().expect("an offer");
    offer.to_sdp_string()
}

struct Reply {
    status: u16,
    headers: reqwest::header::HeaderMap,
    body: String,
}

async fn request(
    s: &TestServer,
    method: reqwest::Method,
    path: &str,
    token: Option<&str>,
    content_type: Option<&str>,
    body: &str,
    extra: &[(&str, &str)],
) -> Reply {
    let mut req = reqwest::Client::new()
        .request(method, format!("http://{}{path}", s.http))
        .body(body.to_owned());
    if let Some(t) = token {
        req = req.bearer_auth(t);
    }
    if let Some(ct) = content_type {
        req = req.header("content-type", ct);
    }
    for (k, v) in extra {
        req = req.header(*k, *v);
    }
    let r = req.send().await.expect("the server answers");
    Reply {
        status: r.status().as_u16(),
        headers: r.headers().clone(),
        body: r.text().await.unwrap_or_default(),
    }
}

async fn post(s: &TestServer, path: &str, token: Option<&str>, sdp: &str) -> Reply {
    request(
        s,
        reqwest::Method::POST,
        path,
        token,
        Some("application/sdp"),
        sdp,
        &[],
    )
    .await
}

fn header<'a>(r: &'a Reply, name: &str) -> &'a str {
    r.headers
        .get(name)
        .and_then(|v| v.to_str().ok())
        .unwrap_or_else(|| panic!("no {name} header: {:?}", r.headers))
}

/// A refusal: its status and its JSON error code, with a message a person can act on.
fn refused(r: &Reply, status: u16, error: &str) {
    assert_eq!(r.status, status, "{}", r.body);
    let v: Value = serde_json::from_str(&r.body).unwrap_or_else(|e| panic!("{e}: {}", r.body));
    assert_eq!(v["error"], error, "{}", r.body);
    assert!(
        v["message"].as_str().is_some_and(|m| m.len() > 10),
        "{}",
        r.body
    );
}

/// A browser-like participant in `room`, joined by a token.
async fn member(s: &TestServer, room: &str, token: &str) -> Signal {
    let mut sig = Signal::connect(&s.ws_url).await.expect("websocket");
    sig.send(&ClientMsg::Join(Join {
        protocol: PROTOCOL_VERSION,
        room: room.into(),
        name: "Aino".into(),
        token: Some(token.into()),
        passcode: None,
        e2ee: None,
    }))
    .await
    .unwrap();
    sig.recv_until(WAIT, |m| matches!(m, ServerMsg::Welcome(_)).then_some(()))
        .await
        .expect("a welcome");
    sig
}

/// Whether `sig` hears of anyone joining or leaving within `within`.
async fn hears_of_people(sig: &mut Signal, within: Duration) -> Option<ServerMsg> {
    sig.recv_until(within, |m| match m {
        ServerMsg::ParticipantJoined { .. }
        | ServerMsg::ParticipantLeft { .. }
        | ServerMsg::ParticipantUpdated { .. }
        | ServerMsg::ParticipantConnection { .. } => Some(m.clone()),
        _ => None,
    })
    .await
    .ok()
}

async fn participants(s: &TestServer) -> f64 {
    s.metric("ting_participants ").await
}

#[tokio::test]
async fn a_whip_publisher_joins_the_meeting_and_leaves_on_delete() {
    let s = server().await;
    let host = token("board", "host", None);
    let mut aino = member(&s, "board", &host).await;
    let camera = token("board", "participant", Some("Hall camera"));

    let r = post(
        &s,
        "/whip/board",
        Some(&camera),
        &offer(Direction::SendOnly),
    )
    .await;
    assert_eq!(r.status, 201, "{}", r.body);
    assert_eq!(header(&r, "content-type"), "application/sdp");
    assert!(r.body.contains("a=ice-lite"), "{}", r.body);
    assert!(r.body.contains("a=end-of-candidates"), "{}", r.body);
    let location = header(&r, "location").to_owned();
    assert!(location.starts_with("/whip/board/"), "{location}");
    assert!(header(&r, "etag").starts_with('"'));
    assert_eq!(
        header(&r, "accept-patch"),
        "application/trickle-ice-sdpfrag"
    );

    // The room sees the publisher by the token's name, camera and microphone on, once its
    // offer was accepted.
    let joined = aino
        .recv_until(WAIT, |m| match m {
            ServerMsg::ParticipantJoined { participant } => Some(participant.clone()),
            _ => None,
        })
        .await
        .expect("the publisher joins");
    assert_eq!(joined.name, "Hall camera");
    assert!(
        joined.media.audio && joined.media.video,
        "shown with its sources on: {joined:?}"
    );

    // Trickled candidates alone: acknowledged, nothing to do for an ICE-lite server.
    let frag = "a=ice-ufrag:unchanged-is-not-known\r\n";
    let r = request(
        &s,
        reqwest::Method::PATCH,
        &location,
        Some(&camera),
        Some("text/plain"),
        frag,
        &[],
    )
    .await;
    refused(&r, 415, "unsupported_media_type");

    // Another token may not end it; the right one does, once.
    let other = token("board", "participant", None);
    let r = request(
        &s,
        reqwest::Method::DELETE,
        &location,
        Some(&other),
        None,
        "",
        &[],
    )
    .await;
    refused(&r, 401, "unauthorized");
    let r = request(
        &s,
        reqwest::Method::DELETE,
        &location,
        Some(&camera),
        None,
        "",
        &[],
    )
    .await;
    assert_eq!(r.status, 200, "{}", r.body);
    aino.recv_until(WAIT, |m| match m {
        ServerMsg::ParticipantLeft { participant, .. } if *participant == joined.id => Some(()),
        _ => None,
    })
    .await
    .expect("the publisher leaves");
    let r = request(
        &s,
        reqwest::Method::DELETE,
        &location,
        Some(&camera),
        None,
        "",
        &[],
    )
    .await;
    refused(&r, 404, "not_found");
}

#[tokio::test]
async fn an_ice_restart_over_patch_gives_new_credentials() {
    let s = server().await;
    let host = token("board", "host", None);
    let _aino = member(&s, "board", &host).await;
    let camera = token("board", "participant", Some("Hall camera"));
    let sdp = offer(Direction::SendOnly);
    let r = post(&s, "/whip/board", Some(&camera), &sdp).await;
    assert_eq!(r.status, 201, "{}", r.body);
    let location = header(&r, "location").to_owned();
    let etag = header(&r, "etag").to_owned();
    let old_ufrag = r
        .body
        .lines()
        .find_map(|l| l.strip_prefix("a=ice-ufrag:"))
        .unwrap()
        .trim()
        .to_owned();
    let client_ufrag = sdp
        .lines()
        .find_map(|l| l.strip_prefix("a=ice-ufrag:"))
        .unwrap()
        .trim()
        .to_owned();
    let patch = |frag: String, if_match: &'static str| {
        let s = &s;
        let location = location.clone();
        let camera = camera.clone();
        async move {
            request(
                s,
                reqwest::Method::PATCH,
                &location,
                Some(&camera),
                Some("application/trickle-ice-sdpfrag"),
                &frag,
                &[("if-match", if_match)],
            )
            .await
        }
    };

    // Candidates with the same credentials: 204.
    let trickle = format!(
        "a=ice-ufrag:{client_ufrag}\r\na=ice-pwd:whatever\r\nm=audio 9 RTP/AVP 0\r\na=mid:0\r\n\
         a=candidate:1 1 udp 2130706431 127.0.0.1 40001 typ host\r\n"
    );
    let r = patch(trickle, "*").await;
    assert_eq!(r.status, 204, "{}", r.body);

    // An If-Match naming an old state: 412.
    let r = patch(
        "a=ice-ufrag:newu\r\na=ice-pwd:newpasswordnewpassword1\r\n".into(),
        "\"not-the-etag\"",
    )
    .await;
    refused(&r, 412, "etag_mismatch");

    // New credentials: the server's come back in a fragment, with a new entity tag.
    let r = patch(
        "a=ice-ufrag:newu\r\na=ice-pwd:newpasswordnewpassword1\r\n".into(),
        "*",
    )
    .await;
    assert_eq!(r.status, 200, "{}", r.body);
    assert_eq!(
        header(&r, "content-type"),
        "application/trickle-ice-sdpfrag"
    );
    let new_ufrag = r
        .body
        .lines()
        .find_map(|l| l.strip_prefix("a=ice-ufrag:"))
        .expect("the server's new ufrag")
        .trim();
    assert_ne!(new_ufrag, old_ufrag);
    assert!(r.body.contains("a=ice-pwd:"), "{}", r.body);
    assert!(r.body.contains("a=candidate:"), "{}", r.body);
    assert_ne!(header(&r, "etag"), etag);

    // Another restart at once: refused, so PATCHes cannot keep the media worker busy.
    let r = patch(
        "a=ice-ufrag:again\r\na=ice-pwd:anotherpasswordanother1\r\n".into(),
        "*",
    )
    .await;
    refused(&r, 429, "rate_limited");
    assert_eq!(header(&r, "retry-after"), "1");
}

#[tokio::test]
async fn a_whep_viewer_counts_but_is_never_shown() {
    let s = server().await;
    let host = token("board", "host", None);
    let mut aino = member(&s, "board", &host).await;
    let before = participants(&s).await;
    let viewer = token("board", "participant", Some("Lobby screen"));

    let r = post(
        &s,
        "/whep/board",
        Some(&viewer),
        &offer(Direction::RecvOnly),
    )
    .await;
    assert_eq!(r.status, 201, "{}", r.body);
    let location = header(&r, "location").to_owned();
    assert!(location.starts_with("/whep/board/"), "{location}");
    assert!(r.body.contains("a=ice-lite"), "{}", r.body);

    common::wait_for_async("the viewer counts", WAIT, || async {
        participants(&s).await == before + 1.0
    })
    .await;
    // Somebody joining after the viewer is not told of it either.
    let second = token("board", "participant", None);
    let mut eero = Signal::connect(&s.ws_url).await.unwrap();
    eero.send(&ClientMsg::Join(Join {
        protocol: PROTOCOL_VERSION,
        room: "board".into(),
        name: "Eero".into(),
        token: Some(second),
        passcode: None,
        e2ee: None,
    }))
    .await
    .unwrap();
    let welcome = eero
        .recv_until(WAIT, |m| match m {
            ServerMsg::Welcome(w) => Some(w.clone()),
            _ => None,
        })
        .await
        .unwrap();
    assert_eq!(welcome.participants.len(), 1, "{:?}", welcome.participants);
    assert_eq!(welcome.participants[0].name, "Aino");
    // The operator sees it, marked as not shown.
    let (status, body) = s
        .api("GET", "/v1/rooms/board/participants", Some(API_KEY), None)
        .await;
    assert_eq!(status, 200, "{body}");
    let list: Value = serde_json::from_str(&body).unwrap();
    let hidden: Vec<&str> = list["participants"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|p| p["hidden"] == true)
        .map(|p| p["name"].as_str().unwrap())
        .collect();
    assert_eq!(hidden, vec!["Lobby screen"], "{body}");

    let r = request(
        &s,
        reqwest::Method::DELETE,
        &location,
        Some(&viewer),
        None,
        "",
        &[],
    )
    .await;
    assert_eq!(r.status, 200, "{}", r.body);
    common::wait_for_async("the viewer is gone", WAIT, || async {
        participants(&s).await == before + 1.0
    })
    .await;
    // Aino heard of Eero, and of nobody else.
    let heard = hears_of_people(&mut aino, WAIT).await;
    assert!(
        matches!(&heard, Some(ServerMsg::ParticipantJoined { participant }) if participant.name == "Eero"),
        "{heard:?}"
    );
    let heard = hears_of_people(&mut aino, Duration::from_millis(500)).await;
    assert!(heard.is_none(), "{heard:?}");
}

#[tokio::test]
async fn refusals_have_their_status_and_leave_the_meeting_alone() {
    let s = server().await;
    let host = token("board", "host", None);
    let mut aino = member(&s, "board", &host).await;
    let good = token("board", "participant", Some("Hall camera"));
    let elsewhere = token("other", "participant", None);
    let sdp = offer(Direction::SendOnly);
    let before = participants(&s).await;

    for path in ["/whip/board", "/whep/board"] {
        // No token, a token that is not one, a forged one, another room's.
        let r = post(&s, path, None, &sdp).await;
        refused(&r, 401, "token_required");
        assert_eq!(header(&r, "www-authenticate"), "Bearer");
        refused(
            &post(&s, path, Some("not-a-token"), &sdp).await,
            401,
            "token_malformed",
        );
        let forged = forge(&good);
        refused(
            &post(&s, path, Some(&forged), &sdp).await,
            401,
            "token_invalid",
        );
        refused(
            &post(&s, path, Some(&elsewhere), &sdp).await,
            403,
            "token_wrong_room",
        );
        // A body that is not an offer, or not sent as one.
        refused(
            &post(&s, path, Some(&good), "hello").await,
            400,
            "bad_offer",
        );
        let r = request(
            &s,
            reqwest::Method::POST,
            path,
            Some(&good),
            Some("application/json"),
            &sdp,
            &[],
        )
        .await;
        refused(&r, 415, "unsupported_media_type");
        // An offer ting's SDP parser refuses.
        let broken = sdp.replace("a=fingerprint:", "a=fingerprint-broken:");
        refused(
            &post(&s, path, Some(&good), &broken).await,
            400,
            "bad_offer",
        );
        // An unknown resource.
        let r = request(
            &s,
            reqwest::Method::DELETE,
            &format!("{path}/0123456789abcdef0123456789abcdef"),
            Some(&good),
            None,
            "",
            &[],
        )
        .await;
        refused(&r, 404, "not_found");
    }
    // A room nobody is in and nobody defined: 404, and no room is opened.
    let ghost = token("ghost", "participant", None);
    refused(
        &post(&s, "/whip/ghost", Some(&ghost), &sdp).await,
        404,
        "unknown_room",
    );
    refused(
        &post(&s, "/whep/ghost", Some(&ghost), &sdp).await,
        404,
        "unknown_room",
    );
    // Without a valid token, an unknown room gets the same refusal as a known one: the
    // answer says nothing of which rooms exist.
    refused(
        &post(&s, "/whip/ghost", Some(&forged_for("ghost")), &sdp).await,
        401,
        "token_invalid",
    );
    refused(
        &post(&s, "/whep/ghost", Some("not-a-token"), &sdp).await,
        401,
        "token_malformed",
    );
    // A body larger than a message may be.
    let huge = format!("{sdp}{}", "a=x\r\n".repeat(200_000));
    let r = post(&s, "/whip/board", Some(&good), &huge).await;
    assert_eq!(r.status, 413, "{}", r.body);

    // The endpoint says what it takes.
    let r = request(
        &s,
        reqwest::Method::OPTIONS,
        "/whip/board",
        None,
        None,
        "",
        &[],
    )
    .await;
    assert_eq!(r.status, 204);
    assert_eq!(header(&r, "accept-post"), "application/sdp");
    // Browser clients on other origins may ask, and may read the session's headers.
    let r = request(
        &s,
        reqwest::Method::OPTIONS,
        "/whep/board/some-session",
        None,
        None,
        "",
        &[
            ("origin", "https://encoder.example"),
            ("access-control-request-method", "PATCH"),
        ],
    )
    .await;
    assert_eq!(r.status, 204);
    assert_eq!(header(&r, "access-control-allow-origin"), "*");
    assert!(header(&r, "access-control-allow-methods").contains("PATCH"));
    assert!(header(&r, "access-control-allow-headers").contains("Authorization"));
    let r = post(&s, "/whip/board", None, &sdp).await;
    assert_eq!(r.status, 401);
    assert_eq!(header(&r, "access-control-allow-origin"), "*");
    assert!(header(&r, "access-control-expose-headers").contains("Location"));

    // Nobody joined, nobody was told anything, and the meeting goes on.
    assert_eq!(participants(&s).await, before);
    let heard = hears_of_people(&mut aino, Duration::from_millis(500)).await;
    assert!(heard.is_none(), "{heard:?}");
    aino.send(&ClientMsg::Ping).await.unwrap();
    aino.recv_until(WAIT, |m| matches!(m, ServerMsg::Pong).then_some(()))
        .await
        .expect("the meeting still answers");
}

/// The load harness joins by WHIP and WHEP too, so their cost is measured; and a run whose
/// sessions cannot be made reports that, not a clean 0 %.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_bench_publishes_by_whip_and_watches_by_whep() {
    use ting_bench::run::{BenchOptions, Scenario, Target, run};
    const KEY: &str = "an-api-key-for-tests-0123456789abcdef";
    let s = start_server(&[
        ("rooms.open", "false"),
        ("tokens.secret", SECRET),
        ("api.key", KEY),
        ("media.bandwidth_estimation", "false"),
    ])
    .await;
    let options = |key: &str| {
        let mut o = BenchOptions::new(
            Scenario::Fanout,
            Target::parse(&format!("http://{}", s.http)).unwrap(),
        );
        o.participants = 3;
        o.duration = Duration::from_secs(3);
        o.ramp = 50.0;
        o.settle = Duration::from_secs(10);
        o.progress = false;
        o.simulcast = false;
        o.whip = true;
        o.whep = true;
        o.api_key = Some(key.to_owned());
        o
    };

    let report = run(options(KEY)).await;
    eprint!("{}", report.summary());
    assert_eq!(report.joins.succeeded, 4, "{:?}", report.joins);
    assert!(report.failures.is_empty(), "{:?}", report.failures);
    // Each of the three viewers gets the publisher's audio and video.
    assert!(
        report.window.received_packets[0] > 3 * 2 * 50,
        "{:?}",
        report.window
    );
    assert!(
        report.window.received_packets[1] > 3 * 3 * 30,
        "{:?}",
        report.window
    );

    let report = run(options("not-the-key")).await;
    assert_eq!(report.joins.succeeded, 0, "{:?}", report.joins);
    assert!(
        report.joins.errors.iter().any(|e| e.contains("401")),
        "{:?}",
        report.joins.errors
    );
    assert!(!report.failures.is_empty(), "a run without sessions fails");
}
