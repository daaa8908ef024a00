// Package cli is arpshare's command line: its commands and flags, their
// help, and the man page and shell completion made from the same
// declarations.
package cli
