//! `ting-bench`: load tests against a running ting (scenarios arrive with the harness).

fn main() {
    eprintln!("ting-bench: scenarios are not built yet");
    std::process::exit(2);
}
