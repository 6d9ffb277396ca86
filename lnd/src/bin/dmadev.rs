//! The emulated DMA device process: `dmadev --fabric DIR`.
fn main() {
    let args: Vec<String> = std::env::args().skip(1).collect();
    if let Err(e) = lnd::daemon::dmadev::main(&args) {
        eprintln!("dmadev: {e:#}");
        std::process::exit(2);
    }
}
