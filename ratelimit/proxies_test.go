package ratelimit

import (
	"net/http/httptest"
	"strings"
	"testing"
)

func TestParseProxies(t *testing.T) {
	tests := []struct {
		in      string
		want    string // String() of the result
		wantErr bool
	}{
		{in: "", want: ""},
		{in: " , ", want: ""},
		{in: "10.0.0.0/8", want: "10.0.0.0/8"},
		{in: "10.1.2.3/8", want: "10.0.0.0/8"},
		{in: "192.0.2.7", want: "192.0.2.7/32"},
		{in: "::1", want: "::1/128"},
		{in: " 10.0.0.0/8 , 2001:db8::/32,192.0.2.7 ", want: "10.0.0.0/8,2001:db8::/32,192.0.2.7/32"},
		{in: "::ffff:10.0.0.0/104", want: "10.0.0.0/8"},
		{in: "::ffff:192.0.2.7", want: "192.0.2.7/32"},
		{in: "fe80::1%eth0", want: "fe80::1/128"},
		{in: "10.0.0.0/33", wantErr: true},
		{in: "10.0.0/8", wantErr: true},
		{in: "example.com", wantErr: true},
		{in: "10.0.0.0/8;192.0.2.0/24", wantErr: true},
		{in: "10.0.0.0/8,bogus", wantErr: true},
		{in: "*", wantErr: true},
	}
	for _, tt := range tests {
		t.Run(tt.in, func(t *testing.T) {
			p, err := ParseProxies(tt.in)
			if tt.wantErr {
				if err == nil {
					t.Fatalf("ParseProxies(%q) = %v, want an error", tt.in, p)
				}
				if !strings.Contains(err.Error(), "want e.g.") {
					t.Fatalf("error %q does not say what is expected", err)
				}
				return
			}
			if err != nil {
				t.Fatalf("ParseProxies(%q): %v", tt.in, err)
			}
			if got := p.String(); got != tt.want {
				t.Fatalf("ParseProxies(%q) = %q, want %q", tt.in, got, tt.want)
			}
		})
	}
}

func TestClientIP(t *testing.T) {
	const lan = "10.0.0.0/8, 2001:db8:ffff::/48"
	tests := []struct {
		name    string
		proxies string
		remote  string
		xff     []string // one X-Forwarded-For header each
		want    string
	}{
		{"no proxies, no XFF", "", "203.0.113.9:4711", nil, "203.0.113.9"},
		{"no proxies, spoofed XFF", "", "203.0.113.9:4711", []string{"1.2.3.4"}, "203.0.113.9"},
		{"untrusted remote, spoofed XFF", lan, "203.0.113.9:4711", []string{"1.2.3.4, 10.0.0.1"}, "203.0.113.9"},
		{"untrusted remote, spoofed trusted XFF", lan, "203.0.113.9:4711", []string{"10.0.0.1"}, "203.0.113.9"},
		{"trusted remote, no XFF", lan, "10.0.0.1:80", nil, "10.0.0.1"},
		{"trusted remote, empty XFF", lan, "10.0.0.1:80", []string{""}, "10.0.0.1"},
		{"one hop", lan, "10.0.0.1:80", []string{"198.51.100.7"}, "198.51.100.7"},
		{"one hop, client-sent prefix ignored", lan, "10.0.0.1:80", []string{"1.1.1.1, 198.51.100.7"}, "198.51.100.7"},
		{"several hops", lan, "10.0.0.4:80", []string{"198.51.100.7, 10.0.0.2, 10.0.0.3"}, "198.51.100.7"},
		{"several hops, spoofed prefix", lan, "10.0.0.4:80", []string{"10.9.9.9, 6.6.6.6, 198.51.100.7, 10.0.0.2"}, "198.51.100.7"},
		{"all trusted: leftmost", lan, "10.0.0.4:80", []string{"10.0.0.9, 10.0.0.2, 10.0.0.3"}, "10.0.0.9"},
		{"malformed stops the walk", lan, "10.0.0.4:80", []string{"198.51.100.7, garbage, 10.0.0.2"}, "10.0.0.2"},
		{"malformed rightmost: remote", lan, "10.0.0.4:80", []string{"198.51.100.7, unknown"}, "10.0.0.4"},
		{"empty entry is malformed", lan, "10.0.0.4:80", []string{"198.51.100.7,,10.0.0.2"}, "10.0.0.2"},
		{"hostname is malformed", lan, "10.0.0.4:80", []string{"evil.example"}, "10.0.0.4"},
		{"spaces", lan, "10.0.0.4:80", []string{"  198.51.100.7 ,10.0.0.2 "}, "198.51.100.7"},
		{"entry with port", lan, "10.0.0.4:80", []string{"198.51.100.7:5555"}, "198.51.100.7"},
		{"IPv6 entry with port", lan, "10.0.0.4:80", []string{"[2001:db8::7]:443"}, "2001:db8::7"},
		{"IPv6 entry in brackets", lan, "10.0.0.4:80", []string{"[2001:db8::7]"}, "2001:db8::7"},
		{"IPv6 remote, untrusted", lan, "[2001:db8::1]:443", []string{"198.51.100.7"}, "2001:db8::1"},
		{"IPv6 proxy, IPv6 client, canonical form", lan, "[2001:db8:ffff::1]:443", []string{"2001:DB8:0:0::7"}, "2001:db8::7"},
		{"IPv6 proxy, IPv4 client", lan, "[2001:db8:ffff::1]:443", []string{"198.51.100.7, 2001:db8:ffff::2"}, "198.51.100.7"},
		{"IPv4-mapped remote is IPv4", lan, "[::ffff:10.0.0.1]:80", []string{"::ffff:198.51.100.7"}, "198.51.100.7"},
		{"IPv4-mapped untrusted remote", lan, "[::ffff:203.0.113.9]:80", []string{"1.2.3.4"}, "203.0.113.9"},
		{"IPv4-mapped proxy entry", "::ffff:10.0.0.0/104", "10.1.2.3:80", []string{"198.51.100.7"}, "198.51.100.7"},
		{"zone dropped", lan, "[fe80::1%eth0]:80", nil, "fe80::1"},
		{"zoned XFF entry", "fe80::/10", "[fe80::1%eth0]:80", []string{"fe80::2%eth1"}, "fe80::2"},
		{"multiple headers", lan, "10.0.0.3:80", []string{"1.1.1.1, 198.51.100.7", "10.0.0.2"}, "198.51.100.7"},
		{"multiple headers, last untrusted", lan, "10.0.0.3:80", []string{"198.51.100.7", "203.0.113.5"}, "203.0.113.5"},
		{"multiple headers, all trusted", lan, "10.0.0.3:80", []string{"10.0.0.5", "10.0.0.6, 10.0.0.7"}, "10.0.0.5"},
		{"multiple headers, malformed earlier", lan, "10.0.0.3:80", []string{"198.51.100.7, nope", "10.0.0.6"}, "10.0.0.6"},
		{"single-IP proxy trusted", "192.0.2.10", "192.0.2.10:80", []string{"198.51.100.7"}, "198.51.100.7"},
		{"single-IP proxy, neighbour not", "192.0.2.10", "192.0.2.11:80", []string{"198.51.100.7"}, "192.0.2.11"},
		{"remote without port", lan, "198.51.100.9", nil, "198.51.100.9"},
		{"remote not an IP (unix socket)", lan, "@", []string{"198.51.100.7"}, "@"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			p, err := ParseProxies(tt.proxies)
			if err != nil {
				t.Fatal(err)
			}
			r := httptest.NewRequest("POST", "/graphql", nil)
			r.RemoteAddr = tt.remote
			for _, v := range tt.xff {
				r.Header.Add("X-Forwarded-For", v)
			}
			if got := p.ClientIP(r); got != tt.want {
				t.Fatalf("ClientIP = %q, want %q", got, tt.want)
			}
		})
	}
}

func BenchmarkClientIP(b *testing.B) {
	p, _ := ParseProxies("10.0.0.0/8, 172.16.0.0/12")
	r := httptest.NewRequest("POST", "/graphql", nil)
	r.RemoteAddr = "10.0.0.4:80"
	r.Header.Set("X-Forwarded-For", "198.51.100.7, 10.0.0.2, 10.0.0.3")
	for b.Loop() {
		p.ClientIP(r)
	}
}
