package cluster

import (
	"bytes"
	"context"
	"database/sql"
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
	"testing"
	"time"

	"github.com/go-sql-driver/mysql"

	"flashsale/internal/testkit"
)

// proc is one child process whose stdout and stderr go to a log file.
type proc struct {
	cmd  *exec.Cmd
	done chan struct{} // closed when it has exited
	err  error         // its exit status, once done
}

func startProc(bin string, args, env []string, logPath string) (*proc, error) {
	return startProcAttr(bin, args, env, logPath, sysProcAttr())
}

// startProcAttr is startProc with the child's attributes given (a Galera
// node runs as another user).
func startProcAttr(bin string, args, env []string, logPath string, attr *syscall.SysProcAttr) (*proc, error) {
	f, err := os.OpenFile(logPath, os.O_CREATE|os.O_WRONLY|os.O_APPEND, 0o644)
	if err != nil {
		return nil, err
	}
	cmd := exec.Command(bin, args...)
	cmd.Env = env
	cmd.Stdout, cmd.Stderr = f, f
	cmd.SysProcAttr = attr // dies with the test binary, whatever happens to it
	if err := cmd.Start(); err != nil {
		f.Close()
		return nil, err
	}
	p := &proc{cmd: cmd, done: make(chan struct{})}
	go func() {
		p.err = cmd.Wait()
		f.Close()
		close(p.done)
	}()
	return p, nil
}

func (p *proc) running() bool {
	select {
	case <-p.done:
		return false
	default:
		return true
	}
}

// kill sends SIGKILL (a crash: no cleanup of any kind) and waits for the exit.
func (p *proc) kill() {
	_ = p.cmd.Process.Kill()
	<-p.done
}

// stop sends SIGTERM and waits up to timeout for the exit (then kills).
// It returns the exit error, or an error saying it had to kill.
func (p *proc) stop(timeout time.Duration) error {
	if !p.running() {
		return p.err
	}
	_ = p.cmd.Process.Signal(syscall.SIGTERM)
	select {
	case <-p.done:
		return p.err
	case <-time.After(timeout):
		p.kill()
		return fmt.Errorf("did not exit within %s of SIGTERM; killed", timeout)
	}
}

// tail returns the last n lines of a log file.
func tail(path string, n int) string {
	b, err := os.ReadFile(path)
	if err != nil {
		return fmt.Sprintf("(%v)", err)
	}
	lines := strings.Split(strings.TrimRight(string(b), "\n"), "\n")
	if len(lines) > n {
		lines = lines[len(lines)-n:]
	}
	return strings.Join(lines, "\n")
}

// logDir is where the processes' logs go: CLUSTER_LOG_DIR when set (kept
// after the test, for a post-mortem), else a temporary directory.
func logDir(t *testing.T) string {
	if d := os.Getenv("CLUSTER_LOG_DIR"); d != "" {
		if err := os.MkdirAll(d, 0o755); err != nil {
			t.Fatal(err)
		}
		return d
	}
	return t.TempDir()
}

// panics returns the lines of a server log that report a panic (net/http
// recovers a handler's panic, logs it and drops the connection).
func panics(path string) []string {
	b, _ := os.ReadFile(path)
	var out []string
	for _, line := range strings.Split(string(b), "\n") {
		if strings.Contains(line, "panic") {
			out = append(out, line)
		}
	}
	return out
}

// dataRace returns the first race detector report in a log, if any.
func dataRace(path string) string {
	b, _ := os.ReadFile(path)
	_, report, found := strings.Cut(string(b), "WARNING: DATA RACE")
	if !found {
		return ""
	}
	report, _, _ = strings.Cut(report, "==================")
	return "WARNING: DATA RACE" + report
}

// findBin looks name up in PATH, then at the Debian location.
func findBin(t *testing.T, name, fallback string) string {
	t.Helper()
	if p, err := exec.LookPath(name); err == nil {
		return p
	}
	if _, err := os.Stat(fallback); err == nil {
		return fallback
	}
	t.Fatalf("the cluster test needs MariaDB's %s (not in PATH, not at %s): install mariadb-server", name, fallback)
	return ""
}

// mariaDB is a MariaDB server of the test's own: its own data directory,
// socket and port, so crashing it harms nothing else.
type mariaDB struct {
	bin, data, sock, logPath string
	port                     int
	// runAs: the user mariadbd runs as (nil: this process's, or root's
	// --user=root when that is root); extra: more options (Galera's).
	runAs *syscall.Credential
	extra []string

	mu   sync.Mutex
	proc *proc
}

// startMariaDB initialises a data directory, starts mariadbd on a free
// loopback port and creates the database flashsale. It is killed when the
// test ends.
func startMariaDB(t *testing.T) *mariaDB {
	t.Helper()
	installDB := findBin(t, "mariadb-install-db", "/usr/bin/mariadb-install-db")
	m := &mariaDB{bin: findBin(t, "mariadbd", "/usr/sbin/mariadbd"), port: testkit.FreePort(t)}
	// A short path: the socket's must fit in 107 bytes.
	dir, err := os.MkdirTemp("", "fsdb")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { os.RemoveAll(dir) })
	m.data, m.sock, m.logPath = filepath.Join(dir, "data"), filepath.Join(dir, "sock"), filepath.Join(logDir(t), "mariadb.log")
	if err := m.install(installDB); err != nil {
		t.Fatal(err)
	}
	if err := m.start(); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		m.mu.Lock()
		defer m.mu.Unlock()
		m.proc.kill()
		if t.Failed() {
			t.Logf("MariaDB log (tail):\n%s", tail(m.logPath, 30))
		}
	})
	if err := m.waitReady(60 * time.Second); err != nil {
		t.Fatal(err)
	}
	admin, err := sql.Open("mysql", m.dsn(""))
	if err != nil {
		t.Fatal(err)
	}
	defer admin.Close()
	if _, err := admin.Exec("CREATE DATABASE flashsale"); err != nil {
		t.Fatal(err)
	}
	return m
}

// install initialises the data directory with mariadb-install-db, as the
// user mariadbd will run as.
func (m *mariaDB) install(installDB string) error {
	args := []string{"--no-defaults", "--datadir=" + m.data, "--auth-root-authentication-method=normal", "--skip-test-db"}
	cmd := exec.Command(installDB, args...)
	switch {
	case m.runAs != nil:
		cmd.SysProcAttr = &syscall.SysProcAttr{Credential: m.runAs}
	case os.Geteuid() == 0:
		cmd.Args = append(cmd.Args, "--user=root")
	}
	if out, err := cmd.CombinedOutput(); err != nil {
		return fmt.Errorf("mariadb-install-db: %v\n%s", err, out)
	}
	return nil
}

// args are mariadbd's options: its own data directory, socket and port,
// then m.extra and more.
func (m *mariaDB) args(more ...string) []string {
	args := []string{
		"--no-defaults",
		"--datadir=" + m.data,
		"--socket=" + m.sock,
		"--pid-file=" + m.data + "/mariadbd.pid",
		"--port=" + strconv.Itoa(m.port),
		"--bind-address=127.0.0.1",
		"--skip-name-resolve",
		"--innodb-buffer-pool-size=64M",
		"--max-connections=200",
	}
	if m.runAs == nil && os.Geteuid() == 0 {
		args = append(args, "--user=root")
	}
	args = append(args, m.extra...)
	return append(args, more...)
}

// start starts mariadbd on the data directory (after a crash, InnoDB
// recovers it first), with more options for this start only.
func (m *mariaDB) start(more ...string) error {
	p, err := startProcAttr(m.bin, m.args(more...), os.Environ(), m.logPath, sysProcAttrAs(m.runAs))
	if err != nil {
		return fmt.Errorf("start mariadbd: %w", err)
	}
	m.mu.Lock()
	m.proc = p
	m.mu.Unlock()
	return nil
}

func (m *mariaDB) current() *proc {
	m.mu.Lock()
	defer m.mu.Unlock()
	return m.proc
}

// waitReady waits until mariadbd accepts connections and answers a ping.
func (m *mariaDB) waitReady(timeout time.Duration) error {
	db, err := sql.Open("mysql", m.dsn(""))
	if err != nil {
		return err
	}
	defer db.Close()
	db.SetMaxIdleConns(0)
	p := m.current()
	deadline := time.Now().Add(timeout)
	for {
		ctx, cancel := context.WithTimeout(context.Background(), time.Second)
		err = db.PingContext(ctx)
		cancel()
		if err == nil {
			return nil
		}
		if !p.running() {
			return fmt.Errorf("mariadbd exited (%v); log:\n%s", p.err, tail(m.logPath, 30))
		}
		if time.Now().After(deadline) {
			return fmt.Errorf("mariadbd not accepting connections after %s: %v; log:\n%s", timeout, err, tail(m.logPath, 30))
		}
		time.Sleep(50 * time.Millisecond)
	}
}

// dsn is a go-sql-driver DSN for root on database db ("" for none).
func (m *mariaDB) dsn(db string) string {
	cfg := mysql.NewConfig()
	cfg.User, cfg.Net, cfg.Addr, cfg.DBName = "root", "tcp", net.JoinHostPort("127.0.0.1", strconv.Itoa(m.port)), db
	cfg.Timeout = time.Second
	return cfg.FormatDSN()
}

// url is the DATABASE_URL of the flashsale database.
func (m *mariaDB) url() string { return fmt.Sprintf("mysql://root@127.0.0.1:%d/flashsale", m.port) }

// buildServer builds the server binary once, from the module root; with the
// race detector when the test itself runs under -race (CI's `go test -race`).
func buildServer(t *testing.T) string {
	t.Helper()
	out := filepath.Join(t.TempDir(), "flashsale")
	took, err := buildBinary(out)
	if err != nil {
		t.Fatal(err)
	}
	t.Logf("built the server (race detector %v) in %s", raceEnabled, took.Round(time.Millisecond))
	return out
}

// buildBinary builds the server into out and says how long that took. It
// does not touch t, so it may run beside other work.
func buildBinary(out string) (time.Duration, error) {
	goBin, err := exec.LookPath("go")
	if err != nil {
		return 0, fmt.Errorf("the cluster test builds the server and needs the go command: %v", err)
	}
	gomod, err := exec.Command(goBin, "env", "GOMOD").Output()
	if err != nil || len(bytes.TrimSpace(gomod)) == 0 {
		return 0, fmt.Errorf("go env GOMOD: %v %s", err, gomod)
	}
	args := []string{"build", "-o", out}
	if raceEnabled {
		args = append(args, "-race")
	}
	cmd := exec.Command(goBin, append(args, ".")...)
	cmd.Dir = filepath.Dir(string(bytes.TrimSpace(gomod)))
	start := time.Now()
	if b, err := cmd.CombinedOutput(); err != nil {
		return 0, fmt.Errorf("go %s: %v\n%s", strings.Join(args, " "), err, b)
	}
	return time.Since(start), nil
}

// server is one process of the real server binary on a fixed port; it may
// be killed and started again on that port.
type server struct {
	idx     int
	url     string
	bin     string
	env     []string
	logPath string

	mu   sync.Mutex
	proc *proc
}

// startServer starts server idx with the given settings on a free port. It
// does not wait for readiness. When the test ends it is stopped with SIGTERM
// (killed if that does not work); stopAll reports how that went.
func startServer(t *testing.T, bin string, idx int, settings map[string]string) *server {
	t.Helper()
	return startServerLog(t, bin, idx, settings, fmt.Sprintf("server%d.log", idx))
}

// startServerLog is startServer with the name of its log file.
func startServerLog(t *testing.T, bin string, idx int, settings map[string]string, logName string) *server {
	t.Helper()
	port := testkit.FreePort(t)
	s := &server{idx: idx, url: fmt.Sprintf("http://127.0.0.1:%d", port), bin: bin,
		logPath: filepath.Join(logDir(t), logName)}
	s.env = append(os.Environ(), "PORT="+strconv.Itoa(port), "GORACE=halt_on_error=0")
	for k, v := range settings {
		s.env = append(s.env, k+"="+v)
	}
	if err := s.start(); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		s.current().kill() // no-op when already stopped
		if t.Failed() {
			t.Logf("server %d log (tail):\n%s", idx, tail(s.logPath, 25))
		}
	})
	return s
}

func (s *server) start() error {
	p, err := startProc(s.bin, nil, s.env, s.logPath)
	if err != nil {
		return fmt.Errorf("start server %d: %w", s.idx, err)
	}
	s.mu.Lock()
	s.proc = p
	s.mu.Unlock()
	return nil
}

func (s *server) current() *proc {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.proc
}

// waitReady waits until GET /readyz answers 200.
func (s *server) waitReady(timeout time.Duration) error {
	p := s.current()
	c := &http.Client{Timeout: time.Second}
	deadline := time.Now().Add(timeout)
	for {
		resp, err := c.Get(s.url + "/readyz")
		if err == nil {
			resp.Body.Close()
			if resp.StatusCode == http.StatusOK {
				return nil
			}
			err = errors.New(resp.Status)
		}
		if !p.running() {
			return fmt.Errorf("server %d exited during start (%v); log:\n%s", s.idx, p.err, tail(s.logPath, 25))
		}
		if time.Now().After(deadline) {
			return fmt.Errorf("server %d not ready after %s: %v; log:\n%s", s.idx, timeout, err, tail(s.logPath, 25))
		}
		time.Sleep(50 * time.Millisecond)
	}
}
