//go:build linux

package main

import (
	"fmt"
	"io"
	"net"
	"sync/atomic"
	"syscall"
	"testing"
	"time"
)

// BenchmarkLoopbackEvent measures the floor under the subscribers scenario's
// figures on this machine: the CPU one event costs when it is nothing but
// one write on the server's socket and one read on the subscriber's (no
// WebSocket framing, no JSON, no GraphQL), over many loopback TCP
// connections as the scenario uses. With S subscribers, each needing an
// event about every 0.7 s to hear of a change within a second, the fan-out
// costs at least S / 0.7 × this per second.
//
//	go test -run '^$' -bench LoopbackEvent ./loadtest
func BenchmarkLoopbackEvent(b *testing.B) {
	for _, conns := range []int{100, 1000, 4000} {
		b.Run(fmt.Sprintf("conns=%d", conns), func(b *testing.B) {
			servers, readers := loopbackPairs(b, conns)
			msg := make([]byte, 200) // about one productStock event
			b.ResetTimer()
			start := cpuTime()
			for i := 0; i < b.N; i++ {
				if _, err := servers[i%conns].Write(msg); err != nil {
					b.Fatal(err)
				}
			}
			readers.wait(b.N)
			b.StopTimer()
			b.ReportMetric(float64((cpuTime()-start).Nanoseconds())/float64(b.N)/1e3, "cpu-µs/event")
		})
	}
}

// pairReaders counts the messages read on the subscribers' side.
type pairReaders struct{ msgs atomic.Int64 }

func (r *pairReaders) wait(n int) {
	for r.msgs.Load() < int64(n) {
		time.Sleep(100 * time.Microsecond)
	}
	r.msgs.Store(0)
}

// loopbackPairs connects n loopback TCP pairs and reads 200-byte messages
// on the client side of each, each in its own goroutine.
func loopbackPairs(b *testing.B, n int) ([]net.Conn, *pairReaders) {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		b.Fatal(err)
	}
	b.Cleanup(func() { ln.Close() })
	r := &pairReaders{}
	servers := make([]net.Conn, 0, n)
	for range n {
		c, err := net.Dial("tcp", ln.Addr().String())
		if err != nil {
			b.Fatalf("dial (raise the open files limit for this many connections): %v", err)
		}
		s, err := ln.Accept()
		if err != nil {
			b.Fatal(err)
		}
		b.Cleanup(func() { c.Close(); s.Close() })
		servers = append(servers, s)
		go func() {
			buf := make([]byte, 200)
			for {
				if _, err := io.ReadFull(c, buf); err != nil {
					return
				}
				r.msgs.Add(1)
			}
		}()
	}
	time.Sleep(10 * time.Millisecond) // let every reader park on its socket
	return servers, r
}

// cpuTime is the process's user and system CPU so far.
func cpuTime() time.Duration {
	var ru syscall.Rusage
	if err := syscall.Getrusage(syscall.RUSAGE_SELF, &ru); err != nil {
		return 0
	}
	return time.Duration(ru.Utime.Nano() + ru.Stime.Nano())
}
