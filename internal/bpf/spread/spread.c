//go:build ignore

// SPDX-License-Identifier: Apache-2.0
//
// Spreading of routed clients' flows over the hosts (see doc.go).
//
// Runs at tcx ingress on a VIP's interface, before the handover. An IP
// packet to a VIP that comes from one of the VIP's routers (by its Ethernet
// source) and is addressed to this host (the router resolved the VIP to this
// host: it is the router's director) is hashed by flow into the VIP's
// table, which every host fills identically from the cluster's view. A slot
// of another host: the packet gets that host's MAC as destination, this
// host's as source, and leaves by the same interface at once. A slot of
// this host: on to the next program and the stack.

#include <linux/types.h>
#include <linux/bpf.h>
#include <linux/if_ether.h>
#include <linux/if_packet.h>
#include <linux/ip.h>
#include <linux/ipv6.h>
#include <linux/in.h>
#include <linux/pkt_cls.h>
#include <stddef.h>
#include <bpf/bpf_helpers.h>
#include <bpf/bpf_endian.h>

// Slots of one VIP's table: a power of two, so a flow's slot is its hash's
// low bits. 4096 slots share hosts by weight to within a few tenths of a
// percent of the flows.
#define SLOTS 4096
#define MAX_VIPS 64
#define MAX_ROUTERS_PER_VIP 16

// A VIP whose routers' traffic is spread. Its table is SLOTS entries of
// slots from base; the daemon writes a new table beside the one in use and
// then moves base, so a packet never sees half of each.
struct vip_value {
	__u32 base;
	__u32 filled; // 0: no host to spread to (nobody eligible): pass
};

struct {
	__uint(type, BPF_MAP_TYPE_HASH);
	__uint(max_entries, MAX_VIPS);
	__type(key, __u8[16]); // IPv4 as ::ffff:a.b.c.d
	__type(value, struct vip_value);
} vips SEC(".maps");

// A router of a VIP, by its MAC.
struct router_key {
	__u8 vip[16];
	__u8 mac[6];
	__u8 pad[2];
};

struct {
	__uint(type, BPF_MAP_TYPE_HASH);
	__uint(max_entries, MAX_VIPS * MAX_ROUTERS_PER_VIP);
	__type(key, struct router_key);
	__type(value, __u8);
} routers SEC(".maps");

// Who serves a slot's flows: its host's MAC; local: this host. A slot that
// moved here from a live host in a planned move (drain, join, weight) keeps
// that host's MAC as prev until deadline: a TCP segment of such a slot
// that is not a SYN and matches no socket here belongs to a connection
// the previous host still holds, and goes there, as the handover does for
// moved clients.
//
// A slot that moved away from this host is marked was_local until
// deadline: a router's TCP segment of it that is not a SYN and matches a
// socket here stays here (the router still sends to this host while it
// drains), instead of going to the new host, which would hand it back.
struct slot {
	__u8 mac[6];
	__u8 local;
	__u8 was_local;
	__u8 prev[6];
	__u8 pad2[2];
	__u64 deadline_ns; // CLOCK_MONOTONIC; 0: no previous host
};

// Two tables per VIP (the one in use and the next); the loader sizes it
// for the VIPs configured.
struct {
	__uint(type, BPF_MAP_TYPE_ARRAY);
	__uint(max_entries, 2 * MAX_VIPS * SLOTS);
	__type(key, __u32);
	__type(value, struct slot);
} slots SEC(".maps");

// The cluster's hosts, by MAC: a director hands them routed flows.
struct peer_key {
	__u8 mac[6];
	__u8 pad[2];
};

struct {
	__uint(type, BPF_MAP_TYPE_HASH);
	__uint(max_entries, 1024);
	__type(key, struct peer_key);
	__type(value, __u8);
} peers SEC(".maps");

// Outcomes of a packet to a VIP whose routers are spread, for metrics.
enum outcome {
	OUTCOME_SPREAD = 0, // to another host
	OUTCOME_LOCAL,      // from a router, its slot is this host's
	OUTCOME_NOT_ROUTER, // not from a configured router or host: the ARP share decides
	OUTCOME_NO_TABLE,   // nobody to spread to yet
	OUTCOME_BAD_PACKET, // headers cut short: left to the stack
	OUTCOME_BAD_MAC,    // the slot's MAC is not unicast: not sent
	OUTCOME_RECEIVED,   // spread here by a director
	OUTCOME_HANDED,     // a moved slot's open connection: to its previous host
	OUTCOME_LOOP,       // would be handed back where it came from, or TTL spent
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

static __always_inline int unicast(const __u8 *m)
{
	return !(m[0] & 1) && (m[0] | m[1] | m[2] | m[3] | m[4] | m[5]) != 0;
}

static __always_inline int same_mac(const __u8 *a, const __u8 *b)
{
	return ((a[0] ^ b[0]) | (a[1] ^ b[1]) | (a[2] ^ b[2]) | (a[3] ^ b[3]) | (a[4] ^ b[4]) | (a[5] ^ b[5])) == 0;
}

// The flow hash: MurmurHash3's 32-bit block and finalizer over words in
// host order, so that every host, whatever its byte order, puts a flow in
// the same slot. FlowHash in spread.go is the same function in Go.
static __always_inline __u32 mix(__u32 h, __u32 w)
{
	w *= 0xcc9e2d51;
	w = (w << 15) | (w >> 17);
	w *= 0x1b873593;
	h ^= w;
	h = (h << 13) | (h >> 19);
	return h * 5 + 0xe6546b64;
}

static __always_inline __u32 fmix(__u32 h)
{
	h ^= h >> 16;
	h *= 0x85ebca6b;
	h ^= h >> 13;
	h *= 0xc2b2ae35;
	h ^= h >> 16;
	return h;
}

#define VLAN_VID_MASK_ 0x0fff
#define HEADERS_LEN (ETH_HLEN + sizeof(struct iphdr))
#define TCX_NEXT_ (-1) // TC_ACT_UNSPEC: the next program, or the stack
#define TCP_SYN_ 0x02

// has_ports says whether protocol p carries source and destination ports
// in its first four bytes.
static __always_inline int has_ports(__u8 p)
{
	return p == IPPROTO_TCP || p == IPPROTO_UDP || p == IPPROTO_SCTP || p == IPPROTO_UDPLITE;
}

// destination reads the packet's destination address as 16 bytes (IPv4
// as ::ffff:a.b.c.d); non-zero: not IP to read.
static __always_inline int destination(struct __sk_buff *skb, __u8 *vip)
{
	void *data = (void *)(long)skb->data;
	void *end = (void *)(long)skb->data_end;
	struct ethhdr *eth = data;

	if ((void *)(eth + 1) > end)
		return 1;
	if (eth->h_proto == bpf_htons(ETH_P_IP)) {
		struct iphdr *ip = (void *)(eth + 1);
		if ((void *)(ip + 1) > end)
			return 1;
		vip[10] = 0xff;
		vip[11] = 0xff;
		__builtin_memcpy(&vip[12], &ip->daddr, 4);
		return 0;
	}
	if (eth->h_proto == bpf_htons(ETH_P_IPV6)) {
		struct ipv6hdr *ip6 = (void *)(eth + 1);
		if ((void *)(ip6 + 1) > end)
			return 1;
		__builtin_memcpy(vip, &ip6->daddr, 16);
		return 0;
	}
	return 1;
}

// A packet's flow, as the program needs it.
struct flow {
	__u32 hash;
	__u32 tuple_size; // 0: not a TCP segment that a socket may own
	struct bpf_sock_tuple tuple;
	__u8 syn;
	__u8 ttl;
	__u8 ipv6;
};

// read_flow reads the packet's flow: its hash is of the 5-tuple for TCP,
// UDP and SCTP, of the addresses alone for fragments, other protocols and
// IPv6 with extension headers. Returns 0, 1 (not IP to read), or 2 (the
// transport header is cut short).
static __always_inline int read_flow(struct __sk_buff *skb, struct flow *f)
{
	void *data = (void *)(long)skb->data;
	void *end = (void *)(long)skb->data_end;
	struct ethhdr *eth = data;
	__u32 h = 0, n;
	__u8 proto, l4h[14];
	int l4, fragment = 0;

	if ((void *)(eth + 1) > end)
		return 1;
	if (eth->h_proto == bpf_htons(ETH_P_IP)) {
		struct iphdr *ip = (void *)(eth + 1);
		if ((void *)(ip + 1) > end || ip->ihl < 5 || ip->version != 4)
			return 1;
		h = mix(h, bpf_ntohl(ip->saddr));
		h = mix(h, bpf_ntohl(ip->daddr));
		f->tuple.ipv4.saddr = ip->saddr;
		f->tuple.ipv4.daddr = ip->daddr;
		proto = ip->protocol;
		fragment = (ip->frag_off & bpf_htons(0x3fff)) != 0;
		l4 = ETH_HLEN + ip->ihl * 4;
		f->ttl = ip->ttl;
		n = 8;
	} else if (eth->h_proto == bpf_htons(ETH_P_IPV6)) {
		struct ipv6hdr *ip6 = (void *)(eth + 1);
		if ((void *)(ip6 + 1) > end)
			return 1;
		for (int i = 0; i < 4; i++)
			h = mix(h, bpf_ntohl(ip6->saddr.in6_u.u6_addr32[i]));
		for (int i = 0; i < 4; i++)
			h = mix(h, bpf_ntohl(ip6->daddr.in6_u.u6_addr32[i]));
		__builtin_memcpy(f->tuple.ipv6.saddr, &ip6->saddr, 16);
		__builtin_memcpy(f->tuple.ipv6.daddr, &ip6->daddr, 16);
		proto = ip6->nexthdr; // an extension header: not a port protocol
		l4 = ETH_HLEN + sizeof(*ip6);
		f->ttl = ip6->hop_limit;
		f->ipv6 = 1;
		n = 32;
	} else {
		return 1;
	}
	if (!fragment && has_ports(proto)) {
		// Copied, not pointed to (see the handover: no CAP_PERFMON).
		__u32 want = proto == IPPROTO_TCP ? 14 : 4;
		if (bpf_skb_load_bytes(skb, l4, l4h, want))
			return 2;
		__u16 sport = (__u16)l4h[0] << 8 | l4h[1], dport = (__u16)l4h[2] << 8 | l4h[3];
		h = mix(h, (__u32)sport << 16 | dport);
		h = mix(h, proto);
		n += 8;
		if (proto == IPPROTO_TCP) {
			f->syn = (l4h[13] & TCP_SYN_) != 0;
			if (f->ipv6) {
				f->tuple.ipv6.sport = bpf_htons(sport);
				f->tuple.ipv6.dport = bpf_htons(dport);
				f->tuple_size = sizeof(f->tuple.ipv6);
			} else {
				f->tuple.ipv4.sport = bpf_htons(sport);
				f->tuple.ipv4.dport = bpf_htons(dport);
				f->tuple_size = sizeof(f->tuple.ipv4);
			}
		}
	}
	f->hash = fmix(h ^ n);
	return 0;
}

// has_socket reports whether a socket here owns the segment's flow (not
// a listener alone: the segment is no SYN, a listener would reset it).
static __always_inline int has_socket(struct __sk_buff *skb, struct flow *f)
{
	// A constant size: the verifier does not follow one kept in memory.
	__u32 size = f->ipv6 ? sizeof(f->tuple.ipv6) : sizeof(f->tuple.ipv4);
	struct bpf_sock *sk = bpf_skc_lookup_tcp(skb, &f->tuple, size, BPF_F_CURRENT_NETNS, 0);
	if (!sk)
		return 0;
	int local = sk->state != BPF_TCP_LISTEN;
	bpf_sk_release(sk);
	return local;
}

// send rewrites the frame to dst, from the MAC it was sent to, one hop
// less if hop, and sends it out of the interface it came in by.
static __always_inline int send(struct __sk_buff *skb, const __u8 *dst, struct flow *f, int hop)
{
	void *data = (void *)(long)skb->data;
	void *end = (void *)(long)skb->data_end;
	struct ethhdr *eth = data;
	__u8 macs[12];

	if ((void *)(eth + 1) > end)
		return TCX_NEXT_;
	__builtin_memcpy(macs, dst, 6);
	__builtin_memcpy(&macs[6], eth->h_dest, 6);
	if (hop) {
		__u8 ttl = f->ttl - 1;
		if (f->ipv6) {
			if (bpf_skb_store_bytes(skb, ETH_HLEN + offsetof(struct ipv6hdr, hop_limit), &ttl, 1, 0))
				return TCX_NEXT_;
		} else {
			__u16 old_word = bpf_htons((__u16)f->ttl << 8), new_word = bpf_htons((__u16)ttl << 8);
			if (bpf_l3_csum_replace(skb, ETH_HLEN + offsetof(struct iphdr, check), old_word, new_word, 2))
				return TCX_NEXT_;
			if (bpf_skb_store_bytes(skb, ETH_HLEN + offsetof(struct iphdr, ttl), &ttl, 1, 0))
				return TCX_NEXT_;
		}
	}
	if (bpf_skb_store_bytes(skb, 0, macs, 12, 0))
		return TCX_NEXT_;
	return bpf_redirect(skb->ifindex, 0);
}

// local decides on a packet whose slot is this host's: a moved slot's
// open connection goes to its previous host, the rest to the stack.
static __always_inline int local(struct __sk_buff *skb, struct slot *s, struct flow *f, const __u8 *src, __u32 outcome)
{
	if (!f->tuple_size || f->syn || !s->deadline_ns || !unicast(s->prev) || bpf_ktime_get_ns() > s->deadline_ns) {
		count(outcome);
		return TCX_NEXT_;
	}
	if (has_socket(skb, f)) {
		count(outcome);
		return TCX_NEXT_;
	}
	if (same_mac(src, s->prev) || f->ttl <= 1) {
		count(OUTCOME_LOOP);
		return TCX_NEXT_;
	}
	int r = send(skb, s->prev, f, 1);
	if (r != TCX_NEXT_)
		count(OUTCOME_HANDED);
	return r;
}

// stale decides on a packet a host sent here for a slot this host's table
// gives to another: the hosts' views differ for a moment (each makes its
// table when gossip brings it the change). An open connection's TCP
// segment that matches no socket here goes on to the host this table
// names, which served the slot until the sender's table moved it, one hop
// less; the rest the stack decides. Without this, the host whose table
// changes last answers a moved connection's segments with a reset.
static __always_inline int stale(struct __sk_buff *skb, struct slot *s, struct flow *f, const __u8 *src)
{
	if (!f->tuple_size || f->syn || !unicast(s->mac) || has_socket(skb, f)) {
		count(OUTCOME_RECEIVED);
		return TCX_NEXT_;
	}
	if (same_mac(src, s->mac) || f->ttl <= 1) {
		count(OUTCOME_LOOP);
		return TCX_NEXT_;
	}
	int r = send(skb, s->mac, f, 1);
	if (r != TCX_NEXT_)
		count(OUTCOME_HANDED);
	return r;
}

// pull makes the first want bytes linear; non-zero if the packet is
// shorter or they cannot be.
static __always_inline int pull(struct __sk_buff *skb, const __u32 want)
{
	if (skb->len < want)
		return 1;
	if ((void *)(long)skb->data + want <= (void *)(long)skb->data_end)
		return 0;
	return bpf_skb_pull_data(skb, want) != 0;
}

SEC("tcx/ingress")
int spread(struct __sk_buff *skb)
{
	// Only what was sent to this host: the router resolved the VIP here,
	// or a director sent it on.
	if (skb->pkt_type != PACKET_HOST)
		return TCX_NEXT_;
	if (skb->vlan_present && (skb->vlan_tci & VLAN_VID_MASK_))
		return TCX_NEXT_;
	if (skb->protocol != bpf_htons(ETH_P_IP) && skb->protocol != bpf_htons(ETH_P_IPV6))
		return TCX_NEXT_;
	// Each family's length is a constant added to the packet pointer: the
	// verifier refuses a register added to it without CAP_PERFMON, and the
	// daemon runs with CAP_BPF only.
	if (skb->protocol == bpf_htons(ETH_P_IPV6)) {
		if (pull(skb, ETH_HLEN + sizeof(struct ipv6hdr)))
			return TCX_NEXT_;
	} else if (pull(skb, HEADERS_LEN)) {
		return TCX_NEXT_;
	}

	struct router_key rk = {};
	if (destination(skb, rk.vip))
		return TCX_NEXT_;
	struct vip_value *v = bpf_map_lookup_elem(&vips, rk.vip);
	if (!v)
		return TCX_NEXT_; // not a VIP with routers: the cheap way out
	void *data = (void *)(long)skb->data;
	void *end = (void *)(long)skb->data_end;
	struct ethhdr *eth = data;
	if ((void *)(eth + 1) > end)
		return TCX_NEXT_;
	__builtin_memcpy(rk.mac, eth->h_source, 6);
	int from_router = bpf_map_lookup_elem(&routers, &rk) != 0;
	if (!from_router) {
		struct peer_key pk = {};
		__builtin_memcpy(pk.mac, eth->h_source, 6);
		if (!bpf_map_lookup_elem(&peers, &pk)) {
			count(OUTCOME_NOT_ROUTER);
			return TCX_NEXT_;
		}
	}

	struct flow f = {};
	int r = read_flow(skb, &f);
	if (r == 1)
		return TCX_NEXT_;
	if (r == 2) {
		count(OUTCOME_BAD_PACKET);
		return TCX_NEXT_;
	}
	if (!v->filled) {
		count(OUTCOME_NO_TABLE);
		return TCX_NEXT_;
	}
	__u32 index = v->base + (f.hash & (SLOTS - 1));
	struct slot *s = bpf_map_lookup_elem(&slots, &index);
	if (!s) {
		count(OUTCOME_NO_TABLE);
		return TCX_NEXT_;
	}
	if (s->local)
		return local(skb, s, &f, rk.mac, from_router ? OUTCOME_LOCAL : OUTCOME_RECEIVED);
	if (from_router && s->was_local && f.tuple_size && !f.syn && bpf_ktime_get_ns() <= s->deadline_ns &&
	    has_socket(skb, &f)) {
		count(OUTCOME_LOCAL);
		return TCX_NEXT_;
	}
	if (!from_router)
		return stale(skb, s, &f, rk.mac);
	if (!unicast(s->mac)) {
		count(OUTCOME_BAD_MAC);
		return TCX_NEXT_;
	}
	r = send(skb, s->mac, &f, 0);
	if (r != TCX_NEXT_)
		count(OUTCOME_SPREAD);
	return r;
}

// The project's licence; the program uses no GPL-only helper.
char _license[] SEC("license") = "Apache-2.0";
