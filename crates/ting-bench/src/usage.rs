//! What the server under test uses: from ting's `/metrics`, or from `/proc/<pid>` for any
//! server (Janus has no equivalent endpoint).

use std::time::Duration;

use crate::http;
use crate::report::ServerSample;

/// Where server figures come from.
#[derive(Debug, Clone)]
pub enum ServerProbe {
    /// A ting server's Prometheus endpoint.
    Metrics(String),
    /// Any process.
    Proc(u32),
    /// A ting server whose process is known: CPU and memory of the whole process from
    /// /proc, the figures only ting has (forwarded packets, internal latency) from metrics.
    Both { metrics: String, pid: u32 },
}

impl ServerProbe {
    pub async fn sample(&self) -> Option<ServerSample> {
        match self {
            ServerProbe::Metrics(url) => metrics_sample(url).await,
            ServerProbe::Proc(pid) => {
                let (cpu_seconds, rss_bytes) = proc_usage(&format!("/proc/{pid}"))?;
                Some(ServerSample {
                    cpu_seconds,
                    rss_bytes,
                    ..Default::default()
                })
            }
            ServerProbe::Both { metrics, pid } => {
                let (cpu_seconds, rss_bytes) = proc_usage(&format!("/proc/{pid}"))?;
                let mut s = metrics_sample(metrics).await.unwrap_or_default();
                s.cpu_seconds = cpu_seconds;
                s.rss_bytes = rss_bytes;
                Some(s)
            }
        }
    }
}

async fn metrics_sample(url: &str) -> Option<ServerSample> {
    let (status, body) = http::get(url, Duration::from_secs(5)).await.ok()?;
    (status == 200).then(|| parse_metrics(&body))
}

/// Reads what ting's `/metrics` says about CPU, memory, forwarding and its latency.
pub fn parse_metrics(text: &str) -> ServerSample {
    let mut s = ServerSample::default();
    let mut forwarded = None::<u64>;
    let mut stale = 0;
    for line in text.lines().filter(|l| !l.starts_with('#')) {
        let Some((name, value)) = line.rsplit_once(' ') else {
            continue;
        };
        let Ok(v) = value.parse::<f64>() else {
            continue;
        };
        if name == "process_cpu_seconds_total" {
            s.cpu_seconds = v;
        } else if name == "process_resident_memory_bytes" {
            s.rss_bytes = v as u64;
        } else if name.starts_with("ting_rtp_packets_forwarded_total") {
            *forwarded.get_or_insert(0) += v as u64;
        } else if let Some(cause) = name
            .strip_prefix("ting_connection_ticks_total{cause=\"")
            .and_then(|c| c.strip_suffix("\"}"))
        {
            s.ticks.push((cause.to_string(), v as u64));
        } else if name == "ting_media_load_sheds_total" {
            s.load_sheds = Some(v as u64);
        } else if name == "ting_media_workers_shedding" {
            s.shedding_workers = Some(v as u64);
        } else if name == "ting_dropped_total{reason=\"stale\"}" {
            stale = v as u64;
        } else if name == "ting_dropped_total{reason=\"receive_buffer_full\"}" {
            s.receive_buffer_drops = Some(v as u64);
        } else if let Some(rest) = name.strip_prefix("ting_receive_queue_wait_seconds_bucket{le=\"")
        {
            s.receive_wait.push((bucket_bound(rest), v as u64));
        } else if let Some(rest) = name.strip_prefix("ting_forwarding_latency_seconds_bucket{le=\"")
        {
            s.internal_latency.push((bucket_bound(rest), v as u64));
        } else if let Some(rest) =
            name.strip_prefix("ting_audio_forwarding_latency_seconds_bucket{le=\"")
        {
            s.internal_audio_latency
                .push((bucket_bound(rest), v as u64));
        }
    }
    // Written to a subscriber and dropped unsent as too old is not forwarded.
    s.forwarded = forwarded.map(|f| f.saturating_sub(stale));
    s
}

/// The upper bound of a histogram bucket from the rest of its line after `le="`.
fn bucket_bound(rest: &str) -> f64 {
    let le = rest.trim_end_matches("\"}");
    if le == "+Inf" {
        f64::INFINITY
    } else {
        le.parse().unwrap_or(f64::INFINITY)
    }
}

/// CPU time of a process, all threads, in seconds.
#[derive(Debug, Clone, Copy, Default, PartialEq)]
pub struct CpuTimes {
    /// In the process's own code (`utime`).
    pub user: f64,
    /// In the kernel on its behalf: its system calls and what they run (`stime`).
    pub kernel: f64,
}

impl CpuTimes {
    pub fn total(self) -> f64 {
        self.user + self.kernel
    }

    /// What was spent since `earlier`.
    pub fn since(self, earlier: CpuTimes) -> CpuTimes {
        CpuTimes {
            user: self.user - earlier.user,
            kernel: self.kernel - earlier.kernel,
        }
    }
}

/// CPU time and resident bytes of a process.
fn proc_times(dir: &str) -> Option<(CpuTimes, u64)> {
    let stat = std::fs::read_to_string(format!("{dir}/stat")).ok()?;
    let rest = stat.rsplit_once(')')?.1;
    let f: Vec<&str> = rest.split_whitespace().collect();
    let utime: f64 = f.get(11)?.parse().ok()?;
    let stime: f64 = f.get(12)?.parse().ok()?;
    let statm = std::fs::read_to_string(format!("{dir}/statm")).ok()?;
    let pages: u64 = statm.split_whitespace().nth(1)?.parse().ok()?;
    // SAFETY: sysconf has no preconditions.
    let (ticks, page) = unsafe {
        (
            libc::sysconf(libc::_SC_CLK_TCK).max(1) as f64,
            libc::sysconf(libc::_SC_PAGESIZE).max(1) as u64,
        )
    };
    let cpu = CpuTimes {
        user: utime / ticks,
        kernel: stime / ticks,
    };
    Some((cpu, pages * page))
}

/// CPU seconds (user + system, all threads) and resident bytes of a process.
pub fn proc_usage(dir: &str) -> Option<(f64, u64)> {
    proc_times(dir).map(|(cpu, rss)| (cpu.total(), rss))
}

/// CPU time of this process (the harness itself).
pub fn own_cpu() -> CpuTimes {
    proc_times("/proc/self").map_or_else(CpuTimes::default, |(cpu, _)| cpu)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn metrics_text_is_read() {
        let text = "# HELP x\nprocess_cpu_seconds_total 12.5\nprocess_resident_memory_bytes 1000\n\
            ting_rtp_packets_forwarded_total{kind=\"audio\"} 10\n\
            ting_rtp_packets_forwarded_total{kind=\"video\"} 40\n\
            ting_dropped_total{reason=\"malformed\"} 3\n\
            ting_dropped_total{reason=\"stale\"} 8\n\
            ting_connection_ticks_total{cause=\"written\"} 6\n\
            ting_connection_ticks_total{cause=\"nack\"} 0\n\
            ting_media_load_sheds_total 3\n\
            ting_media_workers_shedding 1\n\
            ting_forwarding_latency_seconds_bucket{le=\"1.0e-6\"} 1\n\
            ting_forwarding_latency_seconds_bucket{le=\"+Inf\"} 5\n\
            ting_audio_forwarding_latency_seconds_bucket{le=\"0.001\"} 2\n\
            ting_audio_forwarding_latency_seconds_bucket{le=\"+Inf\"} 3\n\
            ting_dropped_total{reason=\"receive_buffer_full\"} 21\n\
            ting_receive_queue_wait_seconds_bucket{le=\"0.32\"} 4\n\
            ting_receive_queue_wait_seconds_bucket{le=\"+Inf\"} 6\n";
        let s = parse_metrics(text);
        assert_eq!(s.cpu_seconds, 12.5);
        assert_eq!(s.rss_bytes, 1000);
        assert_eq!((s.load_sheds, s.shedding_workers), (Some(3), Some(1)));
        assert_eq!(s.forwarded, Some(42));
        assert_eq!(s.internal_latency, vec![(1e-6, 1), (f64::INFINITY, 5)]);
        assert_eq!(
            s.internal_audio_latency,
            vec![(0.001, 2), (f64::INFINITY, 3)]
        );
        assert_eq!(s.receive_buffer_drops, Some(21));
        assert_eq!(s.receive_wait, vec![(0.32, 4), (f64::INFINITY, 6)]);
        assert_eq!(
            s.ticks,
            vec![("written".to_string(), 6), ("nack".to_string(), 0)]
        );
    }

    #[test]
    fn own_process_is_measurable() {
        let (cpu, rss) = proc_usage("/proc/self").unwrap();
        assert!(cpu >= 0.0);
        assert!(rss > 0);
        assert!(proc_usage("/proc/0").is_none());
    }

    #[test]
    fn kernel_time_is_told_apart() {
        let before = own_cpu();
        // System calls until the kernel's share has moved by a clock tick or more (the
        // counters advance in ticks of 10 ms); bounded, so that it fails rather than hangs.
        let deadline = std::time::Instant::now() + Duration::from_secs(20);
        let mut after = own_cpu();
        while after.kernel - before.kernel < 0.02 && std::time::Instant::now() < deadline {
            for _ in 0..1000 {
                let _ = std::fs::metadata("/proc/self/stat");
            }
            after = own_cpu();
        }
        let spent = after.since(before);
        assert!(spent.kernel >= 0.02, "no kernel time counted: {spent:?}");
        assert!(spent.user >= 0.0);
        assert!((spent.total() - (spent.user + spent.kernel)).abs() < 1e-9);
    }
}
