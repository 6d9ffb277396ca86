//! One LNet node: `lnetd --fabric DIR --nid N@dma`, JSON commands on stdin.
fn main() {
    let args: Vec<String> = std::env::args().skip(1).collect();
    if let Err(e) = lnd::daemon::lnetd::main(&args) {
        eprintln!("lnetd: {e:#}");
        std::process::exit(2);
    }
}
