// Command gen writes what `make packages` builds from the sources: the man
// pages arpshare(8) and arpshare.toml(5), the bash completion, and the
// packages' changelog (in nfpm's chglog form) made from CHANGELOG.md.
//
//	go run ./packaging/gen -version 1.2.3 -out dist/gen
package main

import (
	"flag"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"time"

	"github.com/arpshare/arpshare/internal/cli"
)

func main() {
	version := flag.String("version", "", "the version being packaged")
	release := flag.String("release", "1", "the package release (nfpm's release:)")
	out := flag.String("out", "", "the folder to write into")
	root := flag.String("root", ".", "the repository's root")
	flag.Parse()
	if *version == "" || *out == "" {
		fmt.Fprintln(os.Stderr, "usage: gen -version VERSION -out DIR [-root DIR]")
		os.Exit(2)
	}
	if err := run(*version, *release, *out, *root); err != nil {
		fmt.Fprintln(os.Stderr, "gen:", err)
		os.Exit(1)
	}
}

func run(version, release, out, root string) error {
	confMD, err := os.ReadFile(filepath.Join(root, "docs/configuration.md"))
	if err != nil {
		return err
	}
	changes, err := os.ReadFile(filepath.Join(root, "CHANGELOG.md"))
	if err != nil {
		return err
	}
	chglog, err := Changelog(string(changes), version, release)
	if err != nil {
		return err
	}
	if err := os.MkdirAll(out, 0o755); err != nil {
		return err
	}
	for name, text := range map[string]string{
		"arpshare.8":      cli.ManPage8(version),
		"arpshare.toml.5": cli.ManPage5(version, string(confMD)),
		"arpshare.bash":   cli.BashCompletion(),
		"changelog.yml":   chglog,
	} {
		if err := os.WriteFile(filepath.Join(out, name), []byte(text), 0o644); err != nil {
			return err
		}
	}
	return nil
}

const packager = "arpshare developers <arpshare@users.noreply.github.com>"

// Changelog turns CHANGELOG.md's releases into chglog entries. The newest
// release, if unreleased, takes the version being packaged and today's date.
// Versions carry the package release, as the packages' own versions do.
// Notes are wrapped to fit Debian's 80 columns.
func Changelog(md, version, pkgRelease string) (string, error) {
	type release struct {
		version, date string
		notes         []string
	}
	var rels []*release
	for _, l := range strings.Split(md, "\n") {
		switch {
		case strings.HasPrefix(l, "## ["):
			v, rest, _ := strings.Cut(strings.TrimPrefix(l, "## ["), "]")
			date := strings.TrimSpace(strings.TrimPrefix(strings.TrimSpace(rest), "-"))
			rels = append(rels, &release{version: v, date: date})
		case len(rels) > 0 && strings.HasPrefix(l, "- "):
			r := rels[len(rels)-1]
			r.notes = append(r.notes, strings.TrimPrefix(l, "- "))
		case len(rels) > 0 && strings.HasPrefix(l, "  ") && len(rels[len(rels)-1].notes) > 0:
			r := rels[len(rels)-1]
			r.notes[len(r.notes)-1] += " " + strings.TrimSpace(l)
		}
	}
	if len(rels) == 0 {
		return "", fmt.Errorf("CHANGELOG.md: no release")
	}
	var b strings.Builder
	for i, r := range rels {
		v, date := r.version, r.date
		if _, err := time.Parse("2006-01-02", date); err != nil {
			if i != 0 {
				return "", fmt.Errorf("CHANGELOG.md: release %s has no date (only the newest may be unreleased)", v)
			}
			date = time.Now().UTC().Format("2006-01-02")
		}
		if i == 0 {
			v = version
		}
		v += "-" + pkgRelease
		fmt.Fprintf(&b, "- semver: %q\n  date: %sT00:00:00Z\n  packager: %q\n  deb:\n    urgency: medium\n    distributions: [stable]\n  changes:\n", v, date, packager)
		for _, n := range r.notes {
			fmt.Fprintf(&b, "    - note: %q\n", wrap(n, 70))
		}
	}
	return b.String(), nil
}

// wrap breaks s into lines of at most width, continued under the text of
// the changelog's "  * " bullet.
func wrap(s string, width int) string {
	var b strings.Builder
	n := 0
	for i, w := range strings.Fields(s) {
		if i > 0 && n+1+len(w) > width {
			b.WriteString("\n    ")
			n = 0
		} else if i > 0 {
			b.WriteString(" ")
			n++
		}
		b.WriteString(w)
		n += len(w)
	}
	return b.String()
}
