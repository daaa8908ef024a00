// Package gossip keeps each host's view of the cluster with hashicorp/memberlist
// and decides, from that view alone, which host answers each client for a VIP.
package gossip
