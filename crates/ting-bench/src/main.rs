//! `ting-bench`: load tests with simulated participants against a running ting (or Janus).
//!
//! ```text
//! ting-bench fanout --participants 50 --duration 30 --target http://127.0.0.1:8080
//! ting-bench meeting --participants 20 --json report.json --plot report.svg
//! ting-bench fanout --target janus://127.0.0.2:8088 --local-ip 127.0.0.3 --server-pid 1234
//! ```
//!
//! Exits 0 when the run passed, 1 when joins failed, a participant got no media or loss
//! was above `--max-loss`, 2 when it could not run at all.

use std::net::IpAddr;
use std::path::PathBuf;
use std::time::Duration;

use anyhow::Context;
use clap::Parser;
use ting_bench::peer::BenchLayout;
use ting_bench::plot;
use ting_bench::run::{BenchOptions, Scenario, Target, run};

/// Load-test a ting server with simulated participants (real WebRTC over UDP).
#[derive(Debug, Parser)]
#[command(version)]
struct Cli {
    /// What the participants do.
    #[arg(value_enum)]
    scenario: Scenario,
    /// The server: http://host:port for ting, janus://host:port[/path] for Janus VideoRoom.
    #[arg(
        long,
        default_value = "http://127.0.0.1:8080",
        env = "TING_BENCH_TARGET"
    )]
    target: String,
    /// Participants per room (fanout: receivers, besides the one publisher).
    #[arg(long, short = 'n', default_value_t = 10)]
    participants: usize,
    /// Rooms, each with --participants.
    #[arg(long, default_value_t = 1)]
    rooms: usize,
    /// Publishers per room in the webinar scenario.
    #[arg(long, default_value_t = 3)]
    publishers: usize,
    /// Seconds to measure, after everyone joined and media flows.
    #[arg(long, default_value_t = 30.0)]
    duration: f64,
    /// Joins started per second (DTLS handshakes are expensive; a burst can starve the server).
    #[arg(long, default_value_t = 10.0)]
    ramp: f64,
    /// Share of publishers whose audio is "speaking".
    #[arg(long, default_value_t = 0.1)]
    speaking: f64,
    /// Publish one video layer instead of three simulcast layers (150/500/1500 kbit/s).
    #[arg(long)]
    no_simulcast: bool,
    /// The first participant also shares a screen; others get a screen slot.
    #[arg(long)]
    screen: bool,
    /// Audio slots per receiving participant.
    #[arg(long, default_value_t = 3)]
    audio_slots: u16,
    /// Camera slots per receiving participant (meeting, webinar); a grid page needs 25.
    #[arg(long, default_value_t = 25)]
    video_slots: u16,
    /// What each participant shows (meeting, webinar): the active speaker large and nine
    /// thumbnails, a 5x5 grid page of the first 25 who joined, or no layout at all.
    #[arg(long, value_enum, default_value_t = BenchLayout::Speaker)]
    layout: BenchLayout,
    /// Publishers keep sending every layer even when the server says nobody watches it
    /// (to measure what pausing saves).
    #[arg(long)]
    no_pause: bool,
    /// Cameras send every frame in temporal layer 0 instead of three temporal layers as
    /// browsers do (to measure what thinning thumbnails to half the frame rate saves).
    #[arg(long)]
    no_temporal: bool,
    /// Silent participants send audio 50 times a second even where the server asks for
    /// Opus DTX (to measure what DTX saves).
    #[arg(long)]
    no_dtx: bool,
    /// The room's name (a prefix with --rooms > 1), so a person can open the loaded
    /// meeting in a browser at /m/NAME. Default: a name unique to this run.
    #[arg(long)]
    room: Option<String>,
    /// Client threads; each carries many participants.
    #[arg(long, default_value_t = 1)]
    threads: usize,
    /// Local address the participants' UDP sockets bind to. With 127.0.0.1 up to 64
    /// participants share a socket, each at an address of its own in 127.16.0.0/12 (one
    /// system call reads or sends for many); any other address gives each its own socket.
    #[arg(long, default_value = "127.0.0.1")]
    local_ip: IpAddr,
    /// Read the server's CPU and memory from /proc/PID (needed for non-ting targets).
    #[arg(long)]
    server_pid: Option<u32>,
    /// Fail (exit 1) when more than this percentage of packets is lost.
    #[arg(long, default_value_t = 1.0)]
    max_loss: f64,
    /// Longest wait, in seconds, for media to reach everyone before measuring.
    #[arg(long, default_value_t = 15.0)]
    settle: f64,
    /// Of the decrypted packets, check every payload byte of one in this many (1: all).
    #[arg(long, default_value_t = 16)]
    verify_every: u64,
    /// Decrypt and check a pair of consecutive packets once in this many per slot (1: all
    /// of them). Every packet is always counted from its RTP header, which is in clear.
    #[arg(long, default_value_t = 8)]
    sample_every: u64,
    /// Write the full report as JSON.
    #[arg(long)]
    json: Option<PathBuf>,
    /// Write an SVG plot of throughput, loss, latency and server CPU over time.
    #[arg(long)]
    plot: Option<PathBuf>,
    /// No progress output.
    #[arg(long, short = 'q')]
    quiet: bool,
    /// Publishers join by WHIP (fanout, webinar): needs --api-key.
    #[arg(long)]
    whip: bool,
    /// Viewers join by WHEP (fanout, webinar): needs --api-key.
    #[arg(long)]
    whep: bool,
    /// End-to-end encryption as browsers do it: participants join with an announcement,
    /// hand each other sealed keys through the server, and send E2EE-shaped frames (clear
    /// codec prefix, SFrame header, opaque body, tag). ting only.
    #[arg(long)]
    e2ee: bool,
    /// ting's control API key (api.key), with which WHIP and WHEP runs define their room
    /// and get a token for each participant.
    /// A random key may start with '-'; it is still taken as the value.
    #[arg(long, env = "TING_BENCH_API_KEY", allow_hyphen_values = true)]
    api_key: Option<String>,
}

fn main() {
    match real_main() {
        Ok(true) => {}
        Ok(false) => std::process::exit(1),
        Err(e) => {
            eprintln!("ting-bench: {e:#}");
            std::process::exit(2);
        }
    }
}

fn real_main() -> anyhow::Result<bool> {
    let cli = Cli::parse();
    // Library logs (str0m, its DTLS) on stderr; RUST_LOG=dimpl=debug shows, for example,
    // the SRTP profile each connection negotiated.
    let filter = std::env::var("RUST_LOG").unwrap_or_else(|_| "warn".into());
    let _ = tracing_subscriber::fmt()
        .with_writer(std::io::stderr)
        .with_ansi(false)
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_new(&filter)
                .with_context(|| format!("RUST_LOG={filter:?} is not a valid filter"))?,
        )
        .try_init();
    let target = Target::parse(&cli.target).map_err(anyhow::Error::msg)?;
    if let Some(p) = &cli.plot
        && p.extension().and_then(|e| e.to_str()) != Some("svg")
    {
        anyhow::bail!("--plot {}: only .svg plots are written", p.display());
    }
    if cli.participants == 0 || cli.rooms == 0 {
        anyhow::bail!("--participants and --rooms must be at least 1");
    }
    if !(0.0..=1.0).contains(&cli.speaking) {
        anyhow::bail!("--speaking is a share between 0 and 1");
    }
    let mut opts = BenchOptions::new(cli.scenario, target);
    opts.participants = cli.participants;
    opts.rooms = cli.rooms;
    opts.publishers = cli.publishers.max(1);
    opts.duration = Duration::from_secs_f64(cli.duration.max(1.0));
    opts.ramp = cli.ramp.max(0.1);
    opts.speaking = cli.speaking;
    opts.simulcast = !cli.no_simulcast;
    opts.screen = cli.screen;
    opts.audio_slots = cli.audio_slots;
    opts.video_slots = cli.video_slots;
    opts.threads = cli.threads.max(1);
    opts.local_ip = cli.local_ip;
    opts.server_pid = cli.server_pid;
    opts.max_loss = cli.max_loss / 100.0;
    opts.settle = Duration::from_secs_f64(cli.settle.max(0.0));
    opts.progress = !cli.quiet;
    opts.verify_every = cli.verify_every.max(1);
    opts.sample_every = cli.sample_every.max(1);
    opts.layout = cli.layout;
    opts.honour_send_layers = !cli.no_pause;
    opts.temporal_layers = !cli.no_temporal;
    opts.dtx = !cli.no_dtx;
    if cli.whip || cli.whep {
        if !matches!(cli.scenario, Scenario::Fanout | Scenario::Webinar) {
            anyhow::bail!(
                "--whip and --whep are for fanout and webinar: a WHIP session only publishes \
                 and a WHEP session only watches"
            );
        }
        if !matches!(opts.target, Target::Ting { .. }) {
            anyhow::bail!("--whip and --whep need a ting target");
        }
        if cli.api_key.as_deref().is_none_or(str::is_empty) {
            anyhow::bail!(
                "--whip and --whep need --api-key (ting's api.key): the run defines its room \
                 and gets a token per participant through the control API"
            );
        }
    }
    if cli.e2ee && (cli.whip || cli.whep) {
        anyhow::bail!("--e2ee cannot go with --whip or --whep: WHIP and WHEP carry plain frames");
    }
    if cli.e2ee && !matches!(opts.target, Target::Ting { .. }) {
        anyhow::bail!("--e2ee needs a ting target: other servers do not relay ting's keys");
    }
    opts.e2ee = cli.e2ee;
    opts.whip = cli.whip;
    opts.whep = cli.whep;
    opts.api_key = cli.api_key.clone();
    if let Some(room) = &cli.room {
        let valid = !room.is_empty()
            && room.len() <= 60
            && room
                .chars()
                .all(|c| c.is_ascii_alphanumeric() || c == '-' || c == '_');
        if !valid {
            anyhow::bail!("--room {room:?}: use 1 to 60 letters, digits, - or _");
        }
        opts.room = Some(room.clone());
    }

    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(1)
        .enable_all()
        .build()
        .context("cannot start the async runtime")?;
    let report = runtime.block_on(run(opts));
    eprint!("{}", report.summary());
    if let Some(path) = &cli.json {
        let text = serde_json::to_string_pretty(&report).context("report to JSON")?;
        std::fs::write(path, text).with_context(|| format!("writing {}", path.display()))?;
        eprintln!("report written to {}", path.display());
    }
    if let Some(path) = &cli.plot {
        std::fs::write(path, plot::svg(&report))
            .with_context(|| format!("writing {}", path.display()))?;
        eprintln!("plot written to {}", path.display());
    }
    Ok(report.failures.is_empty())
}
