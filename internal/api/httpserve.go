package api

import (
	"context"
	"errors"
	"net"
	"net/http"
	"time"

	"golang.org/x/net/netutil"
)

// serverLimits bound what one client of the API or metrics server can
// hold: a connection that sends its request too slowly, reads its answer
// too slowly or sits idle is closed, and connections beyond Conns wait in
// the listen queue until one ends.
type serverLimits struct {
	Header, Read, Write, Idle time.Duration
	Conns                     int
}

var (
	// apiLimits: drain answers after the drain (seconds), and pprof's
	// profile and trace run at most Write. The API's clients make one
	// request each: an idle connection is closed soon, so that idle ones
	// cannot hold every slot.
	apiLimits = serverLimits{Header: 5 * time.Second, Read: 10 * time.Second, Write: 2 * time.Minute, Idle: 5 * time.Second, Conns: 16}
	// metricsLimits: a scrape takes milliseconds; Prometheus keeps its
	// connection open between scrapes (Idle is above the usual interval).
	metricsLimits = serverLimits{Header: 5 * time.Second, Read: 10 * time.Second, Write: 30 * time.Second, Idle: 2 * time.Minute, Conns: 8}
)

// serve serves h on l within lim until ctx ends.
func serve(ctx context.Context, l net.Listener, h http.Handler, lim serverLimits) error {
	srv := &http.Server{Handler: h, ReadHeaderTimeout: lim.Header, ReadTimeout: lim.Read, WriteTimeout: lim.Write, IdleTimeout: lim.Idle,
		ConnContext: peerContext} // the API's peer credentials (access.go)
	stop := context.AfterFunc(ctx, func() { srv.Close() })
	defer stop()
	if err := srv.Serve(netutil.LimitListener(l, lim.Conns)); err != nil && !errors.Is(err, http.ErrServerClosed) {
		return err
	}
	return nil
}
