// Package fastpath answers ARP requests and IPv6 Neighbor Solicitations in
// the kernel, at tc ingress, for clients whose answer the daemon has
// already decided: a map of (VIP, client) to "answer" or "stay silent" that
// the daemon keeps, with every other frame passed on to the daemon's socket
// unchanged (docs/design.md, "The kernel fast path"). Load loads the ARP
// program, LoadNDP the NDP one; each responder has its own.
package fastpath
