package config

import (
	"net/netip"
	"slices"
	"strings"
	"testing"
)

func TestConfigRouters(t *testing.T) {
	t.Parallel()
	head := "[gossip]\nbind = \"198.18.0.11:7946\"\ninsecure = true\n"                   // lines 1-3
	vip := "[[vip]]\nname = \"web\"\naddress = \"198.18.0.200\"\ninterface = \"eth0\"\n" // lines 4-7
	vip6 := "[[vip]]\nname = \"web6\"\naddress = \"fd00::200\"\ninterface = \"eth0\"\n"  // lines 8-11 after vip
	cfg, err := ParseConfig("f.toml", []byte(head+vip+"routers = [\"198.18.0.254\", \"198.18.0.253\"]\n"+vip6+"routers = [\"fd00::fe\"]\n"))
	if err != nil {
		t.Fatal(err)
	}
	if got, want := cfg.VIPs[0].Routers, []netip.Addr{netip.MustParseAddr("198.18.0.254"), netip.MustParseAddr("198.18.0.253")}; !slices.Equal(got, want) {
		t.Errorf("routers %v, want %v", got, want)
	}
	if got, want := cfg.VIPs[1].Routers, []netip.Addr{netip.MustParseAddr("fd00::fe")}; !slices.Equal(got, want) {
		t.Errorf("IPv6 routers %v, want %v", got, want)
	}
	for _, tt := range []struct{ routers, want string }{
		{`["198.18.0.300"]`, `f.toml:8: vip "web": routers: "198.18.0.300" is not an IP address`},
		{`["fd00::fe"]`, `f.toml:8: vip "web": routers: fd00::fe is not of the VIP's family (198.18.0.200)`},
		{`["198.18.0.200"]`, `f.toml:8: vip "web": routers: 198.18.0.200 is the VIP itself`},
		{`["198.18.0.254", "198.18.0.254"]`, `f.toml:8: vip "web": routers: 198.18.0.254 is listed twice`},
		{`["224.0.0.1"]`, `f.toml:8: vip "web": routers: 224.0.0.1 is not a unicast address`},
		{`["255.255.255.255"]`, `not a unicast address`},
		{`["0.0.0.0"]`, `not a unicast address`},
		{`["127.0.0.1"]`, `not a unicast address`},
		{`["::ffff:198.18.0.254"]`, `write an IPv4 address plainly`},
		{`[` + strings.Repeat(`"198.18.0.1", `, 17) + `"198.18.0.2"]`, `f.toml:8: vip "web": routers: 18 addresses, at most 16`},
	} {
		_, err := ParseConfig("f.toml", []byte(head+vip+"routers = "+tt.routers+"\n"))
		if err == nil || !strings.Contains(err.Error(), tt.want) {
			t.Errorf("routers = %s: error %v, want %q", tt.routers, err, tt.want)
		}
	}
}
