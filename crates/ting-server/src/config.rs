//! Configuration in two layers: typed structs whose defaults are `config/ting.toml` (built
//! into the binary), overlaid by an operator's file, then by `TING_*` environment variables
//! and command-line flags.
//!
//! Overrides are applied to the TOML tree before it is turned into [`Config`], so a bad
//! value gets the same error wherever it came from, naming the key and the source.

use std::net::{IpAddr, SocketAddr};
use std::path::{Path, PathBuf};
use std::time::Duration;

use serde::{Deserialize, Serialize};

/// The defaults, as shipped in `config/ting.toml`.
pub const DEFAULT_TOML: &str = include_str!("../../../config/ting.toml");

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Config {
    pub http: HttpConfig,
    pub media: MediaConfig,
    pub limits: LimitsConfig,
    pub slots: SlotsConfig,
    pub shutdown: ShutdownConfig,
    pub log: LogConfig,
    pub rooms: RoomsSection,
    pub tokens: TokensConfig,
    pub api: ApiConfig,
    pub store: StoreConfig,
    pub chat: ChatConfig,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RoomsSection {
    pub open: bool,
    pub early_join_minutes: u64,
    pub ended_hold_minutes: u64,
    pub e2ee_required: bool,
}

#[derive(Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TokensConfig {
    pub secret: String,
    pub secret_file: String,
    pub public_key_files: Vec<String>,
    pub default_ttl_secs: u64,
    pub max_ttl_secs: u64,
}

impl std::fmt::Debug for TokensConfig {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("TokensConfig")
            .field("secret", &if self.secret.is_empty() { "" } else { "<set>" })
            .field("secret_file", &self.secret_file)
            .field("public_key_files", &self.public_key_files)
            .finish_non_exhaustive()
    }
}

#[derive(Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ApiConfig {
    pub key: String,
    pub key_file: String,
}

impl std::fmt::Debug for ApiConfig {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ApiConfig")
            .field("key", &if self.key.is_empty() { "" } else { "<set>" })
            .field("key_file", &self.key_file)
            .finish()
    }
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct StoreConfig {
    pub path: String,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ChatConfig {
    pub max_chars: usize,
    pub archive: bool,
    pub retention_days: u64,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct HttpConfig {
    pub listen: SocketAddr,
    pub public_url: String,
    pub allow_plain_http: bool,
    pub tls: TlsConfig,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TlsConfig {
    pub cert_file: String,
    pub key_file: String,
    pub self_signed: bool,
    pub self_signed_names: Vec<String>,
}

impl TlsConfig {
    /// Whether ting serves HTTPS.
    pub fn enabled(&self) -> bool {
        !self.cert_file.is_empty() || self.self_signed
    }
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct MediaConfig {
    pub bind_ip: IpAddr,
    pub port: u16,
    pub advertise_ip: IpAddr,
    pub workers: usize,
    pub socket_buffer_bytes: usize,
    pub spread_rooms_above: usize,
    pub bandwidth_estimation: bool,
    pub opus_dtx: bool,
    pub thumbnail_temporal_layers: u8,
    pub load_shedding: bool,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct LimitsConfig {
    pub max_rooms: usize,
    pub max_participants_per_room: usize,
    pub max_message_bytes: usize,
    pub participant_timeout_secs: u64,
    pub ping_interval_secs: u64,
    pub join_timeout_secs: u64,
    pub http_header_timeout_secs: u64,
    pub write_timeout_secs: u64,
    pub outbox_messages: usize,
    pub max_connections: usize,
    pub max_connections_per_address: usize,
    pub max_rooms_per_address: usize,
    pub joins_per_second_per_address: u32,
    pub messages_per_second: u32,
    pub media_messages_per_second: u32,
    pub layout_messages_per_second: u32,
    pub chat_messages_per_second: u32,
    pub passcode_attempts_per_minute: u32,
    pub passcode_attempts_per_minute_per_address: u32,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SlotsConfig {
    pub audio: u16,
    pub video: u16,
    pub screen: u16,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ShutdownConfig {
    pub drain_secs: u64,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct LogConfig {
    pub level: String,
}

/// Why the configuration could not be used.
#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    #[error("cannot read config file {path}")]
    Read {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("config file {path} is not valid TOML: {message}")]
    Syntax { path: PathBuf, message: String },
    #[error("configuration is invalid: {0}")]
    Invalid(String),
    #[error("{key} = {value:?} is not allowed: {reason}")]
    Value {
        key: &'static str,
        value: String,
        reason: String,
    },
}

/// One override of a key, from the environment or the command line.
#[derive(Debug, Clone)]
pub struct Override {
    /// Dotted key path, e.g. `media.port`.
    pub key: &'static str,
    pub value: String,
    /// Where it came from, for error messages (`--media-port`, `TING_MEDIA_PORT`).
    pub source: String,
}

impl Default for Config {
    fn default() -> Self {
        // The embedded defaults are checked by a unit test; failing here is a build defect.
        Config::load(None, &[]).expect("embedded config/ting.toml is valid")
    }
}

impl Config {
    /// Builds the configuration: embedded defaults, then `file`, then `overrides`.
    pub fn load(file: Option<&Path>, overrides: &[Override]) -> Result<Config, ConfigError> {
        let text = file
            .map(|path| {
                std::fs::read_to_string(path).map_err(|source| ConfigError::Read {
                    path: path.to_owned(),
                    source,
                })
            })
            .transpose()?;
        Config::build(file.zip(text.as_deref()), overrides)
    }

    /// Builds the configuration from the text of an operator's config file: the embedded
    /// defaults overlaid by `text`, checked as [`Config::load`] checks a file.
    pub fn from_toml_str(text: &str) -> Result<Config, ConfigError> {
        Config::build(Some((Path::new("(config text)"), text)), &[])
    }

    /// The one way a configuration is built: defaults, then the user's file (its path, for
    /// messages, and its text), then `overrides`, then validation.
    fn build(user: Option<(&Path, &str)>, overrides: &[Override]) -> Result<Config, ConfigError> {
        let mut tree: toml::Table =
            toml::from_str(DEFAULT_TOML).map_err(|e| ConfigError::Syntax {
                path: PathBuf::from("config/ting.toml (built in)"),
                message: e.to_string(),
            })?;
        let file = user.map(|(path, _)| path);
        if let Some((path, text)) = user {
            let user: toml::Table = toml::from_str(text).map_err(|e| ConfigError::Syntax {
                path: path.to_owned(),
                message: e.to_string(),
            })?;
            merge(&mut tree, user, "").map_err(|key| {
                ConfigError::Invalid(format!("{}: unknown key {key}", path.display()))
            })?;
        }
        for o in overrides {
            set_key(&mut tree, o.key, &o.value).map_err(|reason| {
                ConfigError::Invalid(format!("{} ({}): {reason}", o.source, o.key))
            })?;
        }
        let config: Config =
            serde_path_to_error::deserialize(toml::Value::Table(tree)).map_err(|e| {
                let key = e.path().to_string();
                let from = overrides
                    .iter()
                    .rev()
                    .find(|o| o.key == key)
                    .map(|o| o.source.clone())
                    .or_else(|| file.map(|f| f.display().to_string()))
                    .unwrap_or_else(|| "the built-in defaults".into());
                ConfigError::Invalid(format!("{key} (from {from}): {}", e.inner().message()))
            })?;
        config.validate()?;
        Ok(config)
    }

    fn validate(&self) -> Result<(), ConfigError> {
        let bad = |key: &'static str, value: String, reason: &str| ConfigError::Value {
            key,
            value,
            reason: reason.to_owned(),
        };
        let tls = &self.http.tls;
        if tls.cert_file.is_empty() != tls.key_file.is_empty() {
            return Err(bad(
                "http.tls.cert_file",
                tls.cert_file.clone(),
                "set both http.tls.cert_file and http.tls.key_file, or neither",
            ));
        }
        if tls.self_signed && !tls.cert_file.is_empty() {
            return Err(bad(
                "http.tls.self_signed",
                "true".into(),
                "a self-signed certificate and certificate files exclude each other",
            ));
        }
        if !tls.enabled() && !self.http.listen.ip().is_loopback() && !self.http.allow_plain_http {
            return Err(bad(
                "http.listen",
                self.http.listen.to_string(),
                "plain HTTP beyond loopback exposes sign-in links and chat to the network: \
                 set http.tls.cert_file and http.tls.key_file (or http.tls.self_signed to try \
                 it out), or http.allow_plain_http = true when a TLS proxy on another host \
                 forwards to ting",
            ));
        }
        if self.media.advertise_ip.is_unspecified() {
            return Err(bad(
                "media.advertise_ip",
                self.media.advertise_ip.to_string(),
                "browsers need a concrete address to send media to; set this host's IP",
            ));
        }
        if self.media.port != 0
            && usize::from(self.media.port) + self.worker_count() > usize::from(u16::MAX) + 1
        {
            return Err(bad(
                "media.port",
                self.media.port.to_string(),
                "port + workers runs past 65535",
            ));
        }
        if !(1..=3).contains(&self.media.thumbnail_temporal_layers) {
            return Err(bad(
                "media.thumbnail_temporal_layers",
                self.media.thumbnail_temporal_layers.to_string(),
                "must be 1 (a quarter of the frames), 2 (half) or 3 (every frame)",
            ));
        }
        if self.limits.max_message_bytes < 16 * 1024 || self.limits.max_message_bytes > 1 << 20 {
            return Err(bad(
                "limits.max_message_bytes",
                self.limits.max_message_bytes.to_string(),
                "must be between 16384 (an SDP offer needs room) and 1048576",
            ));
        }
        // Clients are told the interval in milliseconds, as a u32 (`Limits::ping_interval_ms`).
        if self.limits.ping_interval_secs > 3600 {
            return Err(bad(
                "limits.ping_interval_secs",
                self.limits.ping_interval_secs.to_string(),
                "at most 3600 seconds",
            ));
        }
        if self.limits.ping_interval_secs == 0
            || self.limits.participant_timeout_secs < 2 * self.limits.ping_interval_secs
        {
            return Err(bad(
                "limits.participant_timeout_secs",
                self.limits.participant_timeout_secs.to_string(),
                "must be at least twice limits.ping_interval_secs (and that at least 1)",
            ));
        }
        if self.limits.max_participants_per_room == 0 || self.limits.max_rooms == 0 {
            return Err(bad(
                "limits.max_participants_per_room",
                self.limits.max_participants_per_room.to_string(),
                "rooms and participants must be allowed (at least 1 each)",
            ));
        }
        let slots = usize::from(self.slots.audio)
            + usize::from(self.slots.video)
            + usize::from(self.slots.screen);
        if slots > ting_media::router::MAX_SLOTS {
            return Err(bad(
                "slots",
                slots.to_string(),
                "at most 256 receive slots in all",
            ));
        }
        let l = &self.limits;
        for (key, v) in [
            ("limits.join_timeout_secs", l.join_timeout_secs),
            (
                "limits.http_header_timeout_secs",
                l.http_header_timeout_secs,
            ),
            ("limits.write_timeout_secs", l.write_timeout_secs),
        ] {
            if v == 0 || v > 3600 {
                return Err(bad(
                    key,
                    v.to_string(),
                    "must be between 1 and 3600 seconds",
                ));
            }
        }
        if l.outbox_messages < 64 || l.outbox_messages > 1 << 16 {
            return Err(bad(
                "limits.outbox_messages",
                l.outbox_messages.to_string(),
                "must be between 64 (a busy room sends bursts) and 65536",
            ));
        }
        for (key, v) in [
            (
                "limits.max_connections_per_address",
                l.max_connections_per_address,
            ),
            ("limits.max_rooms_per_address", l.max_rooms_per_address),
        ] {
            if v == 0 {
                return Err(bad(key, v.to_string(), "must be at least 1"));
            }
        }
        for (key, v) in [
            ("limits.messages_per_second", l.messages_per_second),
            (
                "limits.joins_per_second_per_address",
                l.joins_per_second_per_address,
            ),
            (
                "limits.media_messages_per_second",
                l.media_messages_per_second,
            ),
            (
                "limits.layout_messages_per_second",
                l.layout_messages_per_second,
            ),
            (
                "limits.chat_messages_per_second",
                l.chat_messages_per_second,
            ),
            (
                "limits.passcode_attempts_per_minute",
                l.passcode_attempts_per_minute,
            ),
            (
                "limits.passcode_attempts_per_minute_per_address",
                l.passcode_attempts_per_minute_per_address,
            ),
        ] {
            if v == 0 {
                return Err(bad(key, v.to_string(), "must be at least 1"));
            }
        }
        // In u64: twice a u32 setting may not fit in a u32.
        let busiest = l
            .layout_messages_per_second
            .max(l.media_messages_per_second);
        if u64::from(l.messages_per_second) < 2 * u64::from(busiest) {
            return Err(bad(
                "limits.messages_per_second",
                self.limits.messages_per_second.to_string(),
                "must be at least twice limits.media_messages_per_second and \
                 limits.layout_messages_per_second (pings and the rest need room too)",
            ));
        }
        if self.shutdown.drain_secs > 3600 {
            return Err(bad(
                "shutdown.drain_secs",
                self.shutdown.drain_secs.to_string(),
                "at most 3600 seconds",
            ));
        }
        if self.chat.max_chars == 0 || self.chat.max_chars > 10_000 {
            return Err(bad(
                "chat.max_chars",
                self.chat.max_chars.to_string(),
                "must be between 1 and 10000 (a chat message travels in one signalling message)",
            ));
        }
        if self.chat.archive && (self.chat.retention_days == 0 || self.chat.retention_days > 3650) {
            return Err(bad(
                "chat.retention_days",
                self.chat.retention_days.to_string(),
                "must be between 1 and 3650 days when the archive is on",
            ));
        }
        let t = &self.tokens;
        if t.max_ttl_secs == 0 || t.max_ttl_secs > 366 * 86_400 {
            return Err(bad(
                "tokens.max_ttl_secs",
                t.max_ttl_secs.to_string(),
                "must be between 1 second and a year",
            ));
        }
        if t.default_ttl_secs == 0 || t.default_ttl_secs > t.max_ttl_secs {
            return Err(bad(
                "tokens.default_ttl_secs",
                t.default_ttl_secs.to_string(),
                "must be between 1 and tokens.max_ttl_secs",
            ));
        }
        if !t.secret.is_empty() && !t.secret_file.is_empty() {
            return Err(bad(
                "tokens.secret",
                "<set>".into(),
                "set tokens.secret or tokens.secret_file, not both",
            ));
        }
        if !t.secret.is_empty() && t.secret.len() < ting_control::MIN_SECRET_BYTES {
            return Err(bad(
                "tokens.secret",
                format!("<{} bytes>", t.secret.len()),
                "must be at least 32 bytes (e.g. `openssl rand -base64 32`)",
            ));
        }
        if !self.api.key.is_empty() && !self.api.key_file.is_empty() {
            return Err(bad(
                "api.key",
                "<set>".into(),
                "set api.key or api.key_file, not both",
            ));
        }
        if !self.api.key.is_empty() && self.api.key.len() < 32 {
            return Err(bad(
                "api.key",
                format!("<{} characters>", self.api.key.len()),
                "must be at least 32 characters (e.g. `openssl rand -base64 32`)",
            ));
        }
        if self.rooms.early_join_minutes > 24 * 60 || self.rooms.ended_hold_minutes > 24 * 60 {
            return Err(bad(
                "rooms.early_join_minutes",
                self.rooms.early_join_minutes.to_string(),
                "rooms.early_join_minutes and rooms.ended_hold_minutes are at most a day",
            ));
        }
        if self.log.level.trim().is_empty() {
            return Err(bad("log.level", String::new(), "use e.g. \"info\""));
        }
        Ok(())
    }

    /// Media workers to start.
    pub fn worker_count(&self) -> usize {
        if self.media.workers == 0 {
            std::thread::available_parallelism().map_or(1, |n| n.get())
        } else {
            self.media.workers
        }
    }

    /// How each room's router picks what to forward, from the `media` settings.
    pub fn router_config(&self) -> ting_media::RouterConfig {
        ting_media::RouterConfig {
            // Validated to 1..=3: the highest layer index is one below the count.
            thumbnail_temporal_layer: self.media.thumbnail_temporal_layers.saturating_sub(1),
            ..ting_media::RouterConfig::default()
        }
    }

    pub fn participant_timeout(&self) -> Duration {
        Duration::from_secs(self.limits.participant_timeout_secs)
    }

    /// The base URL people reach the server at, without a trailing slash.
    pub fn public_url(&self, bound: SocketAddr) -> String {
        let configured = self.http.public_url.trim().trim_end_matches('/');
        if !configured.is_empty() {
            return configured.to_owned();
        }
        let host = if bound.ip().is_unspecified() {
            self.media.advertise_ip
        } else {
            bound.ip()
        };
        let scheme = if self.http.tls.enabled() {
            "https"
        } else {
            "http"
        };
        match host {
            IpAddr::V6(v6) => format!("{scheme}://[{v6}]:{}", bound.port()),
            IpAddr::V4(v4) => format!("{scheme}://{v4}:{}", bound.port()),
        }
    }

    /// The effective configuration as TOML, for `ting --print-config`.
    pub fn to_toml(&self) -> String {
        // Secrets are not printed: the output goes to terminals and files.
        let mut shown = self.clone();
        for s in [&mut shown.tokens.secret, &mut shown.api.key] {
            if !s.is_empty() {
                *s = "<hidden>".into();
            }
        }
        // Plain structs of strings, numbers and addresses always serialize.
        toml::to_string_pretty(&shown).expect("config serializes")
    }

    /// The HS256 token secret, from `tokens.secret` or `tokens.secret_file`.
    pub fn token_secret(&self) -> Result<Option<String>, ConfigError> {
        secret(
            &self.tokens.secret,
            &self.tokens.secret_file,
            "tokens.secret_file",
            ting_control::MIN_SECRET_BYTES,
        )
    }

    /// The control API's bearer key, from `api.key` or `api.key_file`.
    pub fn api_key(&self) -> Result<Option<String>, ConfigError> {
        secret(&self.api.key, &self.api.key_file, "api.key_file", 32)
    }
}

/// A secret given inline or as a file (its first line, trimmed).
fn secret(
    inline: &str,
    file: &str,
    key: &'static str,
    min: usize,
) -> Result<Option<String>, ConfigError> {
    if !inline.is_empty() {
        return Ok(Some(inline.to_owned()));
    }
    if file.is_empty() {
        return Ok(None);
    }
    let text = std::fs::read_to_string(file).map_err(|e| ConfigError::Value {
        key,
        value: file.to_owned(),
        reason: format!("cannot be read: {e}"),
    })?;
    let line = text.lines().next().unwrap_or("").trim().to_owned();
    if line.len() < min {
        return Err(ConfigError::Value {
            key,
            value: file.to_owned(),
            reason: format!("its first line must hold at least {min} bytes of secret"),
        });
    }
    Ok(Some(line))
}

/// Overlays `user` on `base`, refusing keys the base does not have (typos would otherwise
/// be silently ignored). Returns the unknown key's path.
fn merge(base: &mut toml::Table, user: toml::Table, prefix: &str) -> Result<(), String> {
    for (key, value) in user {
        let path = if prefix.is_empty() {
            key.clone()
        } else {
            format!("{prefix}.{key}")
        };
        match (base.get_mut(&key), value) {
            (Some(toml::Value::Table(b)), toml::Value::Table(u)) => merge(b, u, &path)?,
            (Some(slot), value) => *slot = value,
            (None, _) => return Err(path),
        }
    }
    Ok(())
}

/// Sets `key` (dotted) to `raw`, read as a TOML value when it is one (number, boolean) and
/// as a string otherwise, so `TING_MEDIA_PORT=41000` and `TING_HTTP_LISTEN=0.0.0.0:80`
/// both work.
fn set_key(tree: &mut toml::Table, key: &str, raw: &str) -> Result<(), String> {
    let mut parts = key.split('.').peekable();
    let mut table = tree;
    while let Some(part) = parts.next() {
        if parts.peek().is_none() {
            let old = table
                .get(part)
                .ok_or_else(|| format!("unknown key {key}"))?;
            let value = match old {
                toml::Value::String(_) => toml::Value::String(raw.to_owned()),
                _ => raw
                    .parse::<toml::Value>()
                    .ok()
                    .or_else(|| {
                        toml::from_str::<toml::Table>(&format!("v = {raw}"))
                            .ok()
                            .and_then(|mut t| t.remove("v"))
                    })
                    .unwrap_or_else(|| toml::Value::String(raw.to_owned())),
            };
            table.insert(part.to_owned(), value);
            return Ok(());
        }
        table = match table.get_mut(part) {
            Some(toml::Value::Table(t)) => t,
            _ => return Err(format!("unknown key {key}")),
        };
    }
    Err(format!("empty key {key:?}"))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn o(key: &'static str, value: &str) -> Override {
        Override {
            key,
            value: value.to_owned(),
            source: format!("test {key}"),
        }
    }

    #[test]
    fn plain_http_stays_on_loopback_unless_allowed() {
        let e = Config::from_toml_str("[http]\nlisten = \"0.0.0.0:8080\"").unwrap_err();
        assert!(e.to_string().contains("http.tls.cert_file"), "{e}");
        assert!(
            Config::from_toml_str("[http]\nlisten = \"0.0.0.0:8080\"\nallow_plain_http = true")
                .is_ok()
        );
        let c = Config::from_toml_str(
            "[http]\nlisten = \"0.0.0.0:8443\"\n[http.tls]\nself_signed = true",
        )
        .unwrap();
        assert!(
            c.public_url("10.0.0.2:8443".parse().unwrap())
                .starts_with("https://")
        );
        assert!(
            Config::from_toml_str("[http.tls]\ncert_file = \"/etc/ting/cert.pem\"").is_err(),
            "a certificate without its key"
        );
    }

    #[test]
    fn the_documented_production_config_loads_and_closes_rooms() {
        let c = Config::from_toml_str(include_str!("../../../config/production.toml")).unwrap();
        assert!(!c.rooms.open);
        assert!(!c.tokens.secret_file.is_empty() && !c.api.key_file.is_empty());
        assert!(!c.store.path.is_empty());
        // The demo defaults keep open rooms.
        assert!(Config::default().rooms.open);
    }

    #[test]
    fn secrets_are_checked_and_never_printed() {
        let e = Config::from_toml_str("[tokens]\nsecret = \"short\"").unwrap_err();
        assert!(e.to_string().contains("tokens.secret"), "{e}");
        assert!(!e.to_string().contains("short"), "{e}");
        let c = Config::from_toml_str(
            "[tokens]\nsecret = \"0123456789abcdef0123456789abcdef\"\n\
             [api]\nkey = \"fedcba9876543210fedcba9876543210\"",
        )
        .unwrap();
        let shown = c.to_toml();
        assert!(!shown.contains("0123456789abcdef") && !shown.contains("fedcba9876543210"));
        assert!(!format!("{c:?}").contains("0123456789abcdef"));
        let missing = Config::from_toml_str("[tokens]\nsecret_file = \"/nonexistent/ting\"")
            .unwrap()
            .token_secret()
            .unwrap_err();
        assert!(
            missing.to_string().contains("tokens.secret_file"),
            "{missing}"
        );
    }

    #[test]
    fn embedded_defaults_load() {
        let c = Config::default();
        assert_eq!(c.http.listen, "127.0.0.1:8080".parse().unwrap());
        assert_eq!(c.media.port, 40000);
        assert_eq!(c.limits.max_participants_per_room, 250);
        assert_eq!(c.slots.video, 25);
        assert_eq!(c.media.spread_rooms_above, 16);
    }

    #[test]
    fn overrides_apply_with_types() {
        let c = Config::load(
            None,
            &[
                o("media.port", "0"),
                o("http.listen", "0.0.0.0:9000"),
                o("http.allow_plain_http", "true"),
                o("media.workers", "3"),
                o("log.level", "debug"),
            ],
        )
        .unwrap();
        assert_eq!(c.media.port, 0);
        assert_eq!(c.media.workers, 3);
        assert_eq!(c.http.listen.port(), 9000);
        assert_eq!(c.log.level, "debug");
    }

    #[test]
    fn thumbnails_get_the_temporal_layers_the_setting_names() {
        let c = Config::default();
        assert!(c.media.load_shedding);
        let off = Config::load(None, &[o("media.load_shedding", "false")]).unwrap();
        assert!(!off.media.load_shedding);
        assert_eq!(c.media.thumbnail_temporal_layers, 2);
        assert_eq!(c.router_config().thumbnail_temporal_layer, 1);
        for (layers, cap) in [("1", 0), ("2", 1), ("3", 2)] {
            let c = Config::load(None, &[o("media.thumbnail_temporal_layers", layers)]).unwrap();
            assert_eq!(c.router_config().thumbnail_temporal_layer, cap, "{layers}");
        }
        for bad in ["0", "4", "255"] {
            let e = Config::load(None, &[o("media.thumbnail_temporal_layers", bad)]).unwrap_err();
            let msg = e.to_string();
            assert!(msg.contains("media.thumbnail_temporal_layers"), "{msg}");
            assert!(msg.contains("must be 1"), "{msg}");
        }
        let e = Config::load(None, &[o("media.thumbnail_temporal_layers", "-1")]).unwrap_err();
        assert!(
            e.to_string().contains("media.thumbnail_temporal_layers"),
            "{e}"
        );
    }

    #[test]
    fn errors_name_key_and_source() {
        let e = Config::load(None, &[o("media.port", "lots")]).unwrap_err();
        let msg = e.to_string();
        assert!(msg.contains("media.port (from test media.port)"), "{msg}");
        assert!(msg.contains("u16"), "{msg}");
        let e = Config::load(None, &[o("media.advertise_ip", "0.0.0.0")]).unwrap_err();
        assert!(e.to_string().contains("media.advertise_ip"), "{e}");
        let e = Config::load(None, &[o("limits.participant_timeout_secs", "6")]).unwrap_err();
        assert!(e.to_string().contains("twice"), "{e}");
        let e = Config::load(
            None,
            &[
                o("limits.ping_interval_secs", "4294968"),
                o("limits.participant_timeout_secs", "9999999"),
            ],
        )
        .unwrap_err();
        assert!(e.to_string().contains("limits.ping_interval_secs"), "{e}");
        // Twice this does not fit in a u32: refused, not wrapped around to pass.
        let e =
            Config::load(None, &[o("limits.media_messages_per_second", "2147483648")]).unwrap_err();
        assert!(e.to_string().contains("limits.messages_per_second"), "{e}");
        let e = Config::load(None, &[o("nope.key", "1")]).unwrap_err();
        assert!(e.to_string().contains("unknown key nope.key"), "{e}");
    }

    #[test]
    fn user_file_overlays_and_refuses_typos() {
        let dir = std::env::temp_dir().join(format!("ting-config-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let good = dir.join("good.toml");
        std::fs::write(&good, "[media]\nadvertise_ip = \"192.0.2.7\"\n").unwrap();
        let c = Config::load(Some(&good), &[]).unwrap();
        assert_eq!(c.media.advertise_ip, "192.0.2.7".parse::<IpAddr>().unwrap());
        assert_eq!(
            Config::from_toml_str("[media]\nadvertise_ip = \"192.0.2.7\"\n").unwrap(),
            c
        );
        assert_eq!(c.media.port, 40000, "untouched keys keep defaults");
        let typo = dir.join("typo.toml");
        std::fs::write(&typo, "[media]\nadvertize_ip = \"192.0.2.7\"\n").unwrap();
        let e = Config::load(Some(&typo), &[]).unwrap_err();
        assert!(e.to_string().contains("media.advertize_ip"), "{e}");
        let broken = dir.join("broken.toml");
        std::fs::write(&broken, "[media\n").unwrap();
        assert!(matches!(
            Config::load(Some(&broken), &[]),
            Err(ConfigError::Syntax { .. })
        ));
        assert!(matches!(
            Config::load(Some(&dir.join("missing.toml")), &[]),
            Err(ConfigError::Read { .. })
        ));
        std::fs::remove_dir_all(&dir).unwrap();
    }

    #[test]
    fn public_url_defaults_from_the_bound_address() {
        let c = Config::default();
        assert_eq!(
            c.public_url("127.0.0.1:8080".parse().unwrap()),
            "http://127.0.0.1:8080"
        );
        assert_eq!(
            c.public_url("0.0.0.0:80".parse().unwrap()),
            "http://127.0.0.1:80"
        );
        let mut c = c;
        c.http.public_url = "https://meet.example.org/".into();
        assert_eq!(
            c.public_url("0.0.0.0:80".parse().unwrap()),
            "https://meet.example.org"
        );
    }
}
