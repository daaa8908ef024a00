// Package repoint moves clients to this host when the view gives them to
// it: it plans which known clients a new view moves here, sends each a few
// paced re-pointing packets (a gratuitous ARP or neighbor solicitation to
// that client alone, or a broadcast announcement in single mode), counts
// those that answer, re-asserts every owned client periodically and
// reports when a view's re-pointing is done.
package repoint
