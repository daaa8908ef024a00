package lab

import (
	"context"
	"encoding/binary"
	"fmt"
	"net"
	"net/netip"
	"slices"
	"time"

	"github.com/arpshare/arpshare/arp"
)

// arpRequest builds the Ethernet frame of a broadcast ARP request for
// target from sender.
func arpRequest(senderMAC net.HardwareAddr, sender, target netip.Addr) []byte {
	b := make([]byte, 42)
	copy(b[0:6], []byte{0xff, 0xff, 0xff, 0xff, 0xff, 0xff})
	copy(b[6:12], senderMAC)
	binary.BigEndian.PutUint16(b[12:], 0x0806)
	binary.BigEndian.PutUint16(b[14:], 1)      // Ethernet
	binary.BigEndian.PutUint16(b[16:], 0x0800) // IPv4
	b[18], b[19] = 6, 4
	binary.BigEndian.PutUint16(b[20:], 1) // request
	copy(b[22:28], senderMAC)
	s, t := sender.As4(), target.As4()
	copy(b[28:32], s[:])
	copy(b[38:42], t[:])
	return b
}

// ARPAnswers sends one broadcast ARP request for vip from the client's own
// address and MAC, and returns every MAC that answers within wait: the
// raw view of who answers, whatever the client's kernel then keeps.
func (c *Client) ARPAnswers(vip netip.Addr, wait time.Duration) ([]string, error) {
	var macs []string
	err := inNS(c.NS, func() error {
		conn, mac, err := arp.Listen("eth0")
		if err != nil {
			return err
		}
		defer conn.Close()
		if err := conn.WriteFrame(arpRequest(mac, c.Addr, vip), net.HardwareAddr{0xff, 0xff, 0xff, 0xff, 0xff, 0xff}); err != nil {
			return fmt.Errorf("send ARP request: %w", err)
		}
		done := make(chan struct{})
		defer close(done)
		go func() {
			select {
			case <-done:
			case <-time.After(wait):
				conn.Close() // ends the read below
			}
		}()
		b := make([]byte, 1500)
		for {
			n, err := conn.ReadFrame(b)
			if err != nil {
				return nil // closed: wait is over
			}
			if n < 42 || binary.BigEndian.Uint16(b[20:]) != 2 {
				continue
			}
			from, _ := netip.AddrFromSlice(b[28:32])
			to, _ := netip.AddrFromSlice(b[38:42])
			if from == vip && to == c.Addr {
				if m := net.HardwareAddr(b[22:28]).String(); !slices.Contains(macs, m) {
					macs = append(macs, m)
				}
			}
		}
	})
	return macs, err
}

// floodFirst is the address of Flood's first fake sender.
var floodFirst = netip.MustParseAddr("198.19.0.0")

// Flood sends ARP requests for vip out of the client's port, from senders
// fake machines (BenchSender's, from 198.19.0.0 on) in turn, at
// rate frames a second, until d has passed or ctx ends. It returns how many
// frames went out.
func (c *Client) Flood(ctx context.Context, vip netip.Addr, senders, rate int, d time.Duration) (int, error) {
	sent := 0
	err := inNS(c.NS, func() error {
		conn, _, err := arp.Listen("eth0")
		if err != nil {
			return err
		}
		defer conn.Close()
		frames := make([][]byte, senders)
		for i := range frames {
			ip, mac := BenchSender(floodFirst, i)
			frames[i] = arpRequest(mac, ip, vip)
		}
		bcast := net.HardwareAddr{0xff, 0xff, 0xff, 0xff, 0xff, 0xff}
		const tick = 10 * time.Millisecond
		perTick := max(1, rate*int(tick)/int(time.Second))
		t := time.NewTicker(tick)
		defer t.Stop()
		end := time.Now().Add(d)
		for time.Now().Before(end) && ctx.Err() == nil {
			for range perTick {
				if err := conn.WriteFrame(frames[sent%senders], bcast); err == nil {
					sent++
				}
			}
			<-t.C
		}
		return nil
	})
	return sent, err
}
