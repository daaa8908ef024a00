// Package fastpath answers ARP requests in the kernel, at tc ingress, for
// clients whose answer the daemon has already decided: a map of (VIP,
// client) to "answer" or "stay silent" that the daemon keeps, with every
// other frame passed on to the daemon's raw socket unchanged
// (docs/design.md, "The kernel fast path").
package fastpath
