//! One load-test run: plan the participants of each room, join them at the ramp rate,
//! wait for media to settle, measure for the duration, report.

use std::io::{IsTerminal, Write as _};
use std::net::IpAddr;
use std::sync::Arc;
use std::time::{Duration, Instant};

use tokio::sync::Semaphore;

use crate::driver::{DriverHandle, DriverSnapshot, DriverTally};
use crate::peer::{BenchLayout, PeerStats, SimPeerConfig};
use crate::report::{
    self, Headline, LossMarks, Percentiles, Point, Report, ServerFigures, ServerSample, Totals,
};
use crate::signal::join_peer;
use crate::usage::{ServerProbe, own_cpu};

/// The named scenarios.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum, serde::Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Scenario {
    /// One publisher, `--participants` subscribers receiving its audio and video.
    Fanout,
    /// `--participants` people all publishing, each receiving what a client shows:
    /// the audio slots and up to `--video-slots` cameras.
    Meeting,
    /// `--participants` people with microphones only.
    Audio,
    /// `--publishers` people publishing, the rest of `--participants` watching.
    Webinar,
}

/// Where the server under test is.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Target {
    /// A ting server: its WebSocket URL and its metrics URL.
    Ting { ws: String, metrics: String },
    /// A Janus server's REST API base (`http://host:port/janus`).
    Janus { api: String },
}

impl Target {
    /// `http://host:port` or `ws://host:port/ws` for ting, `janus://host:port/path` for
    /// Janus's HTTP API.
    pub fn parse(s: &str) -> Result<Target, String> {
        if let Some(rest) = s.strip_prefix("janus://") {
            let rest = if rest.contains('/') {
                rest.to_owned()
            } else {
                format!("{rest}/janus")
            };
            return Ok(Target::Janus {
                api: format!("http://{rest}"),
            });
        }
        let authority = s
            .strip_prefix("http://")
            .or_else(|| s.strip_prefix("ws://"))
            .ok_or_else(|| {
                format!("--target {s:?}: use http://host:port (ting) or janus://host:port (Janus)")
            })?;
        let authority = authority.split('/').next().unwrap_or_default();
        if authority.is_empty() {
            return Err(format!("--target {s:?} names no host"));
        }
        Ok(Target::Ting {
            ws: format!("ws://{authority}/ws"),
            metrics: format!("http://{authority}/metrics"),
        })
    }

    pub fn describe(&self) -> String {
        match self {
            Target::Ting { ws, .. } => format!("ting at {ws}"),
            Target::Janus { api } => format!("Janus VideoRoom at {api}"),
        }
    }
}

/// Everything a run needs to know.
#[derive(Debug, Clone)]
pub struct BenchOptions {
    pub scenario: Scenario,
    pub target: Target,
    pub participants: usize,
    pub rooms: usize,
    pub publishers: usize,
    pub duration: Duration,
    /// Joins started per second.
    pub ramp: f64,
    /// Joins in progress at once.
    pub concurrency: usize,
    /// Share of publishers whose audio says "speaking".
    pub speaking: f64,
    pub simulcast: bool,
    pub screen: bool,
    pub audio_slots: u16,
    pub video_slots: u16,
    pub threads: usize,
    pub local_ip: IpAddr,
    pub server_pid: Option<u32>,
    /// Loss above this ratio fails the run.
    pub max_loss: f64,
    /// Longest wait for media to flow before the window opens.
    pub settle: Duration,
    pub progress: bool,
    /// Of the sampled packets, check all payload bytes of every n-th.
    pub verify_every: u64,
    /// Decrypt and check one packet pair in this many per slot (1: every packet).
    pub sample_every: u64,
    /// What the participants show.
    pub layout: BenchLayout,
    /// Publishers stop and restart layers as the server asks.
    pub honour_send_layers: bool,
    /// Cameras send three temporal layers, as browsers do.
    pub temporal_layers: bool,
    /// Silent microphones use Opus DTX where the server asks for it, as browsers do.
    pub dtx: bool,
    /// Prefix of room names (runs against a shared server do not collide).
    pub room_prefix: String,
    /// The room's exact name (one room) or prefix (several: NAME-0, NAME-1, …), so a person
    /// can open the loaded meeting in a browser.
    pub room: Option<String>,
    /// Publishers join by WHIP instead of the WebSocket (fanout, webinar).
    pub whip: bool,
    /// Viewers join by WHEP instead of the WebSocket (fanout, webinar).
    pub whep: bool,
    /// ting's control API key: WHIP and WHEP need a defined room and a token each.
    pub api_key: Option<String>,
    /// Participants join with an end-to-end encryption announcement, hand each other
    /// sealed keys through the server as browsers do, and send E2EE-shaped frames.
    pub e2ee: bool,
}

impl BenchOptions {
    pub fn new(scenario: Scenario, target: Target) -> BenchOptions {
        BenchOptions {
            scenario,
            target,
            participants: 10,
            rooms: 1,
            publishers: 3,
            duration: Duration::from_secs(30),
            ramp: 10.0,
            concurrency: 8,
            speaking: 0.1,
            simulcast: true,
            screen: false,
            audio_slots: 3,
            video_slots: 9,
            threads: 1,
            local_ip: IpAddr::from([127, 0, 0, 1]),
            server_pid: None,
            max_loss: 0.01,
            settle: Duration::from_secs(15),
            progress: true,
            verify_every: 16,
            sample_every: 8,
            layout: BenchLayout::Speaker,
            honour_send_layers: true,
            temporal_layers: true,
            dtx: true,
            room_prefix: format!("bench-{}", std::process::id()),
            room: None,
            whip: false,
            whep: false,
            api_key: None,
            e2ee: false,
        }
    }

    fn video_bps(&self) -> Vec<u32> {
        if self.simulcast {
            vec![150_000, 500_000, 1_500_000]
        } else {
            vec![500_000]
        }
    }

    /// The participants of room `room`, publishers first.
    pub fn plan(&self, room: usize) -> Vec<SimPeerConfig> {
        let n = self.participants;
        let base = (room as u32) * 100_000 + 1;
        let mut out = Vec::new();
        let cfg = |i: usize| {
            let mut c = SimPeerConfig::new(base + i as u32);
            c.verify_every = self.verify_every;
            c.sample_every = self.sample_every.max(1);
            c.honour_send_layers = self.honour_send_layers;
            c.temporal_layers = self.temporal_layers;
            c.dtx = self.dtx;
            c.e2ee = self.e2ee;
            c.audio_slots = 0;
            c.video_slots = 0;
            c.screen_slots = 0;
            c.audio = false;
            c.video_bps = Vec::new();
            c
        };
        let publishers = match self.scenario {
            Scenario::Fanout => 1,
            Scenario::Meeting | Scenario::Audio => n,
            Scenario::Webinar => self.publishers.min(n),
        };
        let speakers = ((self.speaking * publishers as f64).ceil() as usize).min(publishers);
        let total = match self.scenario {
            Scenario::Fanout => n + 1,
            _ => n,
        };
        for i in 0..total {
            let mut c = cfg(i);
            let publishes = i < publishers;
            if publishes {
                c.audio = true;
                c.speaking = i < speakers;
                if self.scenario != Scenario::Audio {
                    c.video_bps = self.video_bps();
                }
                if self.screen && i == 0 && self.scenario != Scenario::Audio {
                    c.screen_bps = Some(1_000_000);
                }
            }
            let others = publishers - usize::from(publishes);
            match self.scenario {
                Scenario::Fanout => {
                    if !publishes {
                        c.audio_slots = 1;
                        c.video_slots = 1;
                    }
                }
                Scenario::Meeting | Scenario::Webinar => {
                    c.audio_slots = self.audio_slots.min(others as u16);
                    c.video_slots = self.video_slots.min(others as u16);
                    c.layout = self.layout;
                }
                Scenario::Audio => c.audio_slots = self.audio_slots.min(others as u16),
            }
            if self.screen && i != 0 && self.scenario != Scenario::Audio {
                c.screen_slots = 1;
            }
            if publishes && self.whip {
                // A WHIP session only publishes.
                c.audio_slots = 0;
                c.video_slots = 0;
                c.screen_slots = 0;
            } else if !publishes && self.whep {
                // One audio and one camera slot: the loudest and the active speaker.
                c.audio_slots = 1;
                c.video_slots = 1;
                c.layout = BenchLayout::None;
            }
            out.push(c);
        }
        out
    }
}

/// A joined participant, kept alive for the run.
pub struct Joined {
    pub id: u32,
    pub join_time: Duration,
    pub keep: Box<dyn Send>,
}

impl std::fmt::Debug for Joined {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Joined").field("id", &self.id).finish()
    }
}

/// Joins `plan` to `room` on a ting server at the ramp rate.
async fn join_ting(
    opts: &BenchOptions,
    ws: &str,
    room: &str,
    plan: Vec<SimPeerConfig>,
    drivers: &[DriverHandle],
    start: Instant,
    offset: usize,
) -> Vec<Result<Joined, String>> {
    let gate = Arc::new(Semaphore::new(opts.concurrency.max(1)));
    let mut tasks = Vec::new();
    // WHIP and WHEP join only rooms that are on or defined, with a token each.
    let base = ws
        .replacen("ws://", "http://", 1)
        .trim_end_matches("/ws")
        .to_owned();
    let api_key = opts.api_key.clone().unwrap_or_default();
    if (opts.whip || opts.whep)
        && let Err(e) = crate::whip::define_room(&base, &api_key, room).await
    {
        let why = format!("cannot define the room for WHIP/WHEP: {e}");
        return plan.iter().map(|_| Err(why.clone())).collect();
    }
    for (i, cfg) in plan.into_iter().enumerate() {
        let publishes = cfg.audio || !cfg.video_bps.is_empty();
        let by_http = match (publishes, opts.whip, opts.whep) {
            (true, true, _) => Some(crate::whip::HttpJoin::Whip),
            (false, _, true) => Some(crate::whip::HttpJoin::Whep),
            _ => None,
        };
        if let Some(join) = by_http {
            let at = start + Duration::from_secs_f64((offset + i) as f64 / opts.ramp.max(0.01));
            let driver = drivers[(offset + i) % drivers.len()].sender();
            let (base, room, key, ip, gate) = (
                base.clone(),
                room.to_owned(),
                api_key.clone(),
                opts.local_ip,
                gate.clone(),
            );
            tasks.push(tokio::spawn(async move {
                tokio::time::sleep_until(at.into()).await;
                let _permit = gate.acquire_owned().await;
                let id = cfg.id;
                let name = format!("sim-{id}");
                let token = crate::whip::issue_token(&base, &key, &room, &name)
                    .await
                    .map_err(|e| crate::error_chain(&e))?;
                crate::whip::join_http(join, &base, &room, &token, cfg, ip, driver)
                    .await
                    .map(|p| Joined {
                        id,
                        join_time: p.join_time,
                        keep: Box::new(p),
                    })
                    .map_err(|e| crate::error_chain(&e))
            }));
            continue;
        }
        let at = start + Duration::from_secs_f64((offset + i) as f64 / opts.ramp.max(0.01));
        let driver = drivers[(offset + i) % drivers.len()].sender();
        let (ws, room, ip, gate) = (ws.to_owned(), room.to_owned(), opts.local_ip, gate.clone());
        tasks.push(tokio::spawn(async move {
            tokio::time::sleep_until(at.into()).await;
            let _permit = gate.acquire_owned().await;
            let id = cfg.id;
            join_peer(&ws, &room, cfg, ip, driver)
                .await
                .map(|p| Joined {
                    id,
                    join_time: p.join_time,
                    keep: Box::new(p),
                })
                .map_err(|e| crate::error_chain(&e))
        }));
    }
    let mut out = Vec::new();
    for t in tasks {
        out.push(
            t.await
                .unwrap_or_else(|e| Err(format!("join task failed: {e}"))),
        );
    }
    out
}

fn merged(drivers: &[DriverHandle]) -> DriverSnapshot {
    let mut all = DriverSnapshot::default();
    for d in drivers {
        let s = d.full_snapshot();
        all.peers.extend(s.peers);
        all.latency.merge(&s.latency);
        all.cpu_ns += s.cpu_ns;
    }
    all
}

/// Every driver's [`DriverTally`], summed.
fn tallied(drivers: &[DriverHandle]) -> DriverTally {
    let mut all = DriverTally::default();
    for d in drivers {
        all.merge(d.tally());
    }
    all
}

fn progress_line(elapsed: f64, total: f64, joined: usize, point: &Point) -> String {
    let width = 24;
    let done = ((elapsed / total.max(1e-6)) * width as f64).round() as usize;
    format!(
        "{:>4.0}/{:.0} s [{}{}] {} joined | rx {} pkt/s {:.1} Mbit/s | loss {:.2} % | p99 {:.2} ms | server {:.0} %",
        elapsed,
        total,
        "#".repeat(done.min(width)),
        "-".repeat(width - done.min(width)),
        joined,
        report::human(point.received_pps),
        point.received_mbps,
        point.loss_ratio * 100.0,
        point.latency_p99_ms,
        point.server_cpu_percent
    )
}

/// Runs a load test and returns its report (the caller prints and writes it).
pub async fn run(opts: BenchOptions) -> Report {
    let mut report = Report {
        scenario: format!("{:?}", opts.scenario).to_lowercase(),
        target: opts.target.describe(),
        rooms: opts.rooms,
        participants_per_room: opts.participants,
        duration_s: opts.duration.as_secs_f64(),
        options: serde_json::json!({
            "publishers": opts.publishers,
            "ramp_per_s": opts.ramp,
            "speaking": opts.speaking,
            "simulcast": opts.simulcast,
            "screen": opts.screen,
            "audio_slots": opts.audio_slots,
            "video_slots": opts.video_slots,
            "threads": opts.threads,
            "max_loss": opts.max_loss,
            "layout": opts.layout,
            "sample_every": opts.sample_every,
            "honour_send_layers": opts.honour_send_layers,
            "temporal_layers": opts.temporal_layers,
            "dtx": opts.dtx,
            "whip": opts.whip,
            "whep": opts.whep,
            "e2ee": opts.e2ee,
        }),
        sample_every: opts.sample_every,
        ..Default::default()
    };
    let drivers: Vec<DriverHandle> = match (0..opts.threads.max(1))
        .map(|i| DriverHandle::spawn(&format!("bench-driver-{i}")))
        .collect()
    {
        Ok(d) => d,
        Err(e) => {
            report
                .failures
                .push(format!("cannot start driver threads: {e}"));
            return report;
        }
    };
    let probe = match (&opts.target, opts.server_pid) {
        (Target::Ting { metrics, .. }, Some(pid)) => Some(ServerProbe::Both {
            metrics: metrics.clone(),
            pid,
        }),
        (_, Some(pid)) => Some(ServerProbe::Proc(pid)),
        (Target::Ting { metrics, .. }, None) => Some(ServerProbe::Metrics(metrics.clone())),
        (Target::Janus { .. }, None) => None,
    };
    let tty = opts.progress && std::io::stderr().is_terminal();

    // Join.
    let start = Instant::now();
    let mut results = Vec::new();
    let mut offset = 0;
    for r in 0..opts.rooms {
        let room = match (&opts.room, opts.rooms) {
            (Some(name), 1) => name.clone(),
            (Some(name), _) => format!("{name}-{r}"),
            (None, _) => format!("{}-{r}", opts.room_prefix),
        };
        let plan = opts.plan(r);
        let n = plan.len();
        let joined = match &opts.target {
            Target::Ting { ws, .. } => {
                join_ting(&opts, ws, &room, plan, &drivers, start, offset).await
            }
            Target::Janus { api } => {
                crate::janus::join_room(&opts, api, r, plan, &drivers, start, offset).await
            }
        };
        offset += n;
        results.extend(joined);
    }
    let mut keep = Vec::new();
    let mut join_ms = Vec::new();
    let mut errors: Vec<String> = Vec::new();
    for r in results {
        match r {
            Ok(j) => {
                join_ms.push(j.join_time.as_secs_f64() * 1000.0);
                keep.push(j);
            }
            Err(e) => {
                if !errors.contains(&e) && errors.len() < 5 {
                    errors.push(e);
                }
                report.joins.failed += 1;
            }
        }
    }
    report.joins.attempted = offset;
    report.joins.succeeded = keep.len();
    report.joins.errors = errors;
    report.joins.join_ms = Percentiles::of_values(&join_ms);
    if opts.progress {
        eprintln!(
            "joined {}/{} in {:.1} s",
            keep.len(),
            offset,
            start.elapsed().as_secs_f64()
        );
    }

    if keep.is_empty() {
        report.failures.push(format!(
            "no participant could join: {}",
            report.joins.errors.first().cloned().unwrap_or_default()
        ));
        for d in drivers {
            let _ = d.stop();
        }
        return report;
    }

    // Settle: until every joined participant that receives got media, or the settle time.
    let wants_media = |p: &PeerStats| !p.slots.is_empty();
    let settle_until = Instant::now() + opts.settle;
    loop {
        let snap = merged(&drivers);
        let waiting = snap
            .peers
            .iter()
            .filter(|p| wants_media(p) && p.first_media_after_ms.is_none())
            .count();
        if waiting == 0 || Instant::now() >= settle_until {
            break;
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    }

    // Measure.
    let harness0 = own_cpu();
    let server0: Option<ServerSample> = match &probe {
        Some(p) => p.sample().await,
        None => None,
    };
    let snap0 = merged(&drivers);
    let totals0 = Totals::of(&snap0.peers);
    let marks0 = LossMarks::of(&snap0.peers);
    let window_start = Instant::now();
    let mut prev = (
        window_start,
        totals0,
        snap0.latency.clone(),
        server0.clone(),
        marks0.clone(),
    );
    while window_start.elapsed() < opts.duration {
        let next = prev.0 + Duration::from_secs(1);
        tokio::time::sleep_until(next.min(window_start + opts.duration).into()).await;
        let now = Instant::now();
        let tally = tallied(&drivers);
        let server = match &probe {
            Some(p) => p.sample().await,
            None => None,
        };
        let cpu = match (&server, &prev.3) {
            (Some(a), Some(b)) => Some(a.cpu_seconds - b.cpu_seconds),
            _ => None,
        };
        let point = Point::between(
            now.duration_since(window_start).as_secs_f64(),
            now.duration_since(prev.0).as_secs_f64(),
            &tally
                .totals
                .since(&prev.1)
                .with_loss_between(&tally.marks, &prev.4),
            &tally.latency.since(&prev.2),
            cpu,
        );
        if opts.progress {
            let line = progress_line(
                point.t,
                opts.duration.as_secs_f64(),
                report.joins.succeeded,
                &point,
            );
            if tty {
                eprint!("\r{line}");
                let _ = std::io::stderr().flush();
            } else if report.series.len() % 5 == 4 {
                eprintln!("{line}");
            }
        }
        report.series.push(point);
        prev = (now, tally.totals, tally.latency, server, tally.marks);
    }
    if tty {
        eprintln!();
    }
    let window = prev.0.duration_since(window_start).as_secs_f64();
    report.duration_s = window;
    let snap_end = merged(&drivers);
    let totals = Totals::of(&snap_end.peers)
        .since(&totals0)
        .with_window_loss(&snap_end.peers, &marks0);
    report.window = totals;
    (
        report.camera_publishers,
        report.camera_layers_sending_at_end,
    ) = report::camera_layer_senders(&snap_end.peers);
    report.loss_ratio = totals.loss_ratio();
    report.latency_ms = Percentiles::of_histogram(&snap_end.latency.since(&snap0.latency));
    let harness_cpu = own_cpu().since(harness0);
    let harness = harness_cpu.total();
    report.harness_cpu_seconds = harness;
    report.harness_kernel_cpu_seconds = harness_cpu.kernel;
    report.harness_cpu_percent = harness / window.max(1e-6) * 100.0;
    report.harness_cpu_us_per_received_packet =
        (totals.received() > 0).then(|| harness * 1e6 / totals.received() as f64);
    let server_end = prev.3.clone();
    let server_cpu = match (&server_end, &server0) {
        (Some(a), Some(b)) => {
            let cpu = a.cpu_seconds - b.cpu_seconds;
            let window_of = |end: &[(f64, u64)], start: &[(f64, u64)]| {
                (!end.is_empty()).then(|| {
                    let d = report::bucket_delta(end, start);
                    Percentiles {
                        p50: report::bucket_quantile_ms(&d, 0.50).unwrap_or(0.0),
                        p95: report::bucket_quantile_ms(&d, 0.95).unwrap_or(0.0),
                        p99: report::bucket_quantile_ms(&d, 0.99).unwrap_or(0.0),
                        max: report::bucket_quantile_ms(&d, 1.0).unwrap_or(0.0),
                        mean: 0.0,
                    }
                })
            };
            let internal = window_of(&a.internal_latency, &b.internal_latency);
            let internal_audio = window_of(&a.internal_audio_latency, &b.internal_audio_latency);
            report.server = Some(ServerFigures {
                cpu_seconds: cpu,
                cpu_percent: cpu / window.max(1e-6) * 100.0,
                rss_start_bytes: b.rss_bytes,
                rss_end_bytes: a.rss_bytes,
                forwarded_packets: a
                    .forwarded
                    .zip(b.forwarded)
                    .map(|(x, y)| x.saturating_sub(y)),
                internal_latency_ms: internal,
                internal_audio_latency_ms: internal_audio,
                passes_per_second: report::passes_per_second(&a.ticks, &b.ticks, window),
                load_sheds: a
                    .load_sheds
                    .map(|end| end.saturating_sub(b.load_sheds.unwrap_or(0))),
                shedding_workers_at_end: a.shedding_workers,
                receive_wait_ms: window_of(&a.receive_wait, &b.receive_wait),
                receive_buffer_drops: a
                    .receive_buffer_drops
                    .map(|end| end.saturating_sub(b.receive_buffer_drops.unwrap_or(0))),
            });
            Some(cpu)
        }
        _ => None,
    };
    report.headline = Headline::compute(&totals, window, server_cpu);

    // Join figures that need the final statistics.
    let first_media: Vec<f64> = snap_end
        .peers
        .iter()
        .filter_map(|p| p.first_media_after_ms.map(|m| m as f64))
        .collect();
    report.joins.first_media_ms = Percentiles::of_values(&first_media);
    let first_video: Vec<f64> = snap_end
        .peers
        .iter()
        .filter_map(|p| p.first_video_after_ms.map(|m| m as f64))
        .collect();
    report.joins.first_video_ms = Percentiles::of_values(&first_video);
    // Ids grow with join order within a room; the last joiner of the last room.
    let last_joiner = snap_end
        .peers
        .iter()
        .filter(|p| p.slots.iter().any(|s| s.kind == "video"))
        .max_by_key(|p| p.id);
    report.joins.last_joiner_first_video_ms = last_joiner.and_then(|p| p.first_video_after_ms);
    report.joins.last_joiner_speaker_ms = last_joiner.and_then(|p| p.speaker_known_after_ms);
    report.joins.without_media = snap_end
        .peers
        .iter()
        .filter(|p| wants_media(p) && p.first_media_after_ms.is_none())
        .count();

    if report.joins.failed > 0 {
        report.failures.push(format!(
            "{} of {} joins failed: {}",
            report.joins.failed,
            report.joins.attempted,
            report.joins.errors.first().cloned().unwrap_or_default()
        ));
    }
    if report.joins.without_media > 0 {
        report.failures.push(format!(
            "{} participants received no media",
            report.joins.without_media
        ));
    }
    if report.loss_ratio > opts.max_loss {
        report.failures.push(format!(
            "loss {:.3} % is above the limit of {:.3} %",
            report.loss_ratio * 100.0,
            opts.max_loss * 100.0
        ));
    }
    if totals.received() == 0 && report.joins.succeeded > 0 {
        report
            .failures
            .push("no media was received in the window".into());
    }
    drop(keep);
    for d in drivers {
        let _ = d.stop();
    }
    report
}

#[cfg(test)]
mod tests {
    use super::*;

    fn opts(s: Scenario, n: usize) -> BenchOptions {
        let mut o = BenchOptions::new(s, Target::parse("http://127.0.0.1:1").unwrap());
        o.participants = n;
        o
    }

    #[test]
    fn targets_parse() {
        assert_eq!(
            Target::parse("http://127.0.0.1:8080").unwrap(),
            Target::Ting {
                ws: "ws://127.0.0.1:8080/ws".into(),
                metrics: "http://127.0.0.1:8080/metrics".into()
            }
        );
        assert_eq!(
            Target::parse("ws://h:1/ws").unwrap(),
            Target::Ting {
                ws: "ws://h:1/ws".into(),
                metrics: "http://h:1/metrics".into()
            }
        );
        assert_eq!(
            Target::parse("janus://127.0.0.2:8088").unwrap(),
            Target::Janus {
                api: "http://127.0.0.2:8088/janus".into()
            }
        );
        assert!(Target::parse("ftp://x").is_err());
        assert!(Target::parse("http://").is_err());
    }

    #[test]
    fn fanout_is_one_publisher_and_n_receivers() {
        let plan = opts(Scenario::Fanout, 50).plan(0);
        assert_eq!(plan.len(), 51);
        assert!(plan[0].audio && plan[0].video_bps.len() == 3 && plan[0].speaking);
        assert_eq!((plan[0].audio_slots, plan[0].video_slots), (0, 0));
        for c in &plan[1..] {
            assert!(!c.audio && c.video_bps.is_empty());
            assert_eq!((c.audio_slots, c.video_slots), (1, 1));
        }
        let ids: std::collections::HashSet<u32> = plan.iter().map(|c| c.id).collect();
        assert_eq!(ids.len(), 51);
    }

    #[test]
    fn meeting_shows_what_a_client_shows() {
        let plan = opts(Scenario::Meeting, 20).plan(3);
        assert_eq!(plan.len(), 20);
        assert!(plan.iter().all(|c| c.audio && c.video_bps.len() == 3));
        assert!(
            plan.iter()
                .all(|c| c.audio_slots == 3 && c.video_slots == 9)
        );
        assert_eq!(plan.iter().filter(|c| c.speaking).count(), 2, "10 % speak");
        assert!(
            plan.iter().all(|c| c.id > 300_000),
            "ids differ between rooms"
        );
        let small = opts(Scenario::Meeting, 3).plan(0);
        assert!(
            small
                .iter()
                .all(|c| c.video_slots == 2 && c.audio_slots == 2)
        );
    }

    #[test]
    fn webinar_and_audio_plans() {
        let mut o = opts(Scenario::Webinar, 10);
        o.publishers = 2;
        o.screen = true;
        let plan = o.plan(0);
        assert_eq!(plan.iter().filter(|c| c.audio).count(), 2);
        assert_eq!(plan[0].screen_bps, Some(1_000_000));
        assert_eq!((plan[5].video_slots, plan[5].screen_slots), (2, 1));
        assert_eq!(plan[1].video_slots, 1, "a panelist sees the other");
        let audio = opts(Scenario::Audio, 4).plan(0);
        assert!(
            audio
                .iter()
                .all(|c| c.video_bps.is_empty() && c.audio_slots == 3)
        );
    }
}
