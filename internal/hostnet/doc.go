// Package hostnet is the host plumbing arpshare needs from the kernel: each
// VIP on lo, and on each serving interface the ARP sysctls that keep the
// kernel from answering for the VIP, kept so by a guard.
package hostnet
