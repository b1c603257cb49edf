//! The load harness is a measuring tool, so it is tested for failing when it should: a
//! server that stops forwarding half-way through the window shows as loss (the streams
//! the server said it sends went quiet), and the run fails, instead of a clean 0 %.

mod common;

use std::time::Duration;

use common::*;
use ting_bench::run::{BenchOptions, Scenario, Target, run};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_server_that_stops_mid_run_is_loss() {
    let server = start_server(&[("media.bandwidth_estimation", "false")]).await;
    let mut opts = BenchOptions::new(
        Scenario::Meeting,
        Target::parse(&format!("http://{}", server.http)).expect("target"),
    );
    opts.participants = 4;
    opts.duration = Duration::from_secs(6);
    opts.ramp = 50.0;
    opts.settle = Duration::from_secs(10);
    opts.progress = false;
    opts.sample_every = 4;
    opts.video_slots = 3;
    opts.max_loss = 0.005;
    let bench = tokio::spawn(run(opts));

    // Once everyone receives media and the window is well under way, the server goes.
    let http = server.http;
    let deadline = tokio::time::Instant::now() + Duration::from_secs(30);
    loop {
        let (_, body) = server.get("/readyz").await;
        if body.contains("\"participants\":4") {
            break;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "the participants never joined ({http}): {body}"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    // Video, which flows at its rate whoever speaks (silent microphones send a packet
    // a few times a second under DTX).
    let forwarded = || async {
        server
            .metric("ting_rtp_packets_forwarded_total{kind=\"video\"}")
            .await
    };
    let start = forwarded().await;
    wait_for_async("media to flow", Duration::from_secs(20), || async {
        forwarded().await > start + 500.0
    })
    .await;
    tokio::time::sleep(Duration::from_secs(3)).await;
    server.stop().await;

    let report = tokio::time::timeout(Duration::from_secs(60), bench)
        .await
        .expect("the run ends by itself")
        .expect("the run's task");
    eprint!("{}", report.summary());
    assert_eq!(report.joins.succeeded, 4, "{:?}", report.joins);
    assert!(
        report.loss_ratio > 0.2,
        "a server gone for half the window must be loss, not {:.3} %",
        report.loss_ratio * 100.0
    );
    assert!(report.window.lost_silent > 0, "the loss is the silence");
    assert!(
        report.failures.iter().any(|f| f.contains("loss")),
        "the run fails: {:?}",
        report.failures
    );
}

/// Polls an async `check` every 50 ms until it holds or `timeout` passes.
async fn wait_for_async<F, Fut>(what: &str, timeout: Duration, mut check: F)
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = bool>,
{
    let deadline = tokio::time::Instant::now() + timeout;
    while !check().await {
        assert!(
            tokio::time::Instant::now() < deadline,
            "timed out after {timeout:?} waiting for {what}"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}
