//! The TAP fd as a smoltcp [`Device`]: one `read`/`write` per Ethernet frame, behind the
//! virtio-net header the TAP was opened with. Incoming frames whose checksum the kernel left
//! to the device (`VIRTIO_NET_HDR_F_NEEDS_CSUM`, only when the opener enabled offloads) are
//! completed here. ARP packets are snooped on the way in so the stack can tell tests the
//! MAC behind an address (for hand-built frames).

use std::collections::{HashMap, VecDeque};
use std::fs::File;
use std::io::{ErrorKind, Read, Write};
use std::net::Ipv4Addr;

use smoltcp::phy::{self, Device, DeviceCapabilities, Medium};
use smoltcp::time::Instant;
use smoltcp::wire::{ArpPacket, ArpRepr, EthernetFrame, EthernetProtocol};

use super::capture::{self, CapturedPacket};
use super::config::VnetHdr;

/// Largest frame we read: a full 64 KiB GSO frame plus any header, so nothing is truncated.
const RX_BUF: usize = 65_550;
/// `VIRTIO_NET_HDR_F_NEEDS_CSUM`.
const NEEDS_CSUM: u8 = 1;

/// A TAP fd (non-blocking) speaking Ethernet frames.
pub(crate) struct TapDevice {
    file: File,
    vnet: VnetHdr,
    rx_buf: Vec<u8>,
    /// IPv4 -> MAC, from every ARP packet seen on the TAP.
    pub(crate) arp_seen: HashMap<Ipv4Addr, [u8; 6]>,
    /// The last IPv4 packets that arrived.
    pub(crate) captured: VecDeque<CapturedPacket>,
}

impl std::os::fd::AsRawFd for TapDevice {
    fn as_raw_fd(&self) -> std::os::fd::RawFd {
        self.file.as_raw_fd()
    }
}

impl TapDevice {
    pub(crate) fn new(file: File, vnet: VnetHdr) -> Self {
        TapDevice {
            file,
            vnet,
            rx_buf: vec![0; RX_BUF],
            arp_seen: HashMap::new(),
            captured: VecDeque::new(),
        }
    }

    /// Reads one frame (without the virtio-net header), or None when none is waiting.
    fn read_frame(&mut self) -> Option<Vec<u8>> {
        loop {
            match self.file.read(&mut self.rx_buf) {
                Ok(0) => return None,
                Ok(n) if n <= self.vnet.len() => {} // runt: skip it
                Ok(n) => {
                    let (hdr, frame) = self.rx_buf[..n].split_at_mut(self.vnet.len());
                    complete_checksum(hdr, frame);
                    let frame = frame.to_vec();
                    self.snoop_arp(&frame);
                    capture::record(&mut self.captured, &frame);
                    return Some(frame);
                }
                Err(e) if e.kind() == ErrorKind::Interrupted => {}
                Err(_) => return None, // WouldBlock, or the TAP went away: nothing to read
            }
        }
    }

    fn snoop_arp(&mut self, frame: &[u8]) {
        let Ok(eth) = EthernetFrame::new_checked(frame) else {
            return;
        };
        if eth.ethertype() != EthernetProtocol::Arp {
            return;
        }
        if let Ok(ArpRepr::EthernetIpv4 {
            source_hardware_addr,
            source_protocol_addr,
            ..
        }) = ArpPacket::new_checked(eth.payload()).and_then(|p| ArpRepr::parse(&p))
        {
            self.arp_seen
                .insert(source_protocol_addr, source_hardware_addr.0);
        }
    }

    /// Writes one Ethernet frame, prefixing the (all-zero: no offloads) virtio-net header.
    pub(crate) fn write_frame(&mut self, frame: &[u8]) -> std::io::Result<()> {
        let mut buf = vec![0u8; self.vnet.len() + frame.len()];
        buf[self.vnet.len()..].copy_from_slice(frame);
        write_all_once(&self.file, &buf)
    }
}

/// A TAP takes a frame in one write; a short write would be a kernel bug, reported as such.
fn write_all_once(mut file: &File, buf: &[u8]) -> std::io::Result<()> {
    let n = file.write(buf)?;
    if n != buf.len() {
        return Err(std::io::Error::new(
            ErrorKind::WriteZero,
            format!("Short TAP write: {n} of {} bytes", buf.len()),
        ));
    }
    Ok(())
}

/// Completes a checksum the kernel left partial: the ones'-complement sum from `csum_start`
/// to the end (the field already holds the pseudo-header sum) is stored complemented at
/// `csum_start + csum_offset`. Out-of-range offsets leave the frame alone.
pub(crate) fn complete_checksum(hdr: &[u8], frame: &mut [u8]) {
    if hdr.len() < 10 || hdr[0] & NEEDS_CSUM == 0 {
        return;
    }
    let start = usize::from(u16::from_le_bytes([hdr[6], hdr[7]]));
    let field = start + usize::from(u16::from_le_bytes([hdr[8], hdr[9]]));
    if field + 2 > frame.len() {
        return;
    }
    let mut sum: u32 = 0;
    for chunk in frame[start..].chunks(2) {
        let word = u16::from_be_bytes([chunk[0], chunk.get(1).copied().unwrap_or(0)]);
        sum += u32::from(word);
    }
    while sum > 0xffff {
        sum = (sum & 0xffff) + (sum >> 16);
    }
    frame[field..field + 2].copy_from_slice(&(!(sum as u16)).to_be_bytes());
}

impl Device for TapDevice {
    type RxToken<'a> = RxToken;
    type TxToken<'a> = TxToken<'a>;

    fn receive(&mut self, _now: Instant) -> Option<(RxToken, TxToken<'_>)> {
        let frame = self.read_frame()?;
        Some((RxToken(frame), TxToken(self)))
    }

    fn transmit(&mut self, _now: Instant) -> Option<TxToken<'_>> {
        Some(TxToken(self))
    }

    fn capabilities(&self) -> DeviceCapabilities {
        let mut caps = DeviceCapabilities::default();
        caps.medium = Medium::Ethernet;
        caps.max_transmission_unit = 1514;
        caps
    }
}

/// A received frame.
pub(crate) struct RxToken(Vec<u8>);

impl phy::RxToken for RxToken {
    fn consume<R, F: FnOnce(&[u8]) -> R>(self, f: F) -> R {
        f(&self.0)
    }
}

/// Permission to write one frame.
pub(crate) struct TxToken<'a>(&'a mut TapDevice);

impl phy::TxToken for TxToken<'_> {
    fn consume<R, F: FnOnce(&mut [u8]) -> R>(self, len: usize, f: F) -> R {
        let hdr = self.0.vnet.len();
        let mut buf = vec![0u8; hdr + len];
        let r = f(&mut buf[hdr..]);
        // A full TAP queue drops the frame, as a NIC would; TCP retransmits.
        let _ = write_all_once(&self.0.file, &buf);
        r
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn completes_a_partial_udp_checksum() {
        // 14-byte Ethernet, 20-byte IPv4 (10.0.0.1 -> 10.0.0.2), UDP 1234 -> 53, payload "hi".
        let mut frame = vec![0u8; 14 + 20 + 8 + 2];
        frame[12..14].copy_from_slice(&[0x08, 0x00]);
        let udp = 34;
        frame[udp..udp + 2].copy_from_slice(&1234u16.to_be_bytes());
        frame[udp + 2..udp + 4].copy_from_slice(&53u16.to_be_bytes());
        frame[udp + 4..udp + 6].copy_from_slice(&10u16.to_be_bytes());
        frame[udp + 8..].copy_from_slice(b"hi");
        // Pseudo-header sum: src + dst + proto 17 + UDP length 10.
        let pseudo: u32 = 0x0a00 + 0x0001 + 0x0a00 + 0x0002 + 17 + 10;
        frame[udp + 6..udp + 8].copy_from_slice(&(pseudo as u16).to_be_bytes());
        let mut hdr = [0u8; 12];
        hdr[0] = NEEDS_CSUM;
        hdr[6..8].copy_from_slice(&(udp as u16).to_le_bytes());
        hdr[8..10].copy_from_slice(&6u16.to_le_bytes());
        complete_checksum(&hdr, &mut frame);
        // Summing the pseudo-header and the whole segment (with the checksum) gives 0xffff.
        let mut sum: u32 = pseudo;
        for c in frame[udp..].chunks(2) {
            sum += u32::from(u16::from_be_bytes([c[0], *c.get(1).unwrap_or(&0)]));
        }
        while sum > 0xffff {
            sum = (sum & 0xffff) + (sum >> 16);
        }
        assert_eq!(sum, 0xffff);
    }

    #[test]
    fn leaves_frames_without_the_flag_or_with_bad_offsets() {
        let mut frame = vec![7u8; 40];
        let hdr = [0u8; 10];
        complete_checksum(&hdr, &mut frame);
        assert_eq!(frame, vec![7u8; 40]);
        let mut hdr = [0u8; 10];
        hdr[0] = NEEDS_CSUM;
        hdr[6] = 39;
        hdr[8] = 1;
        complete_checksum(&hdr, &mut frame);
        assert_eq!(frame, vec![7u8; 40]);
    }
}
