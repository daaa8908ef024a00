// Package gossip is cluster membership for arpshare, over
// hashicorp/memberlist: who is alive, each member's metadata (weight, drain,
// MACs, the VIPs it can serve), join state, and the immutable View built from
// them. It reports who is usable; who answers each client is decided by the
// sharing policies (package arp/policy) from that view.
package gossip
