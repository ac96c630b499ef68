package main

import (
	"bufio"
	"bytes"
	"errors"
	"fmt"
	"io"
	"net"
	"net/url"
	"strconv"
	"time"
)

// rawGetter is one edge reader's keep-alive connection: a bare HTTP/1.1
// GET of one fixed URL, one write and one read per request, no header map.
//
// Why not net/http: in edge the tool shares two cores with nginx and the
// server, and each read it makes costs them what it spends; net/http's
// client spends more on a request than nginx does to serve it from its
// cache, so the tool, not nginx, would set edge's rate. Both of edge's rows
// read this way, so their ratio compares the servers, not the clients.
type rawGetter struct {
	addr    string // host:port
	req     []byte // the whole request
	timeout time.Duration
	conn    net.Conn
	br      *bufio.Reader
	body    []byte // the last answer's body, reused
}

// rawAnswer is what edge needs of an answer.
type rawAnswer struct {
	status int
	cache  string // X-Cache-Status, one of cacheStatuses, "" when absent
	body   []byte // valid until the next get
}

// cacheStatuses are nginx's $upstream_cache_status values: returned as
// these strings, so a request allocates none.
var cacheStatuses = []string{"HIT", "STALE", "UPDATING", "REVALIDATED", "MISS", "EXPIRED", "BYPASS"}

func newRawGetter(rawURL string, timeout time.Duration) (*rawGetter, error) {
	u, err := url.Parse(rawURL)
	if err != nil || u.Scheme != "http" {
		return nil, fmt.Errorf("edge reads plain http:// only, not %q", rawURL)
	}
	req := "GET " + u.RequestURI() + " HTTP/1.1\r\nHost: " + u.Host + "\r\nUser-Agent: flashsale-loadtest\r\n\r\n"
	return &rawGetter{addr: u.Host, req: []byte(req), timeout: timeout}, nil
}

// get sends the request and reads the answer, reconnecting first when the
// previous answer closed the connection or failed.
func (g *rawGetter) get() (rawAnswer, error) {
	if g.conn == nil {
		c, err := loopbackDialer().Dial("tcp", g.addr)
		if err != nil {
			return rawAnswer{}, err
		}
		g.conn, g.br = c, bufio.NewReaderSize(c, 4096)
	}
	_ = g.conn.SetDeadline(time.Now().Add(g.timeout))
	a, keep, err := g.roundTrip()
	if err != nil || !keep {
		g.close()
	}
	return a, err
}

func (g *rawGetter) close() {
	if g.conn != nil {
		g.conn.Close()
		g.conn, g.br = nil, nil
	}
}

var errUnsupported = errors.New("answer without Content-Length")

// roundTrip writes the request and reads one answer; keep is false when
// the server closes the connection after it.
func (g *rawGetter) roundTrip() (a rawAnswer, keep bool, err error) {
	if _, err := g.conn.Write(g.req); err != nil {
		return a, false, err
	}
	line, err := g.br.ReadSlice('\n')
	if err != nil {
		return a, false, err
	}
	// "HTTP/1.1 200 OK"
	if len(line) < 12 || !bytes.HasPrefix(line, []byte("HTTP/1.")) {
		return a, false, fmt.Errorf("not an HTTP answer: %q", line)
	}
	a.status, _ = strconv.Atoi(string(line[9:12]))
	length, keep := -1, true
	for {
		line, err = g.br.ReadSlice('\n')
		if err != nil {
			return a, false, err
		}
		name, value, ok := bytes.Cut(bytes.TrimRight(line, "\r\n"), []byte(":"))
		if !ok {
			break // the empty line ending the headers
		}
		value = bytes.TrimSpace(value)
		switch {
		case bytes.EqualFold(name, []byte("Content-Length")):
			length, _ = strconv.Atoi(string(value))
		case bytes.EqualFold(name, []byte("X-Cache-Status")):
			for _, s := range cacheStatuses {
				if string(value) == s {
					a.cache = s
				}
			}
		case bytes.EqualFold(name, []byte("Connection")):
			keep = !bytes.EqualFold(value, []byte("close"))
		}
	}
	if length < 0 || length > maxResponse {
		return a, false, errUnsupported
	}
	if cap(g.body) < length {
		g.body = make([]byte, length)
	}
	g.body = g.body[:length]
	if _, err := io.ReadFull(g.br, g.body); err != nil {
		return a, false, err
	}
	a.body = g.body
	return a, keep, nil
}
