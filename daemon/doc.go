// Package daemon runs arpshare on one host: it wires the parts (gossip, the
// responders, the repointer, the kernel programs, the health checks, the
// API) and runs them under one supervisor; keeps this host's state, which
// it gossips, and the snapshot of what it serves; applies the config at
// start and on reload; and speaks to systemd (notify, watchdog).
package daemon
