package ratelimit

import (
	"fmt"
	"net/http"
	"net/netip"
	"strings"
)

// Proxies is the set of CIDRs whose X-Forwarded-For is believed
// (TRUSTED_PROXIES). The zero Proxies trusts no one: the caller is always the
// connection's peer.
type Proxies struct {
	prefixes []netip.Prefix
}

// ParseProxies reads TRUSTED_PROXIES: comma-separated CIDRs ("10.0.0.0/8",
// "2001:db8::/32") or single IPs ("192.0.2.7", "::1"). Spaces around entries
// and empty entries are ignored; "" trusts no one. IPv4-mapped IPv6 entries
// ("::ffff:10.0.0.0/104") mean their IPv4 range.
func ParseProxies(s string) (Proxies, error) {
	var p Proxies
	for entry := range strings.SplitSeq(s, ",") {
		entry = strings.TrimSpace(entry)
		if entry == "" {
			continue
		}
		pfx, err := parseProxy(entry)
		if err != nil {
			return Proxies{}, fmt.Errorf("trusted proxies: %q is not an IP address or CIDR (want e.g. 10.0.0.0/8, 2001:db8::/32 or 192.0.2.7, comma-separated)", entry)
		}
		p.prefixes = append(p.prefixes, pfx)
	}
	return p, nil
}

func parseProxy(s string) (netip.Prefix, error) {
	if !strings.Contains(s, "/") {
		a, err := netip.ParseAddr(s)
		if err != nil {
			return netip.Prefix{}, err
		}
		a = normalize(a)
		return netip.PrefixFrom(a, a.BitLen()), nil
	}
	pfx, err := netip.ParsePrefix(s)
	if err != nil {
		return netip.Prefix{}, err
	}
	if a := pfx.Addr(); a.Is4In6() && pfx.Bits() >= 96 {
		pfx = netip.PrefixFrom(a.Unmap(), pfx.Bits()-96)
	}
	return pfx.Masked(), nil
}

// String lists p the way ParseProxies reads it.
func (p Proxies) String() string {
	s := make([]string, len(p.prefixes))
	for i, pfx := range p.prefixes {
		s[i] = pfx.String()
	}
	return strings.Join(s, ",")
}

// trusts reports whether a (normalized) is one of p's proxies.
func (p Proxies) trusts(a netip.Addr) bool {
	for _, pfx := range p.prefixes {
		if pfx.Contains(a) {
			return true
		}
	}
	return false
}

// ClientIP returns the caller's IP: the request's RemoteAddr, unless that is
// a trusted proxy, in which case X-Forwarded-For (all such headers, in order,
// as one list) is walked from the right, skipping trusted proxies, and the
// first untrusted address is the caller; if every entry is trusted, the
// leftmost. A malformed entry (not an IP, or IP:port) stops the walk: the
// caller is then the last good address seen. X-Forwarded-For from an
// untrusted RemoteAddr is never read.
//
// The result is canonical (IPv4-mapped IPv6 as IPv4, IPv6 compressed, no
// zone), fit for a map key. A RemoteAddr that is not IP:port (e.g. a Unix
// socket) is returned as it is, and its X-Forwarded-For is not read.
func (p Proxies) ClientIP(r *http.Request) string {
	remote, ok := parseHop(r.RemoteAddr)
	if !ok {
		return r.RemoteAddr
	}
	if !p.trusts(remote) {
		return remote.String()
	}
	client := remote
	hops := r.Header.Values("X-Forwarded-For")
	for i := len(hops) - 1; i >= 0; i-- {
		h := hops[i]
		for {
			j := strings.LastIndexByte(h, ',') // -1: h is the last entry
			a, ok := parseHop(h[j+1:])
			if !ok {
				return client.String()
			}
			if !p.trusts(a) {
				return a.String()
			}
			client = a
			if j < 0 {
				break
			}
			h = h[:j]
		}
	}
	return client.String()
}

// parseHop reads one address: "IP", "IP:port", "[IPv6]" or "[IPv6]:port".
func parseHop(s string) (netip.Addr, bool) {
	s = strings.TrimSpace(s)
	if len(s) > 2 && s[0] == '[' && s[len(s)-1] == ']' {
		s = s[1 : len(s)-1]
	}
	a, err := netip.ParseAddr(s)
	if err != nil {
		ap, err := netip.ParseAddrPort(s)
		if err != nil {
			return netip.Addr{}, false
		}
		a = ap.Addr()
	}
	return normalize(a), true
}

func normalize(a netip.Addr) netip.Addr { return a.Unmap().WithZone("") }
