package arp

import (
	"encoding/binary"
	"net/netip"
	"time"
)

// The decision on one received message reads the message where it lies and
// the responder's snapshot, and allocates nothing: at tens of thousands of
// frames a second, garbage is CPU (docs/design.md, "The reply path").

// verdict is what to do with one message.
type verdict struct {
	out   Outcome
	vip   int // index of the VIP concerned in the snapshot, -1 for none
	send  bool
	delay time.Duration
}

func drop(o Outcome) verdict { return verdict{out: o, vip: -1} }

// An ARP request for IPv4 over Ethernet, as it arrives: the Ethernet header,
// then the ARP packet.
const (
	arpFrameLen = 14 + 28
	offEtherSrc = 6
	offSHA      = 14 + 8
	offSPA      = offSHA + 6
	offTHA      = offSPA + 4
	offTPA      = offTHA + 6
	arpRequest  = 1
	arpReplyOp  = 2
)

// arpHeader is what bytes 12 to 22 of an ARP frame for IPv4 over Ethernet
// hold, but for the operation: EtherType ARP, hardware type Ethernet,
// protocol IPv4, address lengths 6 and 4.
var arpHeader = [8]byte{0x08, 0x06, 0, 1, 0x08, 0x00, 6, 4}

var broadcast = [6]byte{0xff, 0xff, 0xff, 0xff, 0xff, 0xff}

// UnicastMAC reports whether mac can be one machine's own address: six
// bytes, not a group address (multicast, broadcast) and not all zeros.
// Nothing is learned from, answered to or re-pointed at any other.
func UnicastMAC(mac []byte) bool {
	return len(mac) == 6 && mac[0]&1 == 0 && [6]byte(mac) != [6]byte{}
}

// unicastIP reports whether a is an address a client can have: not
// multicast, not the IPv4 broadcast, not loopback, not unspecified.
func unicastIP(a netip.Addr) bool {
	return a.IsValid() && !a.IsUnspecified() && !a.IsMulticast() && !a.IsLoopback() &&
		a != netip.AddrFrom4([4]byte{255, 255, 255, 255})
}

// checkSender vets the sender of an ARP frame: its hardware address must
// be unicast and the frame's Ethernet source, and its address one a
// machine can have (or 0.0.0.0, a duplicate-address probe).
func checkSender(f []byte) (Outcome, bool) {
	sha := f[offSHA : offSHA+6]
	if !UnicastMAC(sha) {
		return BadSenderMAC, false
	}
	if [6]byte(sha) != [6]byte(f[offEtherSrc:offEtherSrc+6]) {
		return MACMismatch, false
	}
	if spa := netip.AddrFrom4([4]byte(f[offSPA : offSPA+4])); !spa.IsUnspecified() && !unicastIP(spa) {
		return BadSenderIP, false
	}
	return "", true
}

// decideARP decides on one Ethernet frame received on an interface whose
// MAC is mac, learning the sender of a request for a VIP into the table.
func (r *Responder) decideARP(s *snapshot, f []byte, mac [6]byte, now time.Time) verdict {
	if len(f) < arpFrameLen || [8]byte(f[12:20]) != arpHeader {
		return drop(Malformed)
	}
	// Whatever the frame says, a sender that no machine can be teaches
	// nothing and is answered nothing: a broadcast sender learned as a
	// client would have every re-pointing packet and kernel answer to it
	// go to the whole segment.
	if o, ok := checkSender(f); !ok {
		return drop(o)
	}
	sha := f[offSHA : offSHA+6]
	if i := s.find4(f[offSPA : offSPA+4]); i >= 0 && [6]byte(sha) != mac {
		if s.peers[[6]byte(sha)] {
			return verdict{out: PeerAnnounce, vip: i}
		}
		r.warnConflict(s.vips[i].Address, sha)
		return verdict{out: Conflict, vip: i}
	}
	if binary.BigEndian.Uint16(f[20:22]) != arpRequest {
		// A reply to the VIP answers this host's re-pointing request (the
		// kernel never asks from the VIP): it confirms the client is there.
		if i := s.find4(f[offTPA : offTPA+4]); i >= 0 {
			if client := netip.AddrFrom4([4]byte(f[offSPA : offSPA+4])); !client.IsUnspecified() {
				r.cfg.Table.Confirm(s.vips[i].Address, client, sha, now)
			}
		}
		return drop(Reply)
	}
	i := s.find4(f[offTPA : offTPA+4])
	if i < 0 {
		return drop(Foreign)
	}
	client := netip.AddrFrom4([4]byte(f[offSPA : offSPA+4]))
	// An unspecified sender is a duplicate-address probe for the VIP. It
	// teaches nothing, but one host must answer it so that whoever probes
	// learns the address is taken; ownership of 0.0.0.0 picks that host.
	if !client.IsUnspecified() {
		// Every host hears a broadcast and learns the same from it; only
		// this host hears a unicast request (a client refreshing its
		// entry for the VIP), and tells the others.
		if [6]byte(f[0:6]) == broadcast {
			r.cfg.Table.LearnBroadcast(s.vips[i].Address, client, sha, now)
		} else {
			r.cfg.Table.Learn(s.vips[i].Address, client, sha, now)
		}
	}
	ok, delay := s.answer(i, client)
	if !ok {
		return verdict{out: NotOwner, vip: i}
	}
	return verdict{out: Answered, vip: i, send: true, delay: delay}
}

// arpReply writes into b (arpFrameLen bytes) the reply to request req, from
// mac: to the request's Ethernet source, saying that the address asked for
// is at mac.
func arpReply(b, req []byte, mac [6]byte) {
	copy(b[0:6], req[offEtherSrc:offEtherSrc+6])
	copy(b[6:12], mac[:])
	copy(b[12:20], arpHeader[:])
	binary.BigEndian.PutUint16(b[20:22], arpReplyOp)
	copy(b[offSHA:], mac[:])
	copy(b[offSPA:offSPA+4], req[offTPA:offTPA+4])
	copy(b[offTHA:offTHA+6], req[offSHA:offSHA+6])
	copy(b[offTPA:offTPA+4], req[offSPA:offSPA+4])
}

// ICMPv6 Neighbor Discovery messages as an ICMPv6 socket delivers them
// (RFC 4861, 4.3 and 4.4): type, code, checksum (checked by the kernel),
// 4 bytes of flags and reserved, the target, then options of 8-byte units.
const (
	icmpNS         = 135
	icmpNA         = 136
	ndpTargetOff   = 8
	ndpOptionsOff  = 24
	optSourceLLA   = 1
	optTargetLLA   = 2
	hopLimitNeeded = 255
	naSolicited    = 0x40 // the Solicited flag of an advertisement
)

// confirmNDP takes a solicited advertisement of target, not a VIP, as a
// client's answer to this host's re-pointing solicitation (sent to the
// VIP): it confirms the client is there. Linux leaves the target link-layer
// option (other) out of an answer to a unicast solicitation; the MAC is then
// the one known.
func (r *Responder) confirmNDP(s *snapshot, target netip.Addr, other []byte, now time.Time) {
	if !unicastIP(target) {
		return
	}
	for _, v := range s.vips {
		if mac, known := r.cfg.Table.MAC(v.Address, target); known {
			if other != nil {
				mac = [6]byte(other)
			}
			r.cfg.Table.Confirm(v.Address, target, mac[:], now)
		}
	}
}

// ndpAnswer is what kind of advertisement answers a solicitation.
type ndpAnswer uint8

const (
	answerSolicited ndpAnswer = iota // to the client, Solicited set
	answerAllNodes                   // duplicate address detection: to all nodes
)

// ndpVerdict is a verdict on an NDP message, with how to answer.
type ndpVerdict struct {
	verdict
	answer ndpAnswer
}

// linkLayerOpt finds option typ (source or target link-layer address) among
// NDP options and returns its MAC; ok is false if the options are malformed.
func linkLayerOpt(opts []byte, typ byte) (mac []byte, ok bool) {
	for len(opts) > 0 {
		if len(opts) < 2 || opts[1] == 0 || int(opts[1])*8 > len(opts) {
			return nil, false
		}
		n := int(opts[1]) * 8
		if opts[0] == typ && n == 8 && mac == nil {
			mac = opts[2:8]
		}
		opts = opts[n:]
	}
	return mac, true
}

// decideNDP decides on one ICMPv6 message from src, received with hop limit
// hops, on an interface whose MAC is mac.
func (r *Responder) decideNDP(s *snapshot, b []byte, hops int, src netip.Addr, mac [6]byte, now time.Time) ndpVerdict {
	bad := ndpVerdict{verdict: drop(Malformed)}
	// The hop limit proves a message was not routed (RFC 4861, 7.1.1).
	if len(b) < 4 || hops != hopLimitNeeded {
		return bad
	}
	if b[0] != icmpNS && b[0] != icmpNA {
		return ndpVerdict{verdict: drop(Reply)} // nothing to answer
	}
	if len(b) < ndpOptionsOff || b[1] != 0 {
		return bad
	}
	target := netip.AddrFrom16([16]byte(b[ndpTargetOff:ndpOptionsOff]))
	if target.IsMulticast() {
		return bad
	}
	// A machine's source is unicast, or unspecified while it checks that
	// an address is free (RFC 4291 2.7, RFC 4861 7.1.1).
	if !src.IsUnspecified() && !unicastIP(src) {
		return ndpVerdict{verdict: drop(BadSenderIP)}
	}
	i := s.find(target)
	if b[0] == icmpNA {
		other, ok := linkLayerOpt(b[ndpOptionsOff:], optTargetLLA)
		if !ok {
			return bad
		}
		if other != nil && !UnicastMAC(other) {
			return ndpVerdict{verdict: drop(BadSenderMAC)}
		}
		if i < 0 && b[4]&naSolicited != 0 {
			r.confirmNDP(s, target, other, now)
		}
		if i < 0 || other == nil || [6]byte(other) == mac {
			return ndpVerdict{verdict: drop(Reply)}
		}
		if s.peers[[6]byte(other)] {
			return ndpVerdict{verdict: verdict{out: PeerAnnounce, vip: i}}
		}
		r.warnConflict(target, other)
		return ndpVerdict{verdict: verdict{out: Conflict, vip: i}}
	}
	from, ok := linkLayerOpt(b[ndpOptionsOff:], optSourceLLA)
	if !ok {
		return bad
	}
	if from != nil && !UnicastMAC(from) {
		return ndpVerdict{verdict: drop(BadSenderMAC)}
	}
	if i < 0 {
		return ndpVerdict{verdict: drop(Foreign)}
	}
	// An unspecified source is duplicate address detection for the VIP,
	// which carries no source link-layer option (RFC 4861 7.1.1). The
	// owner of :: answers it to all nodes with Override clear (see
	// message): the prober learns the address is taken, and nobody's
	// cache entry for the VIP moves.
	if src.IsUnspecified() {
		if from != nil {
			return bad
		}
		if ok, delay := s.answer(i, src); ok {
			return ndpVerdict{verdict: verdict{out: Answered, vip: i, send: true, delay: delay}, answer: answerAllNodes}
		}
		return ndpVerdict{verdict: verdict{out: NotOwner, vip: i}}
	}
	// A solicitation to check reachability may come without the sender's
	// MAC; only those that carry it teach the table.
	vip := s.vips[i].Address
	if from != nil {
		r.cfg.Table.Learn(vip, src, from, now)
	}
	ok, delay := s.answer(i, src)
	if !ok {
		return ndpVerdict{verdict: verdict{out: NotOwner, vip: i}}
	}
	return ndpVerdict{verdict: verdict{out: Answered, vip: i, send: true, delay: delay}}
}
