package config

import (
	"strings"
	"testing"

	"github.com/BurntSushi/toml"
)

// TestKeyLocator: the key locator, which places the semantic checks'
// errors and unknown keys (the decoder gives no position for those), finds
// keys in tables, dotted keys, inline tables and the right [[vip]].
func TestKeyLocator(t *testing.T) {
	t.Parallel()
	conf := strings.Join([]string{
		`node.name = "h1"`,                  // 1
		`[gossip] # the cluster`,            // 2
		`bind = "198.18.0.11"`,              // 3
		`[[vip]]`,                           // 4
		`name = "web"`,                      // 5
		`check = { tcp = "a:1", rise = 2 }`, // 6
		`[[vip]]`,                           // 7
		`name = "db"`,                       // 8
		`check.exec = ["/bin/true"]`,        // 9
		`[vip.check]`,                       // 10
		`"interval" = "2s"`,                 // 11
	}, "\n")
	c := &checker{path: "f.toml", lines: strings.Split(conf, "\n")}
	for _, tt := range []struct {
		table string
		index int
		key   string
		want  int
		exact bool
	}{
		{"", 0, "node.name", 1, true},
		{"gossip", 0, "bind", 3, true},
		{"gossip", 0, "expect", 2, false}, // not set: its table's line
		{"vip", 0, "name", 5, true},
		{"vip", 1, "name", 8, true},
		{"vip", 0, "check.rise", 6, true},
		{"vip", 1, "check.exec", 9, true},
		{"vip.check", 1, "interval", 11, true},
	} {
		got, exact := c.find(tt.table, tt.index, tt.key)
		if got != tt.want || exact != tt.exact {
			t.Errorf("find(%q, %d, %q) = %d, %v; want %d, %v", tt.table, tt.index, tt.key, got, exact, tt.want, tt.exact)
		}
	}
	for k, want := range map[string]int{"vip.check.rise": 6, "vip.check.interval": 11, "gossip.bind": 3} {
		if got := c.lineOfKey(toml.Key(strings.Split(k, "."))); got != want {
			t.Errorf("lineOfKey(%s) = %d, want %d", k, got, want)
		}
	}
}
