// Package arp answers ARP requests (IPv4) and Neighbor Solicitations (IPv6)
// for shared VIPs on raw sockets, only from the clients this host owns in
// its view of the cluster; remembers every client it hears in a client
// table the cluster shares; and re-points a client whose ownership moves to
// this host with a request addressed to it from the VIP (a gratuitous ARP
// or unsolicited advertisement only announces a single-mode VIP). Where
// the kernel allows, clients already decided on are answered in the kernel
// (internal/bpf/fastpath) and the rest on the sockets.
package arp
