package api

import (
	"context"
	"fmt"
	"log/slog"
	"net"
	"net/http"
	"net/http/pprof"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/promhttp"
)

// metricsServer serves /metrics on TCP.
type MetricsServer struct {
	errorLog promhttp.Logger
	addr     string
	reg      *prometheus.Registry
	ready    chan struct{}
	limits   serverLimits // zero: metricsLimits
	// bound is the address listened on, once ready (addr may have port 0).
	bound net.Addr
}

// newMetricsServer serves reg's metrics on addr, logging scrape errors to
// log.
func NewMetricsServer(addr string, reg *prometheus.Registry, log *slog.Logger) *MetricsServer {
	return &MetricsServer{errorLog: scrapeErrors{log}, addr: addr, reg: reg, ready: make(chan struct{})}
}

func (m *MetricsServer) String() string         { return "metrics on " + m.addr }
func (m *MetricsServer) Ready() <-chan struct{} { return m.ready }

func (m *MetricsServer) Run(ctx context.Context) error {
	mux := http.NewServeMux()
	// A collector's error drops its series and is logged and counted
	// (promhttp_metric_handler_errors_total), but never fails the scrape:
	// Prometheus would then lose every series of this host.
	mux.Handle("GET /metrics", promhttp.HandlerFor(m.reg, promhttp.HandlerOpts{
		Registry: m.reg, ErrorHandling: promhttp.ContinueOnError, ErrorLog: m.errorLog,
	}))
	l, err := net.Listen("tcp", m.addr)
	if err != nil {
		return fmt.Errorf("metrics listener: %w", err)
	}
	lim := m.limits
	if lim == (serverLimits{}) {
		lim = metricsLimits
	}
	m.bound = l.Addr()
	close(m.ready)
	if err := serve(ctx, l, mux, lim); err != nil {
		return fmt.Errorf("metrics listener: %w", err)
	}
	return nil
}

// handlePprof adds Go's pprof at /debug/pprof/ (the API socket's, never
// the metrics port's: a profile costs CPU, and cmdline and heap show what
// the daemon holds).
func handlePprof(mux *http.ServeMux) {
	mux.HandleFunc("/debug/pprof/", pprof.Index)
	mux.HandleFunc("/debug/pprof/cmdline", pprof.Cmdline)
	mux.HandleFunc("/debug/pprof/profile", pprof.Profile)
	mux.HandleFunc("/debug/pprof/symbol", pprof.Symbol)
	mux.HandleFunc("/debug/pprof/trace", pprof.Trace)
}

// scrapeErrors logs the errors of a scrape.
type scrapeErrors struct{ log *slog.Logger }

func (s scrapeErrors) Println(v ...any) { s.log.Error("metrics scrape", "error", fmt.Sprint(v...)) }
