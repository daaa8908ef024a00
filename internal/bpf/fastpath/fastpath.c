//go:build ignore

// SPDX-License-Identifier: Apache-2.0
//
// The ARP and NDP fast paths (see doc.go).
//
// Runs at tcx ingress on a serving interface. An ARP request for a VIP from
// a client the daemon has already decided on is answered (or ignored) here,
// from the decisions map the daemon keeps: the reply leaves by the same
// interface and the request never reaches the daemon's raw socket, which
// sees frames after tc. Everything else goes on unchanged: to the next
// program, the kernel and the daemon, which decides as it always does.

#include <linux/types.h>
#include <linux/bpf.h>
#include <linux/if_ether.h>
#include <linux/if_packet.h>
#include <linux/pkt_cls.h>
#include <bpf/bpf_helpers.h>
#include <bpf/bpf_endian.h>

// A client of a VIP, both IPv4 addresses as on the wire.
struct decision_key {
	__u32 vip;
	__u32 client;
};

enum action {
	ACTION_SILENT = 0, // another host answers this client
	ACTION_ANSWER = 1, // this host does
};

struct decision {
	__u8 client_mac[6]; // the client's MAC as the daemon knows it
	__u8 action;
	__u8 slot;                // the VIP's counters
	__u32 pad;
	__u64 reported_ns;        // when the client was last reported seen
	__u64 reported_direct_ns; // the same, for a unicast request
};

// Written by the daemon whenever its decisions change. Allocated as used.
struct {
	__uint(type, BPF_MAP_TYPE_HASH);
	__uint(max_entries, 262144);
	__uint(map_flags, BPF_F_NO_PREALLOC);
	__type(key, struct decision_key);
	__type(value, struct decision);
} decisions SEC(".maps");

// A client answered or ignored here, for the daemon's client table: it reads
// and deletes these at most every second, woken by the first (see armed).
// At most one report a second per client.
struct seen_value {
	__u8 client_mac[6];
	__u8 pad[2];
	__u64 last_ns;   // CLOCK_MONOTONIC
	__u64 direct_ns; // the last unicast request; 0: none
};

struct {
	__uint(type, BPF_MAP_TYPE_HASH);
	__uint(max_entries, 65536);
	__uint(map_flags, BPF_F_NO_PREALLOC);
	__type(key, struct decision_key);
	__type(value, struct seen_value);
} seen SEC(".maps");

// The same for IPv6 (the NDP program): a client of a VIP, as on the wire.
struct decision6_key {
	__u8 vip[16];
	__u8 client[16];
};

struct {
	__uint(type, BPF_MAP_TYPE_HASH);
	__uint(max_entries, 262144);
	__uint(map_flags, BPF_F_NO_PREALLOC);
	__type(key, struct decision6_key);
	__type(value, struct decision);
} decisions6 SEC(".maps");

struct {
	__uint(type, BPF_MAP_TYPE_HASH);
	__uint(max_entries, 65536);
	__uint(map_flags, BPF_F_NO_PREALLOC);
	__type(key, struct decision6_key);
	__type(value, struct seen_value);
} seen6 SEC(".maps");

#define REPORT_NS 1000000000ULL

// The daemon sleeps until a report is waiting: it sets armed (one entry)
// before it reads the reports, and the first report after that clears it
// and wakes the daemon with a record in wake. Two processors may both send
// one: harmless.
struct {
	__uint(type, BPF_MAP_TYPE_ARRAY);
	__uint(max_entries, 1);
	__type(key, __u32);
	__type(value, __u32);
} armed SEC(".maps");

struct {
	__uint(type, BPF_MAP_TYPE_RINGBUF);
	__uint(max_entries, 4096);
} wake SEC(".maps");

static __always_inline void wake_daemon(void)
{
	__u32 zero = 0;
	__u32 *a = bpf_map_lookup_elem(&armed, &zero);
	if (!a || !*a)
		return;
	*a = 0;
	__u32 one = 1;
	bpf_ringbuf_output(&wake, &one, sizeof(one), 0);
}

// The interface's state, one entry. serving is 0 while the daemon rewrites
// the decisions, and whenever this host must answer nobody (no quorum,
// rejected, draining): then every frame goes to user space.
struct iface_state {
	__u8 mac[6]; // the interface's, the replies' source
	__u8 serving;
	__u8 pad;
};

struct {
	__uint(type, BPF_MAP_TYPE_ARRAY);
	__uint(max_entries, 1);
	__type(key, __u32);
	__type(value, struct iface_state);
} iface SEC(".maps");

// Frames decided here, per VIP slot: answered at 2*slot, not_owner at
// 2*slot+1.
#define MAX_SLOTS 256
struct {
	__uint(type, BPF_MAP_TYPE_PERCPU_ARRAY);
	__uint(max_entries, 2 * MAX_SLOTS);
	__type(key, __u32);
	__type(value, __u64);
} counts SEC(".maps");

// Frames handed to user space, by reason, for the bench and the tests.
enum punt {
	PUNT_NOT_SERVING = 0,
	PUNT_UNKNOWN,   // no decision for this (VIP, client)
	PUNT_MAC,       // the client's MAC changed: the daemon must learn it
	PUNT_OTHER,     // a reply, an unusual request, garbage
	PUNT_SENDER,    // sender MAC not unicast, or not the Ethernet source
	PUNT_VLAN,      // tagged for a VLAN: that VLAN's interface's business
	PUNT_CHECKSUM,  // a Neighbor Solicitation whose ICMPv6 checksum is wrong
	PUNT_MAX,
};

struct {
	__uint(type, BPF_MAP_TYPE_PERCPU_ARRAY);
	__uint(max_entries, PUNT_MAX);
	__type(key, __u32);
	__type(value, __u64);
} punts SEC(".maps");

static __always_inline void bump(void *map, __u32 i)
{
	__u64 *n = bpf_map_lookup_elem(map, &i);
	if (n)
		(*n)++;
}

#define TCX_NEXT_ (-1) // TC_ACT_UNSPEC: the next program, or the stack

static __always_inline int punt(__u32 why)
{
	bump(&punts, why);
	return TCX_NEXT_;
}

// An ARP packet for IPv4 over Ethernet, after the Ethernet header.
struct arp4 {
	__be16 htype, ptype;
	__u8 hlen, plen;
	__be16 op;
	__u8 sha[6];
	__u8 spa[4];
	__u8 tha[6];
	__u8 tpa[4];
} __attribute__((packed));

#define ARP_LEN (ETH_HLEN + sizeof(struct arp4))

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

static __always_inline void report(void *seen_map, void *k, struct decision *d, int direct, __u64 now)
{
	int due = now - d->reported_ns >= REPORT_NS;
	int due_direct = direct && now - d->reported_direct_ns >= REPORT_NS;
	if (!due && !due_direct)
		return;
	struct seen_value *s = bpf_map_lookup_elem(seen_map, k);
	if (s) {
		s->last_ns = now;
		if (direct)
			s->direct_ns = now;
	} else {
		struct seen_value n = {.last_ns = now, .direct_ns = direct ? now : 0};
		__builtin_memcpy(n.client_mac, d->client_mac, 6);
		if (bpf_map_update_elem(seen_map, k, &n, BPF_NOEXIST) && bpf_map_update_elem(seen_map, k, &n, BPF_ANY))
			return; // full: reported again next time
	}
	d->reported_ns = now;
	if (direct)
		d->reported_direct_ns = now;
	wake_daemon();
}

SEC("tcx/ingress")
int arp_fastpath(struct __sk_buff *skb)
{
	// A frame with a second tag inside has the inner tag's EtherType
	// here: not ARP, passed on.
	if (skb->protocol != bpf_htons(ETH_P_ARP))
		return TCX_NEXT_;
	// The kernel moves a frame's (outer) VLAN tag into the skb before tc
	// runs: the request then looks untagged, but belongs to the VLAN's
	// own interface (or to none here), not to the segment this program
	// serves. A priority tag alone (VLAN 0) is this segment's, as the
	// kernel's own receive path treats it.
	if (skb->vlan_present && (skb->vlan_tci & VLAN_VID_MASK_))
		return punt(PUNT_VLAN);
	// Unicast to another host (promiscuous mode) is not for us to answer.
	if (skb->pkt_type == PACKET_OTHERHOST)
		return punt(PUNT_OTHER);
	if (skb->len < ARP_LEN)
		return punt(PUNT_OTHER);
	if ((void *)(long)skb->data + ARP_LEN > (void *)(long)skb->data_end && bpf_skb_pull_data(skb, ARP_LEN))
		return punt(PUNT_OTHER);

	void *data = (void *)(long)skb->data;
	void *end = (void *)(long)skb->data_end;
	struct ethhdr *eth = data;
	struct arp4 *a = (void *)(eth + 1);
	if ((void *)(a + 1) > end)
		return punt(PUNT_OTHER);
	if (a->htype != bpf_htons(1) || a->ptype != bpf_htons(ETH_P_IP) || a->hlen != 6 || a->plen != 4 ||
	    a->op != bpf_htons(1))
		return punt(PUNT_OTHER);
	// Never an answer to a group or zero address, nor to a sender that
	// claims another MAC than the one it sends from: the daemon drops
	// and counts these.
	if (!unicast(a->sha) || !same_mac(a->sha, eth->h_source))
		return punt(PUNT_SENDER);

	__u32 zero = 0;
	struct iface_state *cfg = bpf_map_lookup_elem(&iface, &zero);
	if (!cfg || !cfg->serving)
		return punt(PUNT_NOT_SERVING);

	struct decision_key k = {};
	__builtin_memcpy(&k.vip, a->tpa, 4);
	__builtin_memcpy(&k.client, a->spa, 4);
	struct decision *d = bpf_map_lookup_elem(&decisions, &k);
	if (!d)
		return punt(PUNT_UNKNOWN);
	if (!same_mac(d->client_mac, a->sha))
		return punt(PUNT_MAC);

	// As the daemon tells them apart: anything but broadcast was sent to
	// this host alone.
	static const __u8 bcast[6] = {0xff, 0xff, 0xff, 0xff, 0xff, 0xff};
	int direct = !same_mac(eth->h_dest, bcast);
	report(&seen, &k, d, direct, bpf_ktime_get_ns());

	if (d->action != ACTION_ANSWER) {
		bump(&counts, 2 * (__u32)d->slot + 1);
		return TC_ACT_SHOT; // handled: another host answers
	}
	bump(&counts, 2 * (__u32)d->slot);

	// The request becomes its reply, in place: to the asker, from this
	// interface, "VIP is at mac".
	__u8 asker[6];
	__builtin_memcpy(asker, a->sha, 6);
	__builtin_memcpy(eth->h_dest, asker, 6);
	__builtin_memcpy(eth->h_source, cfg->mac, 6);
	a->op = bpf_htons(2);
	__builtin_memcpy(a->tha, asker, 6);
	__builtin_memcpy(a->tpa, &k.client, 4);
	__builtin_memcpy(a->sha, cfg->mac, 6);
	__builtin_memcpy(a->spa, &k.vip, 4);
	return bpf_redirect(skb->ifindex, 0);
}

// The NDP fast path: the same for IPv6, on a Neighbor Solicitation for a
// VIP from a client the daemon has decided on, answered with the Neighbor
// Advertisement the daemon would send (solicited, override, the
// interface's MAC as target link-layer address), unicast to the client.
// Only the common form is answered here: from a unicast address, to the
// VIP's solicited-node group or to the VIP, hop limit 255, no extension
// header, exactly one option (the source link-layer address, the
// Ethernet source), a correct checksum. Everything else goes on to the
// daemon, which validates it as always.

struct ip6 {
	__be32 vtc_flow;
	__be16 payload_len;
	__u8 nexthdr;
	__u8 hop_limit;
	__u8 saddr[16];
	__u8 daddr[16];
} __attribute__((packed));

// A Neighbor Solicitation (RFC 4861 4.3) with one link-layer address
// option; an advertisement (4.4) has the same layout.
struct ns {
	__u8 type, code;
	__u16 csum;
	__be32 flags; // reserved in a solicitation
	__u8 target[16];
	__u8 opt_type, opt_len; // length in units of 8 bytes
	__u8 opt_mac[6];
} __attribute__((packed));

#define NDP_OFF_NEXTHDR (ETH_HLEN + 6)
#define NDP_OFF_ICMP (ETH_HLEN + sizeof(struct ip6))
#define NDP_LEN (NDP_OFF_ICMP + sizeof(struct ns))
#define IPPROTO_ICMPV6_ 58
#define ICMP6_NS 135
#define ICMP6_NA 136
#define NDP_OPT_SLLA 1
#define NDP_OPT_TLLA 2
#define NA_FLAGS 0x60000000 // solicited, override

// sum16 adds n 16-bit words at p, in the byte order they are in: the
// Internet checksum is the same either way (RFC 1071 2.B).
static __always_inline __u32 sum16(const __u16 *p, int n)
{
	__u32 s = 0;
	// Fully unrolled, never re-rolled or vectorised: a loop would add a
	// variable offset to a packet pointer, which the verifier refuses to
	// a loader without CAP_PERFMON (the daemon has CAP_BPF only).
#pragma clang loop unroll(full) vectorize(disable) interleave(disable)
	for (int i = 0; i < n; i++)
		s += p[i];
	return s;
}

// icmp6_sum is the ones' complement sum of the ICMPv6 message and its
// pseudo-header (RFC 8200 8.1), before the final complement.
static __always_inline __u16 icmp6_sum(struct ip6 *ip, struct ns *m)
{
	__u32 s = sum16((__u16 *)ip->saddr, 8) + sum16((__u16 *)ip->daddr, 8);
	s += bpf_htons(sizeof(struct ns)) + bpf_htons(IPPROTO_ICMPV6_);
	s += sum16((__u16 *)m, sizeof(struct ns) / 2);
	s = (s & 0xffff) + (s >> 16);
	s = (s & 0xffff) + (s >> 16);
	return (__u16)s;
}

static __always_inline int zero16(const __u8 *a)
{
	__u8 x = 0;
#pragma unroll
	for (int i = 0; i < 16; i++)
		x |= a[i];
	return x == 0;
}

static __always_inline int same16(const __u8 *a, const __u8 *b)
{
	__u8 x = 0;
#pragma unroll
	for (int i = 0; i < 16; i++)
		x |= a[i] ^ b[i];
	return x == 0;
}

// to_target says whether a solicitation for target went where one goes:
// to its solicited-node group (ff02::1:ffXX:XXXX, RFC 4291 2.7.1) on the
// matching Ethernet group, or to the target itself, unicast.
static __always_inline int to_target(struct ethhdr *eth, struct ip6 *ip, struct ns *m)
{
	if (same16(ip->daddr, m->target))
		return !(eth->h_dest[0] & 1);
	static const __u8 prefix[13] = {0xff, 0x02, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0x01, 0xff};
	__u8 x = 0;
#pragma unroll
	for (int i = 0; i < 13; i++)
		x |= ip->daddr[i] ^ prefix[i];
#pragma unroll
	for (int i = 13; i < 16; i++)
		x |= (ip->daddr[i] ^ m->target[i]) | (eth->h_dest[i - 10] ^ m->target[i]);
	return x == 0 && eth->h_dest[0] == 0x33 && eth->h_dest[1] == 0x33 && eth->h_dest[2] == 0xff;
}

// is_ns says whether the frame is an ICMPv6 Neighbor Solicitation, read
// without pulling it: other IPv6 traffic is passed on uncounted.
static __always_inline int is_ns(struct __sk_buff *skb)
{
	__u8 nexthdr, type;
	if (bpf_skb_load_bytes(skb, NDP_OFF_NEXTHDR, &nexthdr, 1) || nexthdr != IPPROTO_ICMPV6_)
		return 0;
	return !bpf_skb_load_bytes(skb, NDP_OFF_ICMP, &type, 1) && type == ICMP6_NS;
}

// valid_ns checks everything the answer relies on (see above).
static __always_inline int valid_ns(struct ip6 *ip, struct ns *m)
{
	if ((ip->vtc_flow & bpf_htonl(0xf0000000)) != bpf_htonl(0x60000000) ||
	    ip->payload_len != bpf_htons(sizeof(struct ns)) || ip->hop_limit != 255)
		return 0;
	if (m->code != 0 || m->opt_type != NDP_OPT_SLLA || m->opt_len != 1)
		return 0;
	// A client's own address: not a group, not unspecified (duplicate
	// address detection, answered to all nodes by the daemon).
	if (ip->saddr[0] == 0xff || zero16(ip->saddr) || m->target[0] == 0xff)
		return 0;
	return 1;
}

SEC("tcx/ingress")
int ndp_fastpath(struct __sk_buff *skb)
{
	if (skb->protocol != bpf_htons(ETH_P_IPV6) || !is_ns(skb))
		return TCX_NEXT_;
	if (skb->vlan_present && (skb->vlan_tci & VLAN_VID_MASK_))
		return punt(PUNT_VLAN);
	if (skb->pkt_type == PACKET_OTHERHOST || skb->len != NDP_LEN)
		return punt(PUNT_OTHER);
	if ((void *)(long)skb->data + NDP_LEN > (void *)(long)skb->data_end && bpf_skb_pull_data(skb, NDP_LEN))
		return punt(PUNT_OTHER);

	void *data = (void *)(long)skb->data;
	void *end = (void *)(long)skb->data_end;
	struct ethhdr *eth = data;
	struct ip6 *ip = (void *)(eth + 1);
	struct ns *m = (void *)(ip + 1);
	if ((void *)(m + 1) > end)
		return punt(PUNT_OTHER);
	if (!valid_ns(ip, m) || !to_target(eth, ip, m))
		return punt(PUNT_OTHER);
	if (icmp6_sum(ip, m) != 0xffff)
		return punt(PUNT_CHECKSUM);
	if (!unicast(m->opt_mac) || !same_mac(m->opt_mac, eth->h_source))
		return punt(PUNT_SENDER);

	__u32 zero = 0;
	struct iface_state *cfg = bpf_map_lookup_elem(&iface, &zero);
	if (!cfg || !cfg->serving)
		return punt(PUNT_NOT_SERVING);

	struct decision6_key k = {};
	__builtin_memcpy(k.vip, m->target, 16);
	__builtin_memcpy(k.client, ip->saddr, 16);
	struct decision *d = bpf_map_lookup_elem(&decisions6, &k);
	if (!d)
		return punt(PUNT_UNKNOWN);
	if (!same_mac(d->client_mac, m->opt_mac))
		return punt(PUNT_MAC);

	// As the daemon tells them apart: to the VIP itself, not its group.
	int direct = !(eth->h_dest[0] & 1);
	report(&seen6, &k, d, direct, bpf_ktime_get_ns());

	if (d->action != ACTION_ANSWER) {
		bump(&counts, 2 * (__u32)d->slot + 1);
		return TC_ACT_SHOT;
	}
	bump(&counts, 2 * (__u32)d->slot);

	// The solicitation becomes its advertisement, in place: from the
	// VIP at this interface's MAC, to the asker.
	__builtin_memcpy(eth->h_dest, d->client_mac, 6);
	__builtin_memcpy(eth->h_source, cfg->mac, 6);
	ip->vtc_flow = bpf_htonl(0x60000000);
	__builtin_memcpy(ip->daddr, k.client, 16);
	__builtin_memcpy(ip->saddr, k.vip, 16);
	m->type = ICMP6_NA;
	m->csum = 0;
	m->flags = bpf_htonl(NA_FLAGS);
	m->opt_type = NDP_OPT_TLLA;
	__builtin_memcpy(m->opt_mac, cfg->mac, 6);
	m->csum = ~icmp6_sum(ip, m);
	return bpf_redirect(skb->ifindex, 0);
}

// The project's licence; the program uses no GPL-only helper.
char _license[] SEC("license") = "Apache-2.0";
