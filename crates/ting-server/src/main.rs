//! `ting`: run the server. `ting --help` lists every setting.

use std::path::PathBuf;

use anyhow::Context;
use clap::Parser;
use ting_server::{Config, Override, Server};

/// ting, a selective forwarding unit for encrypted meetings.
///
/// Settings come from the built-in defaults (config/ting.toml), then --config FILE, then
/// TING_* environment variables, then these flags.
#[derive(Debug, Parser)]
#[command(version)]
struct Cli {
    /// A TOML file with the settings to change (any subset of config/ting.toml).
    #[arg(long, env = "TING_CONFIG")]
    config: Option<PathBuf>,
    /// Print the effective configuration and exit.
    #[arg(long)]
    print_config: bool,
    /// The room whose link is printed at start.
    #[arg(long, default_value = "demo")]
    room: String,
    /// Print the tag the audit log uses for ROOM (derived from tokens.secret) and exit.
    #[arg(long, value_name = "ROOM")]
    audit_tag: Option<String>,

    /// http.listen: address and port of the web server.
    #[arg(long, env = "TING_HTTP_LISTEN")]
    http_listen: Option<String>,
    /// http.public_url: the URL people use to reach this server.
    #[arg(long, env = "TING_HTTP_PUBLIC_URL")]
    http_public_url: Option<String>,
    /// http.allow_plain_http: serve plain HTTP beyond loopback (behind a TLS proxy elsewhere).
    #[arg(long, env = "TING_HTTP_ALLOW_PLAIN_HTTP")]
    http_allow_plain_http: Option<String>,
    /// http.tls.cert_file: the certificate chain (PEM) to serve HTTPS with.
    #[arg(long, env = "TING_HTTP_TLS_CERT_FILE")]
    http_tls_cert_file: Option<String>,
    /// http.tls.key_file: its private key (PEM).
    #[arg(long, env = "TING_HTTP_TLS_KEY_FILE")]
    http_tls_key_file: Option<String>,
    /// http.tls.self_signed: serve HTTPS with a self-signed development certificate.
    #[arg(long, env = "TING_HTTP_TLS_SELF_SIGNED")]
    http_tls_self_signed: Option<String>,
    /// http.tls.self_signed_names: names of the development certificate, as a TOML list.
    #[arg(long, env = "TING_HTTP_TLS_SELF_SIGNED_NAMES")]
    http_tls_self_signed_names: Option<String>,
    /// media.bind_ip: local address of the UDP media sockets.
    #[arg(long, env = "TING_MEDIA_BIND_IP")]
    media_bind_ip: Option<String>,
    /// media.port: first UDP media port (worker i uses port + i; 0 = any).
    #[arg(long, env = "TING_MEDIA_PORT")]
    media_port: Option<String>,
    /// media.advertise_ip: the IP browsers send media to.
    #[arg(long, env = "TING_MEDIA_ADVERTISE_IP")]
    media_advertise_ip: Option<String>,
    /// media.workers: media worker threads (0 = one per core).
    #[arg(long, env = "TING_MEDIA_WORKERS")]
    media_workers: Option<String>,
    /// media.socket_buffer_bytes: kernel buffer per media socket.
    #[arg(long, env = "TING_MEDIA_SOCKET_BUFFER_BYTES")]
    media_socket_buffer_bytes: Option<String>,
    /// media.spread_rooms_above: rooms larger than this spread over the workers.
    #[arg(long, env = "TING_MEDIA_SPREAD_ROOMS_ABOVE")]
    media_spread_rooms_above: Option<String>,
    /// media.bandwidth_estimation: choose layers by each client's estimated downlink.
    #[arg(long, env = "TING_MEDIA_BANDWIDTH_ESTIMATION")]
    media_bandwidth_estimation: Option<String>,
    /// media.opus_dtx: ask browsers not to send audio while their microphone is silent.
    #[arg(long, env = "TING_MEDIA_OPUS_DTX")]
    media_opus_dtx: Option<String>,
    /// media.thumbnail_temporal_layers: VP8 temporal layers a thumbnail gets (1, 2 or 3).
    #[arg(long, env = "TING_MEDIA_THUMBNAIL_TEMPORAL_LAYERS")]
    media_thumbnail_temporal_layers: Option<String>,
    /// media.load_shedding: thumbnails get fewer frames while a worker's core is full.
    #[arg(long, env = "TING_MEDIA_LOAD_SHEDDING")]
    media_load_shedding: Option<String>,
    /// limits.max_rooms: rooms open at once.
    #[arg(long, env = "TING_LIMITS_MAX_ROOMS")]
    limits_max_rooms: Option<String>,
    /// limits.max_participants_per_room: people in one room.
    #[arg(long, env = "TING_LIMITS_MAX_PARTICIPANTS_PER_ROOM")]
    limits_max_participants_per_room: Option<String>,
    /// limits.max_message_bytes: largest signalling message read.
    #[arg(long, env = "TING_LIMITS_MAX_MESSAGE_BYTES")]
    limits_max_message_bytes: Option<String>,
    /// limits.participant_timeout_secs: silence after which a participant is removed.
    #[arg(long, env = "TING_LIMITS_PARTICIPANT_TIMEOUT_SECS")]
    limits_participant_timeout_secs: Option<String>,
    /// limits.ping_interval_secs: how often clients are told to ping.
    #[arg(long, env = "TING_LIMITS_PING_INTERVAL_SECS")]
    limits_ping_interval_secs: Option<String>,
    /// limits.join_timeout_secs: a WebSocket must send join within this many seconds.
    #[arg(long, env = "TING_LIMITS_JOIN_TIMEOUT_SECS")]
    limits_join_timeout_secs: Option<String>,
    /// limits.http_header_timeout_secs: time to send an HTTP request head.
    #[arg(long, env = "TING_LIMITS_HTTP_HEADER_TIMEOUT_SECS")]
    limits_http_header_timeout_secs: Option<String>,
    /// limits.write_timeout_secs: a client must take each message within this many seconds.
    #[arg(long, env = "TING_LIMITS_WRITE_TIMEOUT_SECS")]
    limits_write_timeout_secs: Option<String>,
    /// limits.outbox_messages: messages queued for one client.
    #[arg(long, env = "TING_LIMITS_OUTBOX_MESSAGES")]
    limits_outbox_messages: Option<String>,
    /// limits.max_connections: open HTTP/WebSocket connections (0 = by the fd limit).
    #[arg(long, env = "TING_LIMITS_MAX_CONNECTIONS")]
    limits_max_connections: Option<String>,
    /// limits.max_connections_per_address: open connections from one IP address.
    #[arg(long, env = "TING_LIMITS_MAX_CONNECTIONS_PER_ADDRESS")]
    limits_max_connections_per_address: Option<String>,
    /// limits.max_rooms_per_address: open rooms opened from one IP address.
    #[arg(long, env = "TING_LIMITS_MAX_ROOMS_PER_ADDRESS")]
    limits_max_rooms_per_address: Option<String>,
    /// limits.joins_per_second_per_address: joins per second from one IP address.
    #[arg(long, env = "TING_LIMITS_JOINS_PER_SECOND_PER_ADDRESS")]
    limits_joins_per_second_per_address: Option<String>,
    /// limits.messages_per_second: messages per second from one connection.
    #[arg(long, env = "TING_LIMITS_MESSAGES_PER_SECOND")]
    limits_messages_per_second: Option<String>,
    /// limits.media_messages_per_second: media messages per second from one connection.
    #[arg(long, env = "TING_LIMITS_MEDIA_MESSAGES_PER_SECOND")]
    limits_media_messages_per_second: Option<String>,
    /// limits.layout_messages_per_second: layout messages per second from one connection.
    #[arg(long, env = "TING_LIMITS_LAYOUT_MESSAGES_PER_SECOND")]
    limits_layout_messages_per_second: Option<String>,
    /// shutdown.drain_secs: seconds meetings may go on after SIGTERM.
    #[arg(long, env = "TING_SHUTDOWN_DRAIN_SECS")]
    shutdown_drain_secs: Option<String>,
    /// slots.audio: audio receive slots per client.
    #[arg(long, env = "TING_SLOTS_AUDIO")]
    slots_audio: Option<String>,
    /// slots.video: camera receive slots per client.
    #[arg(long, env = "TING_SLOTS_VIDEO")]
    slots_video: Option<String>,
    /// slots.screen: screen-share receive slots per client.
    #[arg(long, env = "TING_SLOTS_SCREEN")]
    slots_screen: Option<String>,
    /// log.level: tracing filter (RUST_LOG wins when set).
    #[arg(long, env = "TING_LOG_LEVEL")]
    log_level: Option<String>,
    /// limits.chat_messages_per_second: chat messages per connection per second.
    #[arg(long, env = "TING_LIMITS_CHAT_MESSAGES_PER_SECOND")]
    limits_chat_messages_per_second: Option<String>,
    /// limits.passcode_attempts_per_minute: wrong passcodes a room takes per minute.
    #[arg(long, env = "TING_LIMITS_PASSCODE_ATTEMPTS_PER_MINUTE")]
    limits_passcode_attempts_per_minute: Option<String>,
    /// limits.passcode_attempts_per_minute_per_address: joins with a passcode per address per minute.
    #[arg(long, env = "TING_LIMITS_PASSCODE_ATTEMPTS_PER_MINUTE_PER_ADDRESS")]
    limits_passcode_attempts_per_minute_per_address: Option<String>,
    /// rooms.open: anyone may open and enter rooms without a token.
    #[arg(long, env = "TING_ROOMS_OPEN")]
    rooms_open: Option<String>,
    /// rooms.early_join_minutes: how early before a scheduled start people may enter.
    #[arg(long, env = "TING_ROOMS_EARLY_JOIN_MINUTES")]
    rooms_early_join_minutes: Option<String>,
    /// rooms.ended_hold_minutes: how long an ended meeting turns people away.
    #[arg(long, env = "TING_ROOMS_ENDED_HOLD_MINUTES")]
    rooms_ended_hold_minutes: Option<String>,
    /// rooms.e2ee_required: every room refuses clients that do not encrypt end to end.
    #[arg(long, env = "TING_ROOMS_E2EE_REQUIRED")]
    rooms_e2ee_required: Option<String>,
    /// tokens.secret: the HS256 join-token secret (prefer --tokens-secret-file).
    /// A random base64url secret may start with '-'; it is still taken as the value.
    #[arg(
        long,
        env = "TING_TOKENS_SECRET",
        hide_env_values = true,
        allow_hyphen_values = true,
        value_parser = not_an_option
    )]
    tokens_secret: Option<String>,
    /// tokens.secret_file: a file holding the HS256 join-token secret.
    #[arg(long, env = "TING_TOKENS_SECRET_FILE")]
    tokens_secret_file: Option<String>,
    /// tokens.public_key_files: PEM public keys of token signers, as a TOML list.
    #[arg(long, env = "TING_TOKENS_PUBLIC_KEY_FILES")]
    tokens_public_key_files: Option<String>,
    /// tokens.default_ttl_secs: lifetime of API tokens when the request gives none.
    #[arg(long, env = "TING_TOKENS_DEFAULT_TTL_SECS")]
    tokens_default_ttl_secs: Option<String>,
    /// tokens.max_ttl_secs: the longest lifetime of an issued token.
    #[arg(long, env = "TING_TOKENS_MAX_TTL_SECS")]
    tokens_max_ttl_secs: Option<String>,
    /// api.key: the control API's bearer key (prefer --api-key-file).
    #[arg(
        long,
        env = "TING_API_KEY",
        hide_env_values = true,
        allow_hyphen_values = true,
        value_parser = not_an_option
    )]
    api_key: Option<String>,
    /// api.key_file: a file holding the control API's bearer key.
    #[arg(long, env = "TING_API_KEY_FILE")]
    api_key_file: Option<String>,
    /// store.path: the SQLite database file (empty: in memory).
    #[arg(long, env = "TING_STORE_PATH")]
    store_path: Option<String>,
    /// chat.max_chars: the longest chat message.
    #[arg(long, env = "TING_CHAT_MAX_CHARS")]
    chat_max_chars: Option<String>,
    /// chat.archive: keep chat in the database for record-keeping.
    #[arg(long, env = "TING_CHAT_ARCHIVE")]
    chat_archive: Option<String>,
    /// chat.retention_days: archived chat older than this is deleted.
    #[arg(long, env = "TING_CHAT_RETENTION_DAYS")]
    chat_retention_days: Option<String>,
}

impl Cli {
    fn overrides(&self) -> Vec<Override> {
        let table: [(&'static str, &Option<String>); 56] = [
            ("http.listen", &self.http_listen),
            ("http.public_url", &self.http_public_url),
            ("http.allow_plain_http", &self.http_allow_plain_http),
            ("http.tls.cert_file", &self.http_tls_cert_file),
            ("http.tls.key_file", &self.http_tls_key_file),
            ("http.tls.self_signed", &self.http_tls_self_signed),
            (
                "http.tls.self_signed_names",
                &self.http_tls_self_signed_names,
            ),
            ("media.bind_ip", &self.media_bind_ip),
            ("media.port", &self.media_port),
            ("media.advertise_ip", &self.media_advertise_ip),
            ("media.workers", &self.media_workers),
            ("media.socket_buffer_bytes", &self.media_socket_buffer_bytes),
            ("media.spread_rooms_above", &self.media_spread_rooms_above),
            (
                "media.bandwidth_estimation",
                &self.media_bandwidth_estimation,
            ),
            ("media.opus_dtx", &self.media_opus_dtx),
            (
                "media.thumbnail_temporal_layers",
                &self.media_thumbnail_temporal_layers,
            ),
            ("media.load_shedding", &self.media_load_shedding),
            ("limits.max_rooms", &self.limits_max_rooms),
            (
                "limits.max_participants_per_room",
                &self.limits_max_participants_per_room,
            ),
            ("limits.max_message_bytes", &self.limits_max_message_bytes),
            (
                "limits.participant_timeout_secs",
                &self.limits_participant_timeout_secs,
            ),
            ("limits.ping_interval_secs", &self.limits_ping_interval_secs),
            ("limits.join_timeout_secs", &self.limits_join_timeout_secs),
            (
                "limits.http_header_timeout_secs",
                &self.limits_http_header_timeout_secs,
            ),
            ("limits.write_timeout_secs", &self.limits_write_timeout_secs),
            ("limits.outbox_messages", &self.limits_outbox_messages),
            ("limits.max_connections", &self.limits_max_connections),
            (
                "limits.max_connections_per_address",
                &self.limits_max_connections_per_address,
            ),
            (
                "limits.max_rooms_per_address",
                &self.limits_max_rooms_per_address,
            ),
            (
                "limits.joins_per_second_per_address",
                &self.limits_joins_per_second_per_address,
            ),
            (
                "limits.messages_per_second",
                &self.limits_messages_per_second,
            ),
            (
                "limits.media_messages_per_second",
                &self.limits_media_messages_per_second,
            ),
            (
                "limits.layout_messages_per_second",
                &self.limits_layout_messages_per_second,
            ),
            ("shutdown.drain_secs", &self.shutdown_drain_secs),
            ("slots.audio", &self.slots_audio),
            ("slots.video", &self.slots_video),
            ("slots.screen", &self.slots_screen),
            ("log.level", &self.log_level),
            (
                "limits.chat_messages_per_second",
                &self.limits_chat_messages_per_second,
            ),
            (
                "limits.passcode_attempts_per_minute",
                &self.limits_passcode_attempts_per_minute,
            ),
            (
                "limits.passcode_attempts_per_minute_per_address",
                &self.limits_passcode_attempts_per_minute_per_address,
            ),
            ("rooms.open", &self.rooms_open),
            ("rooms.early_join_minutes", &self.rooms_early_join_minutes),
            ("rooms.ended_hold_minutes", &self.rooms_ended_hold_minutes),
            ("rooms.e2ee_required", &self.rooms_e2ee_required),
            ("tokens.secret", &self.tokens_secret),
            ("tokens.secret_file", &self.tokens_secret_file),
            ("tokens.public_key_files", &self.tokens_public_key_files),
            ("tokens.default_ttl_secs", &self.tokens_default_ttl_secs),
            ("tokens.max_ttl_secs", &self.tokens_max_ttl_secs),
            ("api.key", &self.api_key),
            ("api.key_file", &self.api_key_file),
            ("store.path", &self.store_path),
            ("chat.max_chars", &self.chat_max_chars),
            ("chat.archive", &self.chat_archive),
            ("chat.retention_days", &self.chat_retention_days),
        ];
        table
            .into_iter()
            .filter_map(|(key, v)| {
                v.as_ref().map(|value| Override {
                    key,
                    value: value.clone(),
                    source: format!(
                        "--{} / TING_{}",
                        key.replace(['.', '_'], "-"),
                        key.replace('.', "_").to_uppercase()
                    ),
                })
            })
            .collect()
    }
}

/// A secret may start with '-', but not be one of ting's own options: that is a secret
/// forgotten on the command line, and the option after it would be lost silently.
fn not_an_option(value: &str) -> Result<String, String> {
    use clap::CommandFactory;
    if let Some(rest) = value.strip_prefix("--") {
        let name = rest.split('=').next().unwrap_or_default();
        let mut cmd = Cli::command();
        // Built, the command also lists clap's own --help and --version.
        cmd.build();
        if cmd.get_arguments().any(|a| a.get_long() == Some(name)) {
            return Err(format!(
                "this looks like the option --{name}, not a secret (was the secret left \
                 out?); put the secret in a file and pass the file's path with the \
                 matching -file option"
            ));
        }
    }
    Ok(value.to_owned())
}

fn main() -> std::process::ExitCode {
    match run() {
        Ok(()) => std::process::ExitCode::SUCCESS,
        Err(e) => {
            // One readable line for the operator: what failed and why, no backtrace.
            eprintln!("ting: {e:#}");
            std::process::ExitCode::FAILURE
        }
    }
}

fn run() -> anyhow::Result<()> {
    let cli = Cli::parse();
    let config = Config::load(cli.config.as_deref(), &cli.overrides())?;
    if cli.print_config {
        // What was asked for, on stdout for redirecting into a file.
        #[allow(clippy::print_stdout)]
        {
            print!("{}", config.to_toml());
        }
        return Ok(());
    }
    if let Some(room) = &cli.audit_tag {
        let room = ting_control::RoomName::parse(room)
            .map_err(|e| anyhow::anyhow!("--audit-tag {room:?}: the room name {e}"))?;
        let secret = config.token_secret()?.ok_or_else(|| {
            anyhow::anyhow!(
                "audit tags come from tokens.secret (or tokens.secret_file), which is not set: \
                 without it each run of ting tags rooms differently"
            )
        })?;
        let tag = ting_server::conductor::AuditKey::new(secret.as_bytes()).room_tag(&room);
        #[allow(clippy::print_stdout)]
        {
            println!("{tag}");
        }
        return Ok(());
    }
    let filter = std::env::var("RUST_LOG").unwrap_or_else(|_| config.log.level.clone());
    ting_server::logging::init(
        &filter,
        std::io::stderr,
        std::io::IsTerminal::is_terminal(&std::io::stderr()),
    )
    .map_err(|e| anyhow::anyhow!("log level {filter:?} is not a valid filter: {e}"))?;
    ting_control::RoomName::parse(&cli.room)
        .map_err(|e| anyhow::anyhow!("--room {:?}: the room name {e}", cli.room))?;

    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .thread_name("ting-http")
        .enable_all()
        .build()
        .context("cannot start the async runtime")?;
    runtime.block_on(async move {
        let server = Server::bind(config).await?;
        let link = server.meeting_url(&cli.room);
        // The one line a person starting ting needs; on stdout so scripts can read it.
        #[allow(clippy::print_stdout)]
        {
            println!("ting is running. Meeting link: {link}");
        }
        server.run(shutdown_signal()).await?;
        Ok(())
    })
}

/// Ctrl-C or SIGTERM.
async fn shutdown_signal() {
    let ctrl_c = tokio::signal::ctrl_c();
    let mut term = match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
        Ok(s) => s,
        Err(_) => {
            let _ = ctrl_c.await;
            return;
        }
    };
    tokio::select! {
        _ = ctrl_c => {},
        _ = term.recv() => {},
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A random base64url secret starts with '-' once in 64 draws; it must be read as the
    /// value, not as an unknown flag.
    #[test]
    fn a_secret_that_starts_with_a_hyphen_is_a_value() {
        let cli = Cli::try_parse_from([
            "ting",
            "--tokens-secret",
            "-SzQ1_secret",
            "--api-key",
            "--not-a-flag",
            "--room",
            "r",
        ])
        .expect("secrets starting with '-' parse");
        assert_eq!(cli.tokens_secret.as_deref(), Some("-SzQ1_secret"));
        assert_eq!(cli.api_key.as_deref(), Some("--not-a-flag"));
        assert_eq!(cli.room, "r");
    }

    /// A secret left out swallows no option: `--tokens-secret --print-config` is an error
    /// that says what is missing, not a secret named "--print-config".
    #[test]
    fn a_missing_secret_does_not_swallow_the_next_option() {
        let cases: [&[&str]; 3] = [
            &["ting", "--tokens-secret", "--print-config"],
            &["ting", "--tokens-secret", "--help"],
            &[
                "ting",
                "--api-key",
                "--http-public-url=https://meet.example.org",
            ],
        ];
        for args in cases {
            let err = Cli::try_parse_from(args).expect_err("a missing value is an error");
            assert!(
                err.to_string()
                    .contains("not a secret (was the secret left out?)"),
                "{args:?}: {err}"
            );
        }
    }
}
