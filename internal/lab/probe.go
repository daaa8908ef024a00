package lab

import (
	"context"
	"fmt"
	"net/netip"
	"sync"
	"time"
)

// Sample is one connection attempt from a client to the VIP.
type Sample struct {
	At   time.Time // when the attempt ended
	Host string    // who answered; empty on failure
	Err  error
}

// Probe keeps every given client connecting to the VIP, over and over, and
// records each attempt.
type Probe struct {
	cancel  context.CancelFunc
	clients int
	wg      sync.WaitGroup
	mu      sync.Mutex
	samples map[string][]Sample
}

// StartProbe starts a connection attempt to vip from every client each
// interval, each bounded by timeout, until Stop.
func StartProbe(clients []*Client, vip netip.Addr, interval, timeout time.Duration) *Probe {
	ctx, cancel := context.WithCancel(context.Background())
	p := &Probe{cancel: cancel, clients: len(clients), samples: map[string][]Sample{}}
	for _, c := range clients {
		p.wg.Go(func() {
			t := time.NewTicker(interval)
			defer t.Stop()
			for {
				host, err := c.DialVIP(vip, timeout)
				p.mu.Lock()
				p.samples[c.Name] = append(p.samples[c.Name], Sample{At: time.Now(), Host: host, Err: err})
				p.mu.Unlock()
				select {
				case <-ctx.Done():
					return
				case <-t.C:
				}
			}
		})
	}
	return p
}

// Last returns each client's latest sample.
func (p *Probe) Last() map[string]Sample {
	p.mu.Lock()
	defer p.mu.Unlock()
	m := map[string]Sample{}
	for c, s := range p.samples {
		if len(s) > 0 {
			m[c] = s[len(s)-1]
		}
	}
	return m
}

// WaitServed waits until every client's latest attempt succeeded.
func (p *Probe) WaitServed(within time.Duration) error {
	deadline := time.Now().Add(within)
	for {
		served := 0
		for _, s := range p.Last() {
			if s.Err == nil {
				served++
			}
		}
		if served == p.clients {
			return nil
		}
		if time.Now().After(deadline) {
			return fmt.Errorf("probe: %d of %d clients served within %s", served, p.clients, within)
		}
		time.Sleep(20 * time.Millisecond)
	}
}

// Stop ends the probe and returns every sample by client name.
func (p *Probe) Stop() map[string][]Sample {
	p.cancel()
	p.wg.Wait()
	p.mu.Lock()
	defer p.mu.Unlock()
	return p.samples
}

// LongestOutage returns the longest time between the last success before a
// failure and the next success (or the last sample, if none came).
func LongestOutage(samples []Sample) time.Duration {
	var longest time.Duration
	var lastOK time.Time
	failing := false
	for _, s := range samples {
		switch {
		case s.Err != nil:
			failing = true
		case failing:
			if !lastOK.IsZero() {
				longest = max(longest, s.At.Sub(lastOK))
			}
			failing, lastOK = false, s.At
		default:
			lastOK = s.At
		}
	}
	if failing && len(samples) > 0 && !lastOK.IsZero() {
		longest = max(longest, samples[len(samples)-1].At.Sub(lastOK))
	}
	return longest
}

// FirstServedAfter returns the first successful sample after t by a host
// other than not, or false.
func FirstServedAfter(samples []Sample, t time.Time, not string) (Sample, bool) {
	for _, s := range samples {
		if s.At.After(t) && s.Err == nil && s.Host != not {
			return s, true
		}
	}
	return Sample{}, false
}
