package daemon

import (
	"encoding/json"
	"os"
	"regexp"
	"strings"
	"testing"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/arpshare/arpshare/internal/config"
)

// TestDocsNameRealMetrics checks that the metric names in the operations
// guide, the Grafana dashboard and the alert rules exist, and that the
// guide names every metric the daemon exports.
func TestDocsNameRealMetrics(t *testing.T) {
	t.Parallel()
	d := New(&config.Config{Node: config.NodeConfig{Name: "x", StateDir: t.TempDir()}}, quietLog(), "test")
	descs := make(chan *prometheus.Desc, 100)
	for _, c := range d.collectors() {
		c.Describe(descs)
	}
	close(descs)
	names := map[string]bool{}
	for desc := range descs {
		names[regexp.MustCompile(`fqName: "([a-z_]+)"`).FindStringSubmatch(desc.String())[1]] = true
	}
	if len(names) < 40 {
		t.Fatalf("only %d metrics described: %v", len(names), names)
	}
	ops, err := os.ReadFile("../docs/operations.md")
	if err != nil {
		t.Fatal(err)
	}
	for name := range names {
		if !regexp.MustCompile("(?m)^\\| `" + name + "[{`]").Match(ops) {
			t.Errorf("docs/operations.md's metrics table has no line for %s", name)
		}
	}
	for _, file := range []string{"../docs/operations.md", "../examples/grafana-dashboard.json", "../examples/prometheus/arpshare-alerts.yml", "../examples/prometheus/arpshare-alerts_test.yml"} {
		b, err := os.ReadFile(file)
		if err != nil {
			t.Fatal(err)
		}
		for _, m := range regexp.MustCompile(`arpshare_[a-z_]+`).FindAllString(string(b), -1) {
			if !names[m] {
				t.Errorf("%s names %s, which arpshare does not export", file, m)
			}
		}
	}
}

// TestDashboardUsesVariables checks that every panel of the Grafana
// dashboard queries the chosen data source, filters by the chosen VIPs, has
// a unit, and names hosts by node (joined on arpshare_node_info).
func TestDashboardUsesVariables(t *testing.T) {
	t.Parallel()
	b, err := os.ReadFile("../examples/grafana-dashboard.json")
	if err != nil {
		t.Fatal(err)
	}
	type source struct {
		UID string `json:"uid"`
	}
	var dash struct {
		Panels []struct {
			Title       string  `json:"title"`
			Datasource  *source `json:"datasource"`
			FieldConfig struct {
				Defaults struct {
					Unit string `json:"unit"`
				} `json:"defaults"`
			} `json:"fieldConfig"`
			Targets []struct {
				Datasource   *source `json:"datasource"`
				Expr         string  `json:"expr"`
				LegendFormat string  `json:"legendFormat"`
			} `json:"targets"`
		} `json:"panels"`
	}
	if err := json.Unmarshal(b, &dash); err != nil {
		t.Fatal(err)
	}
	if len(dash.Panels) < 20 {
		t.Fatalf("only %d panels", len(dash.Panels))
	}
	for _, p := range dash.Panels {
		if p.Datasource == nil || p.Datasource.UID != "${datasource}" {
			t.Errorf("panel %q does not use $datasource", p.Title)
		}
		if len(p.Targets) == 0 {
			t.Errorf("panel %q has no query", p.Title)
		}
		if p.FieldConfig.Defaults.Unit == "" {
			t.Errorf("panel %q has no unit", p.Title)
		}
		for _, q := range p.Targets {
			if q.Datasource == nil || q.Datasource.UID != "${datasource}" {
				t.Errorf("panel %q: query %q does not use $datasource", p.Title, q.Expr)
			}
			if !strings.Contains(q.Expr, `vip=~"$vip"`) {
				t.Errorf("panel %q: query %q does not filter by $vip", p.Title, q.Expr)
			}
			if strings.Contains(q.LegendFormat, "{{instance}}") {
				t.Errorf("panel %q: legend %q names hosts by instance: join on arpshare_node_info and use {{node}}", p.Title, q.LegendFormat)
			}
			if strings.Contains(q.LegendFormat, "{{node}}") && !strings.Contains(q.Expr, "group_left (node) arpshare_node_info") {
				t.Errorf("panel %q: legend %q names {{node}}, but query %q does not join arpshare_node_info", p.Title, q.LegendFormat, q.Expr)
			}
		}
	}
}
