//go:build ignore

// SPDX-License-Identifier: Apache-2.0
//
// Hand-over of open TCP connections after a planned move (see doc.go).
//
// Runs at tcx ingress on a VIP's interface. A TCP segment to a VIP, from a
// client that moved here from a live host, that is not a SYN and matches no
// socket here belongs to a connection the previous owner still holds: its
// Ethernet destination becomes the previous owner's MAC and it leaves by the
// same interface. Everything else goes on to the next program or the stack.

#include <linux/types.h>
#include <linux/bpf.h>
#include <linux/if_ether.h>
#include <linux/if_packet.h>
#include <linux/ip.h>
#include <linux/ipv6.h>
#include <linux/in.h>
#include <linux/tcp.h>
#include <linux/pkt_cls.h>
#include <stddef.h>
#include <bpf/bpf_helpers.h>
#include <bpf/bpf_endian.h>

// A moved client, found in one of two ways (kind). By the Ethernet source
// of its frames (KIND_MAC): a router's clients arrive with their own IPs but
// the router's MAC, and the router is what moved. By its IP (KIND_IP), for
// a frame another host handed over: it comes with that host's MAC, and the
// flow may sit one more host back (a client that moved twice).
struct client_key {
	__u8 vip[16]; // IPv4 as ::ffff:a.b.c.d
	__u8 id[16];  // the MAC (6 bytes, then zeros) or the IP (as vip)
	__u8 kind;
	__u8 pad[3];
};

enum key_kind {
	KIND_MAC = 0,
	KIND_IP = 1,
};

struct client_value {
	__u8 prev_mac[6];  // the previous owner's interface
	__u8 own_mac[6];   // this host's interface, the new Ethernet source
	__u8 pad[4];
	__u64 deadline_ns; // CLOCK_MONOTONIC (bpf_ktime_get_ns); later: not handed
	__u64 packets;     // handed over so far
	__u64 last_ns;     // when the last one was handed over
};

// Two entries per moved client (by MAC and by IP); the loader makes room
// for as many clients as the daemon's client table holds. Allocated as
// used, not up front.
struct {
	__uint(type, BPF_MAP_TYPE_HASH);
	__uint(max_entries, 2 * 65536);
	__uint(map_flags, BPF_F_NO_PREALLOC);
	__type(key, struct client_key);
	__type(value, struct client_value);
} moved SEC(".maps");

// Outcomes of a TCP segment whose client moved, for metrics.
enum outcome {
	OUTCOME_HANDED = 0, // to the previous owner
	OUTCOME_LOCAL,      // a socket here knows it
	OUTCOME_SYN,        // a new connection: stays here
	OUTCOME_EXPIRED,    // the entry's deadline passed
	OUTCOME_LOOP,       // it came from the previous owner, or its TTL is spent
	OUTCOME_BAD_MAC,    // the entry's MACs are not unicast: not handed
	OUTCOME_MAX,
};

struct {
	__uint(type, BPF_MAP_TYPE_PERCPU_ARRAY);
	__uint(max_entries, OUTCOME_MAX);
	__type(key, __u32);
	__type(value, __u64);
} outcomes SEC(".maps");

static __always_inline void count(__u32 o)
{
	__u64 *n = bpf_map_lookup_elem(&outcomes, &o);
	if (n)
		(*n)++;
}

static __always_inline int same_mac(const __u8 *a, const __u8 *b)
{
	return ((a[0] ^ b[0]) | (a[1] ^ b[1]) | (a[2] ^ b[2]) | (a[3] ^ b[3]) | (a[4] ^ b[4]) | (a[5] ^ b[5])) == 0;
}

// unicast says whether mac is one host's: not multicast or broadcast (the
// group bit), not zero.
static __always_inline int unicast(const __u8 *m)
{
	return !(m[0] & 1) && (m[0] | m[1] | m[2] | m[3] | m[4] | m[5]) != 0;
}

#define VLAN_VID_MASK_ 0x0fff

// The most of a frame read through a pointer: Ethernet and IPv6 headers.
// The shortest TCP segment over IPv4 (Ethernet, IPv4 and TCP headers
// without options) is as long.
#define HEADERS_LEN (ETH_HLEN + sizeof(struct ipv6hdr))

#define TCX_NEXT_ (-1) // TC_ACT_UNSPEC: the next program, or the stack

// has_socket reports whether a socket here owns the segment's flow: an
// established (or closing, or time-wait) socket, or a handshake in progress.
// A listener alone does not count: the segment is not a SYN, so a listener
// would answer it with a reset.
static __always_inline int has_socket(struct __sk_buff *skb, struct bpf_sock_tuple *t, __u32 size)
{
	struct bpf_sock *sk = bpf_skc_lookup_tcp(skb, t, size, BPF_F_CURRENT_NETNS, 0);
	if (!sk)
		return 0;
	int local = sk->state != BPF_TCP_LISTEN;
	bpf_sk_release(sk);
	return local;
}

SEC("tcx/ingress")
int handover(struct __sk_buff *skb)
{
	// Only what is addressed to this host: the stack's TCP would drop
	// the rest (a frame to another MAC seen in promiscuous mode, a TCP
	// segment to a group address), so it is no flow of ours to hand on.
	if (skb->pkt_type != PACKET_HOST)
		return TCX_NEXT_;
	// The kernel moves a frame's (outer) VLAN tag into the skb before tc
	// runs: the frame then looks untagged, but belongs to the VLAN's own
	// interface, where this program sees it again untagged if it is
	// attached there. A priority tag alone (VLAN 0) is this interface's.
	// A second tag inside leaves its EtherType in skb->protocol: not IP.
	if (skb->vlan_present && (skb->vlan_tci & VLAN_VID_MASK_))
		return TCX_NEXT_;
	if (skb->protocol != bpf_htons(ETH_P_IP) && skb->protocol != bpf_htons(ETH_P_IPV6))
		return TCX_NEXT_;
	// A driver or GRO may leave headers outside the linear part, which
	// pointers cannot reach: bring them in.
	if (skb->len < HEADERS_LEN)
		return TCX_NEXT_;
	if ((void *)(long)skb->data + HEADERS_LEN > (void *)(long)skb->data_end &&
	    bpf_skb_pull_data(skb, HEADERS_LEN))
		return TCX_NEXT_;

	void *data = (void *)(long)skb->data;
	void *end = (void *)(long)skb->data_end;
	struct ethhdr *eth = data;
	if ((void *)(eth + 1) > end)
		return TCX_NEXT_;

	struct client_key key = {};
	__u8 src_ip[16] = {};
	struct bpf_sock_tuple tuple = {};
	__u32 tuple_size;
	struct tcphdr tcp;
	int syn, ipv6;
	__u8 ttl;

	if (eth->h_proto == bpf_htons(ETH_P_IP)) {
		struct iphdr *ip = (void *)(eth + 1);
		if ((void *)(ip + 1) > end || ip->protocol != IPPROTO_TCP || ip->ihl < 5)
			return TCX_NEXT_;
		if (ip->frag_off & bpf_htons(0x3fff)) // a fragment: no TCP header to read
			return TCX_NEXT_;
		// Copied, not pointed to: a pointer at a variable offset into
		// the packet needs CAP_PERFMON (Spectre hardening), and the
		// daemon has CAP_BPF only.
		if (bpf_skb_load_bytes(skb, ETH_HLEN + ip->ihl * 4, &tcp, sizeof(tcp)))
			return TCX_NEXT_;
		key.vip[10] = 0xff;
		key.vip[11] = 0xff;
		__builtin_memcpy(&key.vip[12], &ip->daddr, 4);
		src_ip[10] = 0xff;
		src_ip[11] = 0xff;
		__builtin_memcpy(&src_ip[12], &ip->saddr, 4);
		ttl = ip->ttl;
		ipv6 = 0;
		tuple.ipv4.saddr = ip->saddr;
		tuple.ipv4.daddr = ip->daddr;
		tuple.ipv4.sport = tcp.source;
		tuple.ipv4.dport = tcp.dest;
		syn = tcp.syn;
		tuple_size = sizeof(tuple.ipv4);
	} else if (eth->h_proto == bpf_htons(ETH_P_IPV6)) {
		struct ipv6hdr *ip6 = (void *)(eth + 1);
		// Extension headers are left to the stack: rare on TCP.
		if ((void *)(ip6 + 1) > end || ip6->nexthdr != IPPROTO_TCP)
			return TCX_NEXT_;
		if (bpf_skb_load_bytes(skb, ETH_HLEN + sizeof(*ip6), &tcp, sizeof(tcp)))
			return TCX_NEXT_;
		__builtin_memcpy(key.vip, &ip6->daddr, 16);
		__builtin_memcpy(src_ip, &ip6->saddr, 16);
		ttl = ip6->hop_limit;
		ipv6 = 1;
		__builtin_memcpy(tuple.ipv6.saddr, &ip6->saddr, 16);
		__builtin_memcpy(tuple.ipv6.daddr, &ip6->daddr, 16);
		tuple.ipv6.sport = tcp.source;
		tuple.ipv6.dport = tcp.dest;
		syn = tcp.syn;
		tuple_size = sizeof(tuple.ipv6);
	} else {
		return TCX_NEXT_;
	}

	__builtin_memcpy(key.id, eth->h_source, 6);
	key.kind = KIND_MAC;
	struct client_value *v = bpf_map_lookup_elem(&moved, &key);
	if (!v) {
		__builtin_memcpy(key.id, src_ip, 16);
		key.kind = KIND_IP;
		v = bpf_map_lookup_elem(&moved, &key);
	}
	if (!v)
		return TCX_NEXT_;
	// Never to a group or zero address (the daemon writes none: this is
	// the last guard).
	if (!unicast(v->prev_mac) || !unicast(v->own_mac)) {
		count(OUTCOME_BAD_MAC);
		return TCX_NEXT_;
	}
	// Never back to where it came from; and, as a router does, never
	// forever: each hand-over takes one from the TTL (hop limit), so
	// hosts whose tables point in a circle drop a stray segment soon.
	if (same_mac(eth->h_source, v->prev_mac) || ttl <= 1) {
		count(OUTCOME_LOOP);
		return TCX_NEXT_;
	}
	if (syn) {
		count(OUTCOME_SYN);
		return TCX_NEXT_;
	}
	__u64 now = bpf_ktime_get_ns();
	if (now > v->deadline_ns) {
		count(OUTCOME_EXPIRED);
		return TCX_NEXT_;
	}
	if (has_socket(skb, &tuple, tuple_size)) {
		count(OUTCOME_LOCAL);
		return TCX_NEXT_;
	}

	// One hop less. The helpers below may move the packet's data, so
	// the headers are written by offset.
	__u8 hop = ttl - 1;
	if (ipv6) {
		if (bpf_skb_store_bytes(skb, ETH_HLEN + offsetof(struct ipv6hdr, hop_limit), &hop, 1, 0))
			return TCX_NEXT_;
	} else {
		__u16 old_word = bpf_htons((__u16)ttl << 8), new_word = bpf_htons((__u16)hop << 8);
		if (bpf_l3_csum_replace(skb, ETH_HLEN + offsetof(struct iphdr, check), old_word, new_word, 2))
			return TCX_NEXT_;
		if (bpf_skb_store_bytes(skb, ETH_HLEN + offsetof(struct iphdr, ttl), &hop, 1, 0))
			return TCX_NEXT_;
	}
	if (bpf_skb_store_bytes(skb, offsetof(struct ethhdr, h_dest), v->prev_mac, 6, 0) ||
	    bpf_skb_store_bytes(skb, offsetof(struct ethhdr, h_source), v->own_mac, 6, 0))
		return TCX_NEXT_;
	__sync_fetch_and_add(&v->packets, 1);
	v->last_ns = now;
	count(OUTCOME_HANDED);
	return bpf_redirect(skb->ifindex, 0);
}

// The project's licence; the program uses no GPL-only helper.
char _license[] SEC("license") = "Apache-2.0";
