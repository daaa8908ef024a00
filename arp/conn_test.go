package arp

import (
	"bytes"
	"encoding/binary"
	"net"
	"testing"
	"time"

	"github.com/arpshare/arpshare/internal/bpf/bpftest"
)

// TestListenFilter: the raw socket's filter lets through the ARP requests
// of this interface's own segment (broadcast, or with a priority tag) and
// keeps out those for another host's MAC and those of a VLAN, which the
// kernel hands to a packet socket on the untagged interface too.
func TestListenFilter(t *testing.T) {
	bpftest.Privileged(t)
	v := bpftest.NewVeth(t)
	var conn Conn
	if err := v.Do(func() (err error) { conn, _, err = Listen("in"); return err }); err != nil {
		t.Fatalf("Listen: %v", err)
	}
	defer conn.Close()

	request := func(dst net.HardwareAddr, senderIP byte, tci int) []byte {
		f := append([]byte(nil), dst...)
		f = append(f, 0x02, 0, 0, 0, 0, senderIP)
		if tci >= 0 {
			f = binary.BigEndian.AppendUint16(f, 0x8100)
			f = binary.BigEndian.AppendUint16(f, uint16(tci))
		}
		f = binary.BigEndian.AppendUint16(f, etherTypeARP)
		f = append(f, 0, 1, 8, 0, 6, 4, 0, 1)      // Ethernet, IPv4, request
		f = append(f, 0x02, 0, 0, 0, 0, senderIP)  // sender MAC
		f = append(f, 198, 18, 0, senderIP)        // sender IP
		f = append(f, 0, 0, 0, 0, 0, 0)            // target MAC
		return append(f, 198, 18, 0, 100, 0, 0, 0) // target IP, padding
	}
	bcast := net.HardwareAddr{0xff, 0xff, 0xff, 0xff, 0xff, 0xff}
	other := net.HardwareAddr{0x02, 0, 0, 0, 0, 0x99}
	// Refused frames go first: a socket hands frames on in order, so the
	// first frame read shows whether any of them got through.
	v.Send(t, request(other, 1, -1))  // for another host
	v.Send(t, request(bcast, 2, 100)) // VLAN 100
	v.Send(t, request(bcast, 3, -1))  // this segment
	v.Send(t, request(bcast, 4, 0))   // priority tag, VLAN 0

	rc := conn.(*rawConn)
	var got []byte
	b := make([]byte, 1500)
	for len(got) < 2 {
		rc.c.SetReadDeadline(time.Now().Add(10 * time.Second))
		n, err := conn.ReadFrame(b)
		if err != nil {
			t.Fatalf("after %v: read: %v", got, err)
		}
		if n < 42 || !bytes.Equal(b[:6], bcast) {
			continue // the kernel's own frames, if any
		}
		got = append(got, b[27]) // the sender MAC's last byte, as its IP's
	}
	if !bytes.Equal(got, []byte{3, 4}) {
		t.Errorf("requests read, by sender 198.18.0.x: %v; want [3 4] (1: another host's MAC, 2: VLAN 100)", got)
	}
}
