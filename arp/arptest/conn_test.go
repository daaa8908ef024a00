package arptest

import (
	"errors"
	"net"
	"testing"
)

func TestConn(t *testing.T) {
	c := NewConn()
	c.In <- []byte("frame")
	b := make([]byte, 16)
	if n, err := c.ReadFrame(b); err != nil || string(b[:n]) != "frame" {
		t.Fatalf("read %q, %v", b[:n], err)
	}
	if err := c.WriteFrame([]byte("reply"), nil); err != nil {
		t.Fatal(err)
	}
	if w := c.Written(); len(w) != 1 || string(w[0]) != "reply" {
		t.Errorf("written %q", w)
	}
	close(c.In)
	if _, err := c.ReadFrame(b); err == nil || err.Error() != "link lost" {
		t.Errorf("read after In closed: %v", err)
	}
	c = NewConn()
	if c.Closed() {
		t.Error("a new Conn is closed")
	}
	c.Close()
	if _, err := c.ReadFrame(b); !errors.Is(err, net.ErrClosed) || !c.Closed() {
		t.Errorf("read after Close: %v, closed %v", err, c.Closed())
	}
}
