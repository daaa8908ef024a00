// Package handover keeps open TCP connections alive when a client moves
// between live hosts: the new owner hands the packets of flows it does not
// know to the previous owner, in the kernel, for a grace period.
package handover
