// Package spread shares the clients that reach a VIP through a router: the
// host that owns the router's ARP (its director) sends each flow of the
// router's traffic to the host that a table, which every host computes
// alike from the cluster's view, names for it, by MAC rewrite in the kernel.
// That host answers the client directly.
package spread
