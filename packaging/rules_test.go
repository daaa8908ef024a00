package packaging

import (
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strings"
	"testing"
)

// rulesDir holds the alert rules and their unit tests, as packaged.
const rulesDir = "../examples/prometheus"

// requirePromtool skips without promtool, unless ARPSHARE_REQUIRE_PRIVILEGED
// or CI is set: then it fails.
func requirePromtool(t *testing.T) string {
	t.Helper()
	p, err := exec.LookPath("promtool")
	if err == nil {
		return p
	}
	if os.Getenv("ARPSHARE_REQUIRE_PRIVILEGED") != "" || os.Getenv("CI") != "" {
		t.Fatalf("promtool not installed (Debian: apt-get install --no-install-recommends prometheus), and ARPSHARE_REQUIRE_PRIVILEGED or CI is set")
	}
	t.Skip("promtool not installed (Debian: apt-get install --no-install-recommends prometheus)")
	return ""
}

// TestAlertRules checks the alert rules with promtool and runs their unit
// tests: each rule fires on its event, once, and not on the states next to
// it.
func TestAlertRules(t *testing.T) {
	t.Parallel()
	promtool := requirePromtool(t)
	for _, args := range [][]string{
		{"check", "rules", "arpshare-alerts.yml"},
		{"test", "rules", "arpshare-alerts_test.yml"},
	} {
		cmd := exec.Command(promtool, args...)
		cmd.Dir = rulesDir
		if out, err := cmd.CombinedOutput(); err != nil {
			t.Errorf("promtool %s: %v\n%s", strings.Join(args, " "), err, out)
		}
	}
}

// TestEveryAlertTested: every rule has a unit test that expects it to
// fire, and the package installs both files.
func TestEveryAlertTested(t *testing.T) {
	t.Parallel()
	rules, err := os.ReadFile(filepath.Join(rulesDir, "arpshare-alerts.yml"))
	if err != nil {
		t.Fatal(err)
	}
	tests, err := os.ReadFile(filepath.Join(rulesDir, "arpshare-alerts_test.yml"))
	if err != nil {
		t.Fatal(err)
	}
	alerts := regexp.MustCompile(`(?m)^\s+- alert: (\w+)$`).FindAllStringSubmatch(string(rules), -1)
	if len(alerts) < 12 {
		t.Fatalf("only %d alerts in the rules", len(alerts))
	}
	for _, a := range alerts {
		fires := regexp.MustCompile(`alertname: ` + a[1] + `\n\s+exp_alerts:\n\s+- exp_labels:`)
		if !fires.Match(tests) {
			t.Errorf("no test expects %s to fire", a[1])
		}
	}
	nfpm, err := os.ReadFile("nfpm.yaml")
	if err != nil {
		t.Fatal(err)
	}
	for _, f := range []string{"arpshare-alerts.yml", "arpshare-alerts_test.yml"} {
		if !strings.Contains(string(nfpm), "src: examples/prometheus/"+f+"\n    dst: /usr/share/arpshare/prometheus/"+f+"\n") {
			t.Errorf("nfpm.yaml does not install examples/prometheus/%s in /usr/share/arpshare/prometheus", f)
		}
	}
}
