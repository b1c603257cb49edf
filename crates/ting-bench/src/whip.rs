//! Simulated WHIP publishers and WHEP viewers, so their cost is measured like a
//! WebSocket participant's: the same simulated peer and media, joined with one HTTP
//! request (RFC 9725) instead of the signalling protocol.
//!
//! WHIP and WHEP need a join token and a room that is on or defined; the harness makes the
//! room and a token per participant through ting's control API (`--api-key`).

use std::net::{IpAddr, SocketAddr, UdpSocket};
use std::time::{Duration, Instant};

use ting_proto::{ParticipantRef, ServerMsg, SlotAssignment, Source};

use crate::driver::{DriverCmd, DriverSender, PeerSocket};
use crate::http::{HttpError, client};
use crate::peer::{PeerError, SimPeer, SimPeerConfig};

const TIMEOUT: Duration = Duration::from_secs(15);

/// The participant a WHEP viewer's slots are said to carry: the server does not tell a
/// WHEP viewer who is in them (it follows the active speaker).
pub const WHEP_SPEAKER: &str = "whep-active-speaker";

/// Publishing (WHIP) or watching (WHEP).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum HttpJoin {
    Whip,
    Whep,
}

impl HttpJoin {
    fn path(self) -> &'static str {
        match self {
            HttpJoin::Whip => "whip",
            HttpJoin::Whep => "whep",
        }
    }
}

#[derive(Debug, thiserror::Error)]
pub enum WhipError {
    #[error("{0}")]
    Http(#[from] HttpError),
    #[error("{0}")]
    Request(#[from] reqwest::Error),
    #[error("{what} answered {status}: {body}")]
    Status {
        what: String,
        status: u16,
        body: String,
    },
    #[error("simulated peer: {0}")]
    Peer(#[from] PeerError),
    #[error("cannot bind a UDP socket: {0}")]
    Bind(std::io::Error),
    #[error("the answer has no Location header")]
    NoLocation,
}

async fn send(
    what: &str,
    req: reqwest::RequestBuilder,
) -> Result<(u16, reqwest::header::HeaderMap, String), WhipError> {
    let res = tokio::time::timeout(TIMEOUT, req.send())
        .await
        .map_err(|_| HttpError::Timeout(TIMEOUT))??;
    let status = res.status().as_u16();
    let headers = res.headers().clone();
    let body = tokio::time::timeout(TIMEOUT, res.text())
        .await
        .map_err(|_| HttpError::Timeout(TIMEOUT))??;
    if !(200..300).contains(&status) {
        return Err(WhipError::Status {
            what: what.to_owned(),
            status,
            body,
        });
    }
    Ok((status, headers, body))
}

/// Defines `room` through the control API at `base` (`http://host:port`); a room that
/// exists already is fine.
pub async fn define_room(base: &str, api_key: &str, room: &str) -> Result<(), WhipError> {
    let req = client(&[])?
        .post(format!("{base}/v1/rooms"))
        .bearer_auth(api_key)
        .header(reqwest::header::CONTENT_TYPE, "application/json")
        .body(serde_json::json!({ "name": room, "lobby": false }).to_string());
    match send("POST /v1/rooms", req).await {
        Ok(_) => Ok(()),
        Err(WhipError::Status { status: 409, .. }) => Ok(()),
        Err(e) => Err(e),
    }
}

/// A join token for `room`, named `name`, from the control API.
pub async fn issue_token(
    base: &str,
    api_key: &str,
    room: &str,
    name: &str,
) -> Result<String, WhipError> {
    let req = client(&[])?
        .post(format!("{base}/v1/rooms/{room}/tokens"))
        .bearer_auth(api_key)
        .header(reqwest::header::CONTENT_TYPE, "application/json")
        .body(serde_json::json!({ "name": name }).to_string());
    let (_, _, body) = send("POST /v1/rooms/{room}/tokens", req).await?;
    let v: serde_json::Value = serde_json::from_str(&body).map_err(|e| WhipError::Status {
        what: "the token response".into(),
        status: 201,
        body: format!("not JSON ({e}): {body}"),
    })?;
    v["token"]
        .as_str()
        .map(str::to_owned)
        .ok_or(WhipError::Status {
            what: "the token response".into(),
            status: 201,
            body,
        })
}

/// A WHIP or WHEP session whose media runs on a driver.
#[derive(Debug)]
pub struct HttpPeer {
    pub id: u32,
    pub join: HttpJoin,
    /// The session's resource URL.
    pub resource: String,
    pub local: SocketAddr,
    /// From the POST to the answer applied.
    pub join_time: Duration,
    token: String,
}

impl HttpPeer {
    /// Ends the session (`DELETE`).
    pub async fn delete(&self) -> Result<(), WhipError> {
        let req = client(&[])?.delete(&self.resource).bearer_auth(&self.token);
        send("DELETE", req).await.map(|_| ())
    }
}

/// Publishes (WHIP) or watches (WHEP) `room` at `base` with `token`, as the simulated
/// peer `cfg` (a WHIP publisher should have no receive slots, a WHEP viewer one audio and
/// one camera slot, and a screen slot at most).
pub async fn join_http(
    join: HttpJoin,
    base: &str,
    room: &str,
    token: &str,
    cfg: SimPeerConfig,
    local_ip: IpAddr,
    driver: DriverSender,
) -> Result<HttpPeer, WhipError> {
    let started = Instant::now();
    let id = cfg.id;
    let socket = UdpSocket::bind(SocketAddr::new(local_ip, 0)).map_err(WhipError::Bind)?;
    let local = socket.local_addr().map_err(WhipError::Bind)?;
    let (mut peer, offer) = SimPeer::new(cfg, local, Instant::now())?;
    let req = client(&[])?
        .post(format!("{base}/{}/{room}", join.path()))
        .bearer_auth(token)
        .header(reqwest::header::CONTENT_TYPE, "application/sdp")
        .body(offer.sdp.clone());
    let (_, headers, answer) = send(&format!("POST /{}", join.path()), req).await?;
    let location = headers
        .get(reqwest::header::LOCATION)
        .and_then(|v| v.to_str().ok())
        .ok_or(WhipError::NoLocation)?;
    let resource = if location.starts_with("http") {
        location.to_owned()
    } else {
        format!("{base}{location}")
    };
    peer.accept_answer(&answer, Instant::now())?;
    if join == HttpJoin::Whep {
        // What the slots carry, as a WHEP viewer knows it: the speaker's microphone and
        // camera, and the screen share, whoever they belong to.
        let speaker = ParticipantRef(WHEP_SPEAKER.into());
        let mut slots = Vec::new();
        let pairs = [
            (offer.receive.audio.first(), Source::Microphone),
            (offer.receive.video.first(), Source::Camera),
            (offer.receive.screen.first(), Source::Screen),
        ];
        for (mid, source) in pairs {
            if let Some(mid) = mid {
                slots.push(SlotAssignment {
                    mid: mid.clone(),
                    participant: speaker.clone(),
                    source,
                    paused: false,
                });
            }
        }
        peer.handle_signal(&ServerMsg::Slots { slots });
    }
    driver.send(DriverCmd::Add(Box::new(peer), PeerSocket::Own(socket)));
    Ok(HttpPeer {
        id,
        join,
        resource,
        local,
        join_time: started.elapsed(),
        token: token.to_owned(),
    })
}
