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

// Who serves a slot's flows: its host's MAC; local: this host.
struct slot {
	__u8 mac[6];
	__u8 local;
	__u8 pad;
};

// Two tables per VIP (the one in use and the next); the loader sizes it
// for the VIPs configured.
struct {
	__uint(type, BPF_MAP_TYPE_ARRAY);
	__uint(max_entries, 2 * MAX_VIPS * SLOTS);
	__type(key, __u32);
	__type(value, struct slot);
} slots SEC(".maps");

// Outcomes of a packet to a VIP whose routers are spread, for metrics.
enum outcome {
	OUTCOME_SPREAD = 0, // to another host
	OUTCOME_LOCAL,      // its slot is this host's
	OUTCOME_NOT_ROUTER, // not from a configured router: the ARP share decides
	OUTCOME_NO_TABLE,   // nobody to spread to yet
	OUTCOME_BAD_PACKET, // headers cut short: left to the stack
	OUTCOME_BAD_MAC,    // the slot's MAC is not unicast: not sent
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

// The flow hash: MurmurHash3's 32-bit block and finalizer over words in
// host order, so that every host, whatever its byte order, puts a flow in
// the same slot. daemon/spread's flowHash is the same function in Go.
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

// flow reads the hash of the packet's flow: the 5-tuple for TCP, UDP and
// SCTP, the addresses alone for fragments, other protocols and IPv6 with
// extension headers. Returns 0, 1 (not IP to read), or 2 (the transport
// header is cut short).
static __always_inline int flow(struct __sk_buff *skb, __u32 *hash)
{
	void *data = (void *)(long)skb->data;
	void *end = (void *)(long)skb->data_end;
	struct ethhdr *eth = data;
	__u32 h = 0, ports = 0, n;
	__u8 proto;
	int l4, fragment = 0;

	if ((void *)(eth + 1) > end)
		return 1;
	if (eth->h_proto == bpf_htons(ETH_P_IP)) {
		struct iphdr *ip = (void *)(eth + 1);
		if ((void *)(ip + 1) > end || ip->ihl < 5 || ip->version != 4)
			return 1;
		h = mix(h, bpf_ntohl(ip->saddr));
		h = mix(h, bpf_ntohl(ip->daddr));
		proto = ip->protocol;
		fragment = (ip->frag_off & bpf_htons(0x3fff)) != 0;
		l4 = ETH_HLEN + ip->ihl * 4;
		n = 8;
	} else if (eth->h_proto == bpf_htons(ETH_P_IPV6)) {
		struct ipv6hdr *ip6 = (void *)(eth + 1);
		if ((void *)(ip6 + 1) > end)
			return 1;
		for (int i = 0; i < 4; i++)
			h = mix(h, bpf_ntohl(ip6->saddr.in6_u.u6_addr32[i]));
		for (int i = 0; i < 4; i++)
			h = mix(h, bpf_ntohl(ip6->daddr.in6_u.u6_addr32[i]));
		proto = ip6->nexthdr; // an extension header: not a port protocol
		l4 = ETH_HLEN + sizeof(*ip6);
		n = 32;
	} else {
		return 1;
	}
	if (!fragment && has_ports(proto)) {
		if (bpf_skb_load_bytes(skb, l4, &ports, 4)) {
			*hash = 0;
			return 2;
		}
		h = mix(h, bpf_ntohl(ports));
		h = mix(h, proto);
		n += 8;
	}
	*hash = fmix(h ^ n);
	return 0;
}

SEC("tcx/ingress")
int spread(struct __sk_buff *skb)
{
	// Only what the router sent to this host: it resolved the VIP here.
	if (skb->pkt_type != PACKET_HOST)
		return TCX_NEXT_;
	if (skb->vlan_present && (skb->vlan_tci & VLAN_VID_MASK_))
		return TCX_NEXT_;
	if (skb->protocol != bpf_htons(ETH_P_IP) && skb->protocol != bpf_htons(ETH_P_IPV6))
		return TCX_NEXT_;
	if (skb->len < HEADERS_LEN)
		return TCX_NEXT_;
	__u32 want = skb->protocol == bpf_htons(ETH_P_IPV6) ? ETH_HLEN + sizeof(struct ipv6hdr) : HEADERS_LEN;
	if (skb->len < want)
		return TCX_NEXT_;
	if ((void *)(long)skb->data + want > (void *)(long)skb->data_end && bpf_skb_pull_data(skb, want))
		return TCX_NEXT_;

	struct router_key rk = {};
	if (destination(skb, rk.vip))
		return TCX_NEXT_;
	struct vip_value *v = bpf_map_lookup_elem(&vips, rk.vip);
	if (!v)
		return TCX_NEXT_; // not a VIP with routers: the cheap way out
	__u32 hash;
	int r = flow(skb, &hash);
	if (r == 1)
		return TCX_NEXT_;
	// The helpers may have moved the data: read the MACs again.
	void *data = (void *)(long)skb->data;
	void *end = (void *)(long)skb->data_end;
	struct ethhdr *eth = data;
	if ((void *)(eth + 1) > end)
		return TCX_NEXT_;
	__builtin_memcpy(rk.mac, eth->h_source, 6);
	if (!bpf_map_lookup_elem(&routers, &rk)) {
		count(OUTCOME_NOT_ROUTER);
		return TCX_NEXT_;
	}
	if (r == 2) {
		count(OUTCOME_BAD_PACKET);
		return TCX_NEXT_;
	}
	if (!v->filled) {
		count(OUTCOME_NO_TABLE);
		return TCX_NEXT_;
	}
	__u32 index = v->base + (hash & (SLOTS - 1));
	struct slot *s = bpf_map_lookup_elem(&slots, &index);
	if (!s) {
		count(OUTCOME_NO_TABLE);
		return TCX_NEXT_;
	}
	if (s->local) {
		count(OUTCOME_LOCAL);
		return TCX_NEXT_;
	}
	if (!unicast(s->mac)) {
		count(OUTCOME_BAD_MAC);
		return TCX_NEXT_;
	}
	// To the slot's host, from this one (the router sent it here).
	__u8 macs[12];
	__builtin_memcpy(macs, s->mac, 6);
	__builtin_memcpy(&macs[6], eth->h_dest, 6);
	if (bpf_skb_store_bytes(skb, 0, macs, 12, 0))
		return TCX_NEXT_;
	count(OUTCOME_SPREAD);
	return bpf_redirect(skb->ifindex, 0);
}

// The project's licence; the program uses no GPL-only helper.
char _license[] SEC("license") = "Apache-2.0";
