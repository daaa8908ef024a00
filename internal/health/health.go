package health

import (
	"context"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"os/exec"
	"sync"
	"syscall"
	"time"

	"github.com/arpshare/arpshare/internal/config"
)

// probe runs a check once; ctx carries its timeout.
type probe func(ctx context.Context) error

func newProbe(c *config.Check) probe {
	switch {
	case c.TCP != "":
		return func(ctx context.Context) error {
			conn, err := (&net.Dialer{}).DialContext(ctx, "tcp", c.TCP)
			if err != nil {
				return err
			}
			return conn.Close()
		}
	case c.HTTP != "":
		client := &http.Client{
			// A redirect is an answer: judge it, do not chase it.
			CheckRedirect: func(*http.Request, []*http.Request) error { return http.ErrUseLastResponse },
			Transport:     &http.Transport{DisableKeepAlives: true},
		}
		return func(ctx context.Context) error {
			req, err := http.NewRequestWithContext(ctx, http.MethodGet, c.HTTP, nil)
			if err != nil {
				return err
			}
			resp, err := client.Do(req)
			if err != nil {
				return err
			}
			io.Copy(io.Discard, io.LimitReader(resp.Body, 64<<10))
			resp.Body.Close()
			if resp.StatusCode < 200 || resp.StatusCode > 299 {
				return fmt.Errorf("HTTP %s", resp.Status)
			}
			return nil
		}
	default:
		return func(ctx context.Context) error { return runCheck(ctx, c.Exec) }
	}
}

// runCheck runs argv with no shell, in /, with no capabilities and only
// PATH in its environment (see startUnprivileged). On timeout the whole
// process group is killed, so a check that forked cannot linger.
func runCheck(ctx context.Context, argv []string) error {
	cmd := exec.CommandContext(ctx, argv[0], argv[1:]...)
	cmd.SysProcAttr = &syscall.SysProcAttr{Setpgid: true}
	cmd.Cancel = func() error { return syscall.Kill(-cmd.Process.Pid, syscall.SIGKILL) }
	cmd.WaitDelay = time.Second
	cmd.Env, cmd.Dir = checkEnv, "/"
	err := startUnprivileged(cmd)
	if err == nil {
		err = cmd.Wait()
	}
	if ctx.Err() != nil {
		return fmt.Errorf("timed out: %w", ctx.Err())
	}
	return err
}

// healthCheck runs one VIP's check on its schedule and turns results into
// healthy or not with rise/fall hysteresis. A VIP starts unhealthy: a host
// takes clients only once its service has passed rise checks in a row.
type Check struct {
	vip      config.VIP
	probe    probe
	onChange func(healthy bool, err error)
	// ticks returns the schedule; tests replace it.
	ticks func(time.Duration) (<-chan time.Time, func())

	healthy      bool
	passes, fail int
	ready        chan struct{} // closed after the first probe
	once         sync.Once
}

func New(v config.VIP, onChange func(bool, error)) *Check {
	return &Check{vip: v, probe: newProbe(v.Check), onChange: onChange, ready: make(chan struct{}), ticks: func(d time.Duration) (<-chan time.Time, func()) {
		t := time.NewTicker(d)
		return t.C, t.Stop
	}}
}

// VIP is the VIP whose check h runs.
func (h *Check) VIP() config.VIP { return h.vip }

func (h *Check) String() string { return fmt.Sprintf("health check for vip %q", h.vip.Name) }

// Ready is closed once the check has run once.
func (h *Check) Ready() <-chan struct{} { return h.ready }

// observe counts one result and reports whether the state changed.
func (h *Check) observe(err error) bool {
	if err == nil {
		h.passes, h.fail = h.passes+1, 0
		if !h.healthy && h.passes >= h.vip.Check.Rise {
			h.healthy = true
			return true
		}
		return false
	}
	h.passes, h.fail = 0, h.fail+1
	if h.healthy && h.fail >= h.vip.Check.Fall {
		h.healthy = false
		return true
	}
	return false
}

// Run checks at once, then every interval, until ctx ends.
func (h *Check) Run(ctx context.Context) error {
	tick, stop := h.ticks(h.vip.Check.Interval)
	defer stop()
	for {
		pctx, cancel := context.WithTimeout(ctx, h.vip.Check.Timeout)
		err := h.probe(pctx)
		if err == nil && pctx.Err() != nil {
			err = errors.New("timed out")
		}
		cancel()
		if ctx.Err() != nil {
			return nil
		}
		if h.observe(err) {
			h.onChange(h.healthy, err)
		}
		h.once.Do(func() { close(h.ready) })
		select {
		case <-ctx.Done():
			return nil
		case <-tick:
		}
	}
}
