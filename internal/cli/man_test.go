package cli

import (
	"os"
	"os/exec"
	"regexp"
	"strconv"
	"strings"
	"testing"
)

// groffWarnings renders a man page and returns groff's complaints.
func groffWarnings(t *testing.T, page string) string {
	t.Helper()
	if _, err := exec.LookPath("groff"); err != nil {
		if os.Getenv("ARPSHARE_REQUIRE_PRIVILEGED") != "" {
			t.Fatal("groff not installed, and ARPSHARE_REQUIRE_PRIVILEGED is set")
		}
		t.Skip("groff not installed")
	}
	cmd := exec.Command("groff", "-man", "-ww", "-z", "-Tutf8")
	cmd.Stdin = strings.NewReader(page)
	out, err := cmd.CombinedOutput()
	if err != nil {
		t.Fatalf("groff: %v: %s", err, out)
	}
	return string(out)
}

// TestManPage8 checks that arpshare(8) has every command and flag that
// --help has, and renders without warnings.
func TestManPage8(t *testing.T) {
	t.Parallel()
	page := ManPage8("1.2.3")
	for _, c := range commands {
		if !strings.Contains(page, ".SS "+c.name+"\n") {
			t.Errorf("arpshare(8) has no section for %s", c.name)
		}
		for _, f := range c.flags {
			if !strings.Contains(page, ".B \\-\\-"+roff(f.name)) {
				t.Errorf("arpshare(8) does not list --%s", f.name)
			}
		}
	}
	for _, want := range []string{".SH EXIT STATUS", ".SH SIGNALS", ".SH FILES", ".SH JSON OUTPUT", "SIGHUP", "/etc/arpshare/arpshare.toml", ".B 5\n"} {
		if !strings.Contains(page, want) {
			t.Errorf("arpshare(8) lacks %q", want)
		}
	}
	if w := groffWarnings(t, page); w != "" {
		t.Errorf("groff warns about arpshare(8):\n%s", w)
	}
}

// TestManPage5 checks that arpshare.toml(5) has every key that
// docs/configuration.md documents (which TestDocsCoverEveryKey ties to the
// code), and renders without warnings.
func TestManPage5(t *testing.T) {
	t.Parallel()
	md, err := os.ReadFile("../../docs/configuration.md")
	if err != nil {
		t.Fatal(err)
	}
	page := ManPage5("1.2.3", string(md))
	keys := regexp.MustCompile("(?m)^\\| `([a-z_.]+)` \\|").FindAllStringSubmatch(string(md), -1)
	if len(keys) < 20 {
		t.Fatalf("only %d keys in docs/configuration.md", len(keys))
	}
	for _, k := range keys {
		if !strings.Contains(page, ".TP\n\\fB"+roff(k[1])+"\\fR\n") {
			t.Errorf("arpshare.toml(5) does not document %s", k[1])
		}
	}
	for _, want := range []string{".SH [NODE]", ".SH [[VIP]]", ".SH LIMITS", "Exactly one of"} {
		if !strings.Contains(page, want) {
			t.Errorf("arpshare.toml(5) lacks %q", want)
		}
	}
	if w := groffWarnings(t, page); w != "" {
		t.Errorf("groff warns about arpshare.toml(5):\n%s", w)
	}
}

// TestBashCompletion runs the completion function in bash.
func TestBashCompletion(t *testing.T) {
	t.Parallel()
	script := BashCompletion()
	complete := func(words ...string) []string {
		t.Helper()
		line := "COMP_WORDS=(" + strings.Join(quoteAll(words), " ") + "); COMP_CWORD=" + strconv.Itoa(len(words)-1) +
			"; _arpshare; printf '%s\\n' \"${COMPREPLY[@]}\""
		out, err := exec.Command("bash", "-c", script+"\n"+line).CombinedOutput()
		if err != nil {
			t.Fatalf("bash: %v: %s", err, out)
		}
		return strings.Fields(string(out))
	}
	if got := complete("arpshare", "st"); strings.Join(got, " ") != "status" {
		t.Errorf("arpshare st<TAB>: %v", got)
	}
	if got := strings.Join(complete("arpshare", "check", "--"), " "); got != "--config --offline --json --help" {
		t.Errorf("arpshare check --<TAB>: %q", got)
	}
	if got := strings.Join(complete("arpshare", "run", "--log-level", ""), " "); got != "debug info warn error" {
		t.Errorf("arpshare run --log-level <TAB>: %q", got)
	}
}

func quoteAll(words []string) []string {
	var out []string
	for _, w := range words {
		out = append(out, "'"+w+"'")
	}
	return out
}
