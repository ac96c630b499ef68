// Package nginx runs flashsale.conf, the repository's nginx configuration,
// in front of a flash-sale server: for edge_test.go and the load tool's
// edge scenario, which must prove the very file operators deploy. Start
// changes only its listen port, its upstream and its cache directory, and
// wraps it in a main configuration of its own (no daemon, everything in
// one directory, errors to the caller).
package nginx

import (
	"bytes"
	"context"
	_ "embed"
	"errors"
	"fmt"
	"net"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"time"
)

// Conf is deploy/nginx/flashsale.conf.
//
//go:embed flashsale.conf
var Conf string

// FallbackBinary is the nginx used when none is on $PATH (Debian's).
const FallbackBinary = "/usr/sbin/nginx"

// Binary returns the nginx to run: the one on $PATH, else FallbackBinary.
func Binary() (string, error) {
	if p, err := exec.LookPath("nginx"); err == nil {
		return p, nil
	}
	if _, err := os.Stat(FallbackBinary); err != nil {
		return "", fmt.Errorf("nginx is not on $PATH and %s is missing (Debian: apt-get install nginx-light, or bash .ci/nginx.sh)", FallbackBinary)
	}
	return FallbackBinary, nil
}

// The lines of Conf that Rewrite changes; each must be there exactly once.
const (
	confCache    = "proxy_cache_path /var/cache/nginx/flashsale "
	confUpstream = "server 127.0.0.1:8080;"
	confListen   = "listen 80;"
)

// Rewrite returns conf listening on listen (host:port), proxying to
// upstream (host:port) and caching in cacheDir.
func Rewrite(conf, listen, upstream, cacheDir string) (string, error) {
	for _, r := range []struct{ old, new string }{
		{confCache, "proxy_cache_path " + cacheDir + " "},
		{confUpstream, "server " + upstream + ";"},
		{confListen, "listen " + listen + ";"},
	} {
		if n := strings.Count(conf, r.old); n != 1 {
			return "", fmt.Errorf("nginx: flashsale.conf has %q %d times, want once (the tests rewrite that line)", r.old, n)
		}
		conf = strings.Replace(conf, r.old, r.new, 1)
	}
	return conf, nil
}

// Options say what to put nginx in front of, and where it keeps its files.
type Options struct {
	Upstream string // the API, host:port
	Dir      string // an empty directory for the configuration, cache, logs and temporary files
	Workers  int    // worker processes; 0: 1
	// UpstreamLog: write every request nginx sent the API, background
	// refreshes included, to UpstreamLogPath (one line each: the time, the
	// cache status, the status and the URI).
	UpstreamLog bool
}

// Proxy is a running nginx.
type Proxy struct {
	URL  string // http://127.0.0.1:<port>
	Addr string // 127.0.0.1:<port>
	dir  string
	cmd  *exec.Cmd
	done chan struct{} // closed once the process has exited
	out  *syncBuffer   // its stderr: nginx's error log
}

// UpstreamLogPath is where Options.UpstreamLog writes.
func (p *Proxy) UpstreamLogPath() string { return filepath.Join(p.dir, "upstream.log") }

// Log is nginx's error log so far.
func (p *Proxy) Log() string { return p.out.String() }

// Start runs nginx with Conf on a free loopback port and returns once it
// answers GET /healthz from the upstream (which must be up).
func Start(ctx context.Context, o Options) (*Proxy, error) {
	bin, err := Binary()
	if err != nil {
		return nil, err
	}
	port, err := freePort()
	if err != nil {
		return nil, err
	}
	p := &Proxy{Addr: "127.0.0.1:" + strconv.Itoa(port), dir: o.Dir, done: make(chan struct{}), out: &syncBuffer{}}
	p.URL = "http://" + p.Addr
	mainConf, err := p.writeConf(bin, o)
	if err != nil {
		return nil, err
	}
	p.cmd = exec.Command(bin, "-p", o.Dir, "-c", mainConf, "-e", "stderr")
	p.cmd.Stdout, p.cmd.Stderr = p.out, p.out
	if err := p.cmd.Start(); err != nil {
		return nil, fmt.Errorf("nginx: %w", err)
	}
	go func() { _ = p.cmd.Wait(); close(p.done) }()
	if err := p.waitReady(ctx); err != nil {
		p.Stop()
		return nil, err
	}
	return p, nil
}

// writeConf writes flashsale.conf, rewritten, and the main configuration
// that includes it; it returns the main one's path.
func (p *Proxy) writeConf(bin string, o Options) (string, error) {
	site, err := Rewrite(Conf, p.Addr, o.Upstream, filepath.Join(o.Dir, "cache"))
	if err != nil {
		return "", err
	}
	var b strings.Builder
	fmt.Fprintf(&b, "daemon off;\nworker_processes %d;\npid %s;\nerror_log stderr warn;\n", max(o.Workers, 1), filepath.Join(o.Dir, "nginx.pid"))
	if os.Geteuid() == 0 {
		b.WriteString("user root;\n") // the workers must reach the test's private directory
	}
	b.WriteString("events { worker_connections 4096; }\nhttp {\n")
	modules := compiledTempPaths(bin)
	for _, m := range modules {
		dir := filepath.Join(o.Dir, "tmp", m)
		if err := os.MkdirAll(dir, 0o700); err != nil {
			return "", err
		}
		fmt.Fprintf(&b, "    %s_temp_path %s;\n", m, dir)
	}
	if o.UpstreamLog {
		// Only requests that reached the API have an $upstream_addr; a
		// background refresh is a subrequest.
		fmt.Fprintf(&b, "    log_format upstream '$msec $upstream_cache_status $upstream_status $request_uri';\n"+
			"    log_subrequest on;\n    access_log %s upstream if=$upstream_addr;\n", p.UpstreamLogPath())
	} else {
		b.WriteString("    access_log off;\n")
	}
	fmt.Fprintf(&b, "    include %s;\n}\n", filepath.Join(o.Dir, "flashsale.conf"))
	if err := os.WriteFile(filepath.Join(o.Dir, "flashsale.conf"), []byte(site), 0o600); err != nil {
		return "", err
	}
	main := filepath.Join(o.Dir, "nginx.conf")
	return main, os.WriteFile(main, []byte(b.String()), 0o600)
}

// compiledTempPaths lists the modules with a temporary directory that bin
// was built with: their paths are set into the run's directory, not the
// system's.
func compiledTempPaths(bin string) []string {
	out, _ := exec.Command(bin, "-V").CombinedOutput()
	var mods []string
	for _, m := range []string{"client_body", "proxy", "fastcgi", "uwsgi", "scgi"} {
		if !bytes.Contains(out, []byte("--without-http_"+m+"_module")) {
			mods = append(mods, m)
		}
	}
	return mods
}

// waitReady waits until nginx answers /healthz with 200 from the upstream,
// or fails with nginx's log when it exits or takes too long.
func (p *Proxy) waitReady(ctx context.Context) error {
	ctx, cancel := context.WithTimeout(ctx, 30*time.Second)
	defer cancel()
	client := &http.Client{Timeout: 2 * time.Second}
	for {
		resp, err := client.Get(p.URL + "/healthz")
		if err == nil {
			resp.Body.Close()
			if resp.StatusCode == http.StatusOK {
				return nil
			}
			err = fmt.Errorf("GET /healthz through nginx: %s", resp.Status)
		}
		select {
		case <-p.done:
			return fmt.Errorf("nginx exited at start: %s", strings.TrimSpace(p.Log()))
		case <-ctx.Done():
			return fmt.Errorf("nginx not ready: %w; its log: %s", errors.Join(err, ctx.Err()), strings.TrimSpace(p.Log()))
		case <-time.After(20 * time.Millisecond):
		}
	}
}

// Stop ends nginx (SIGTERM: a fast shutdown) and waits for it; it may be
// called more than once.
func (p *Proxy) Stop() {
	select {
	case <-p.done:
		return
	default:
	}
	_ = p.cmd.Process.Signal(syscall.SIGTERM)
	select {
	case <-p.done:
	case <-time.After(10 * time.Second):
		_ = p.cmd.Process.Kill()
		<-p.done
	}
}

func freePort() (int, error) {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		return 0, err
	}
	defer ln.Close()
	return ln.Addr().(*net.TCPAddr).Port, nil
}

// syncBuffer collects nginx's output, read while it runs.
type syncBuffer struct {
	mu  sync.Mutex
	buf bytes.Buffer
}

func (s *syncBuffer) Write(p []byte) (int, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.buf.Write(p)
}

func (s *syncBuffer) String() string {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.buf.String()
}
