//! Logs that keep people private at every level.
//!
//! ting's own code never logs a display name, a client address, a token or an ICE
//! credential: participants appear by their random id, rooms by a number. Libraries are
//! another matter: at `debug` and `trace` str0m prints SDP (ICE passwords), candidate
//! addresses and STUN usernames, and the HTTP and WebSocket layers print request heads and
//! frames (display names in `join`). So whatever the configured filter says, events from
//! crates other than ting's own pass only at `info` and above.

use tracing::{Level, Metadata};
use tracing_subscriber::Layer;
use tracing_subscriber::filter::{EnvFilter, FilterFn};
use tracing_subscriber::layer::SubscriberExt;
use tracing_subscriber::util::SubscriberInitExt;

/// Whether an event or span may be logged: ting's own at any level the filter allows,
/// everyone else's at `info` and above.
pub fn allowed(meta: &Metadata<'_>) -> bool {
    is_ting(meta.target()) || *meta.level() <= Level::INFO
}

fn is_ting(target: &str) -> bool {
    target == "ting" || target.starts_with("ting_") || target.starts_with("ting::")
}

/// Installs the process's logger: `filter` (tracing's syntax), to `writer`, with
/// [`allowed`] on top. Fails on a filter that does not parse.
pub fn init<W>(filter: &str, writer: W, ansi: bool) -> Result<(), String>
where
    W: for<'a> tracing_subscriber::fmt::MakeWriter<'a> + Send + Sync + 'static,
{
    let env = EnvFilter::try_new(filter).map_err(|e| e.to_string())?;
    tracing_subscriber::registry()
        .with(
            tracing_subscriber::fmt::layer()
                .with_writer(writer)
                .with_ansi(ansi)
                .with_filter(env)
                .with_filter(FilterFn::new(allowed)),
        )
        .try_init()
        .map_err(|e| e.to_string())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn dependencies_are_capped_at_info() {
        assert!(is_ting("ting_server::session"));
        assert!(is_ting("ting_media"));
        assert!(!is_ting("tingle"));
        assert!(!is_ting("str0m::ice"));
    }
}
