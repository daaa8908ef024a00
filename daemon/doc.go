// Package daemon runs arpshare on one host: it reads the config, plumbs the
// VIPs into the kernel, wires gossip to the ARP responders, re-points clients
// when ownership moves, and serves the local status API.
package daemon
