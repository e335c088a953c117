//! `berth-monitor`: the steady state of a container's monitor. `berth
//! __monitor` execs into it once the container runs; it relays output, input
//! and attach clients until the init exits, then execs back into berth (see
//! [`berth_monitor::handover`]). Built on the berth-monitor crate alone, so
//! that it stays small in memory.

use berth_monitor::handover::{serve, Handover};

fn main() {
    let handover = match Handover::parse(std::env::args_os().skip(1)) {
        Ok(h) => h,
        Err(e) => {
            eprintln!("berth-monitor: {e}");
            std::process::exit(125);
        }
    };
    let id = handover.id.clone();
    let e = serve(handover);
    eprintln!("berth-monitor {id}: {e}");
    std::process::exit(125);
}
