// Package arp answers ARP requests for shared VIPs on raw sockets, only for the
// clients this host owns, remembers every client it hears in a client table,
// and re-points clients with gratuitous ARP when ownership moves to this host.
package arp
