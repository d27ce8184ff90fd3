//! `FC_SIM_ANNOUNCE`: the guest announces itself when its network stack starts, so tests see
//! the frames a restored guest sends with whatever identity it has at that moment (its
//! source's until the agent's `reconfigure` lands).

use std::net::Ipv4Addr;
use std::sync::{Arc, Weak};

use crate::knobs::{ANNOUNCE_EVERY, ANNOUNCE_PORT, ANNOUNCE_TIMES};
use crate::netstack::{frames, GuestStack};

/// The two frames of one announce: a gratuitous ARP (sender and target are the guest's own
/// address) and a broadcast UDP datagram naming this VMM process.
pub(super) fn frames_for(mac: [u8; 6], ip: Ipv4Addr, pid: u32) -> [Vec<u8>; 2] {
    let payload = format!("announce pid={pid}");
    let addrs = frames::FrameAddrs {
        src_mac: mac,
        dst_mac: [0xff; 6],
        src_ip: ip,
        dst_ip: Ipv4Addr::BROADCAST,
    };
    [
        frames::arp_request(mac, ip, ip),
        frames::udp_frame(addrs, ANNOUNCE_PORT, ANNOUNCE_PORT, payload.as_bytes()),
    ]
}

/// Sends the announces from their own thread: a stack that starts frozen (a paused VM) holds
/// the frames until it is thawed, and the VMM thread must not wait for that. The thread keeps
/// only a weak reference, so it stops once the VMM replaces the stack (a new identity) or
/// exits: a guest's old identity is on the wire exactly as long as it has it.
pub(super) fn spawn(stack: &Arc<GuestStack>) {
    let config = stack.config();
    let frames = frames_for(config.mac, config.ip, std::process::id());
    let stack: Weak<GuestStack> = Arc::downgrade(stack);
    let _ = std::thread::Builder::new()
        .name("guest-announce".into())
        .spawn(move || {
            for _ in 0..ANNOUNCE_TIMES {
                for frame in &frames {
                    let Some(stack) = stack.upgrade() else {
                        return;
                    };
                    if stack.send_raw_frame(frame).is_err() {
                        return;
                    }
                }
                std::thread::sleep(ANNOUNCE_EVERY);
            }
        });
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn announce_carries_the_identity_and_the_pid() {
        let mac = [0x06, 0, 10, 0, 0, 2];
        let ip = Ipv4Addr::new(10, 0, 0, 2);
        let [arp, udp] = frames_for(mac, ip, 4242);
        // Ethernet: broadcast destination, the guest's MAC as source.
        assert_eq!(&arp[0..6], &[0xff; 6]);
        assert_eq!(&arp[6..12], &mac);
        assert_eq!(&arp[12..14], &[0x08, 0x06]);
        // ARP sender MAC/IP and target IP are the guest's own.
        assert_eq!(&arp[22..28], &mac);
        assert_eq!(&arp[28..32], &ip.octets());
        assert_eq!(&arp[38..42], &ip.octets());
        assert_eq!(&udp[6..12], &mac);
        assert_eq!(&udp[26..30], &ip.octets());
        assert_eq!(&udp[30..34], &[255; 4]);
        assert!(udp.ends_with(b"announce pid=4242"));
    }
}
