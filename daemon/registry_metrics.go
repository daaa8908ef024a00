package daemon

import (
	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/collectors"

	"github.com/arpshare/arpshare/internal/metrics"
)

// NewRegistry returns a registry with the daemon's metrics and the Go
// runtime's and process's own.
func (d *Daemon) NewRegistry() *prometheus.Registry {
	reg := prometheus.NewRegistry()
	reg.MustRegister(d.collectors()...)
	reg.MustRegister(collectors.NewGoCollector(), collectors.NewProcessCollector(collectors.ProcessCollectorOpts{}))
	return reg
}

// collectors are the daemon's own metrics, every arpshare_ series.
func (d *Daemon) collectors() []prometheus.Collector {
	return []prometheus.Collector{metrics.NewCollector(metrics.Sources{Version: d.version, Served: d.serving, Host: d.state, Cluster: d.cluster, Repointer: d.repointer, Table: d.table, Owners: &d.owners}), d.reloads, d.lastReload, d.handover.Collector(), d.spread.Collector(), d.propose.Collector(), d.cluster.Collector(), d.sysctls.Collector(), d.serving.links}
}
