package config

import (
	"os"
	"reflect"
	"regexp"
	"strings"
	"testing"
)

// tomlKeys lists every key the config accepts, as dotted paths.
func tomlKeys(t reflect.Type, prefix string) []string {
	var keys []string
	for i := range t.NumField() {
		f := t.Field(i)
		name := f.Tag.Get("toml")
		typ := f.Type
		for typ.Kind() == reflect.Pointer || typ.Kind() == reflect.Slice {
			typ = typ.Elem()
		}
		if typ.Kind() == reflect.Struct {
			keys = append(keys, tomlKeys(typ, prefix+name+".")...)
			continue
		}
		keys = append(keys, prefix+name)
	}
	return keys
}

// TestDocsCoverEveryKey keeps docs/configuration.md and the reference config
// in step with the code: every key is documented, shown in the reference
// (set or commented out), and nothing documented is unknown.
func TestDocsCoverEveryKey(t *testing.T) {
	t.Parallel()
	doc, err := os.ReadFile("../../docs/configuration.md")
	if err != nil {
		t.Fatal(err)
	}
	ref, err := os.ReadFile("../../examples/arpshare.toml")
	if err != nil {
		t.Fatal(err)
	}
	keys := tomlKeys(reflect.TypeOf(rawConfig{}), "")
	if len(keys) < 20 {
		t.Fatalf("found only %d keys: %v", len(keys), keys)
	}
	known := map[string]bool{}
	for _, k := range keys {
		known[k] = true
		if !strings.Contains(string(doc), "| `"+k+"` |") {
			t.Errorf("docs/configuration.md does not document %s", k)
		}
		last := k[strings.LastIndex(k, ".")+1:]
		if !regexp.MustCompile(`(?m)^#? ?` + last + ` = `).Match(ref) {
			t.Errorf("examples/arpshare.toml does not show %s", k)
		}
	}
	for _, m := range regexp.MustCompile("(?m)^\\| `([a-z_.]+)` \\|").FindAllStringSubmatch(string(doc), -1) {
		if !known[m[1]] {
			t.Errorf("docs/configuration.md documents %s, which the config does not accept", m[1])
		}
	}
}

// TestPackagedConfigParses checks the config the packages install.
func TestPackagedConfigParses(t *testing.T) {
	t.Parallel()
	data, err := os.ReadFile("../../packaging/arpshare.toml")
	if err != nil {
		t.Fatal(err)
	}
	key := writeKey(t, t.TempDir(), 32)
	data = []byte(strings.ReplaceAll(string(data), "/etc/arpshare/gossip.key", key))
	if _, err := ParseConfig("arpshare.toml", data); err != nil {
		t.Fatal(err)
	}
}
