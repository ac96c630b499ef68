package cluster

import (
	"context"
	"database/sql"
	"fmt"
	"io"
	"os"
	"os/exec"
	"os/user"
	"path/filepath"
	"regexp"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"

	"flashsale/internal/testkit"
)

// galeraProvider is the Galera library (Debian package galera-4).
const galeraProvider = "/usr/lib/galera/libgalera_smm.so"

// galeraNode is one node of a Galera cluster of the test's own: a mariadbd
// with its own data directory and four loopback ports (SQL, and Galera's
// replication, IST and SST).
type galeraNode struct {
	*mariaDB
	idx             int
	gcomm, ist, sst int
}

func (n *galeraNode) String() string { return fmt.Sprintf("node %d (127.0.0.1:%d)", n.idx, n.port) }

// galera is the cluster.
type galera struct {
	nodes  []*galeraNode
	formed time.Duration // from the first start to every node Synced
}

// galeraPrereqs fails the test, or outside CI skips it, when the Galera
// provider is missing; it fails it when what SST needs is missing.
func galeraPrereqs(t *testing.T) {
	t.Helper()
	if _, err := os.Stat(galeraProvider); err != nil {
		if os.Getenv("CI") == "" {
			t.Skipf("skipped: no Galera provider (%v); install the Debian packages galera-4 and rsync to run it (in CI, with CI set, this fails instead)", err)
		}
		t.Fatalf("no Galera provider (%v): CI must install the Debian packages galera-4 and rsync (.ci/run does)", err)
	}
	for _, tool := range []string{"rsync", "wsrep_sst_rsync"} {
		if _, err := exec.LookPath(tool); err != nil {
			t.Fatalf("the Galera test needs %s in PATH for its state transfers (SST): install rsync and mariadb-server: %v", tool, err)
		}
	}
}

// galeraUser is the user the nodes run as: when the test runs as root,
// mysql (as in a packaged install). Run as root, the rsync daemon that
// receives a state transfer drops to the user nobody, which cannot write
// the data directory, so a node as root cannot join.
func galeraUser(t *testing.T) *syscall.Credential {
	t.Helper()
	if os.Geteuid() != 0 {
		return nil
	}
	u, err := user.Lookup("mysql")
	if err != nil {
		t.Fatalf("run as root, the Galera nodes run as the user mysql (rsync's SST daemon started by root would drop to nobody): %v; the mariadb-server package creates it", err)
	}
	uid, err1 := strconv.ParseUint(u.Uid, 10, 32)
	gid, err2 := strconv.ParseUint(u.Gid, 10, 32)
	if err1 != nil || err2 != nil {
		t.Fatalf("user mysql: uid %q gid %q", u.Uid, u.Gid)
	}
	return &syscall.Credential{Uid: uint32(uid), Gid: uint32(gid)}
}

// startGalera starts a 3-node cluster: node 0 initialised with
// mariadb-install-db and bootstrapping the cluster, nodes 1 and 2 joining
// it with empty data directories (a state transfer by rsync fills them).
// It returns when every node is Synced in a cluster of 3, with the database
// flashsale created. The nodes are killed when the test ends.
func startGalera(t *testing.T, size int) *galera {
	t.Helper()
	installDB := findBin(t, "mariadb-install-db", "/usr/bin/mariadb-install-db")
	bin := findBin(t, "mariadbd", "/usr/sbin/mariadbd")
	cred := galeraUser(t)
	// A short path: the sockets' must fit in 107 bytes. The nodes' user
	// must be able to reach it.
	dir, err := os.MkdirTemp("", "fsgal")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { os.RemoveAll(dir) })
	if err := os.Chmod(dir, 0o755); err != nil {
		t.Fatal(err)
	}
	logs := logDir(t)

	g := &galera{}
	var peers []string
	for i := range size {
		n := &galeraNode{idx: i, mariaDB: &mariaDB{bin: bin, port: testkit.FreePort(t), runAs: cred},
			gcomm: testkit.FreePort(t), ist: testkit.FreePort(t), sst: testkit.FreePort(t)}
		home := filepath.Join(dir, strconv.Itoa(i))
		n.data, n.sock = filepath.Join(home, "data"), filepath.Join(home, "sock")
		n.logPath = filepath.Join(logs, fmt.Sprintf("galera-node%d.log", i))
		for _, d := range []string{home, n.data} {
			if err := os.Mkdir(d, 0o750); err != nil {
				t.Fatal(err)
			}
			if cred != nil {
				if err := os.Chown(d, int(cred.Uid), int(cred.Gid)); err != nil {
					t.Fatal(err)
				}
			}
		}
		g.nodes = append(g.nodes, n)
		peers = append(peers, fmt.Sprintf("127.0.0.1:%d", n.gcomm))
	}
	for _, n := range g.nodes {
		n.extra = []string{
			"--wsrep_on=ON",
			"--wsrep_provider=" + galeraProvider,
			"--wsrep_cluster_name=flashsale-test",
			"--wsrep_cluster_address=gcomm://" + strings.Join(peers, ","),
			fmt.Sprintf("--wsrep_node_address=127.0.0.1:%d", n.gcomm),
			fmt.Sprintf("--wsrep_node_name=node%d", n.idx),
			fmt.Sprintf("--wsrep_provider_options=gmcast.listen_addr=tcp://127.0.0.1:%d;ist.recv_addr=127.0.0.1:%d;gcache.size=128M", n.gcomm, n.ist),
			"--wsrep_sst_method=rsync",
			fmt.Sprintf("--wsrep_sst_receive_address=127.0.0.1:%d", n.sst),
			"--binlog_format=ROW",
			"--innodb_autoinc_lock_mode=2",
			"--default_storage_engine=InnoDB",
			// A smaller redo log than the default 96M: less for each SST to copy.
			"--innodb-log-file-size=32M",
		}
	}

	start := time.Now()
	first := g.nodes[0]
	// mariadb-install-db wants to make the data directory itself.
	if err := os.Remove(first.data); err != nil {
		t.Fatal(err)
	}
	if err := first.install(installDB); err != nil {
		t.Fatal(err)
	}
	for _, n := range g.nodes {
		more := []string(nil)
		if n == first {
			more = []string{"--wsrep-new-cluster"}
		}
		if err := n.start(more...); err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() {
			n.current().kill() // no-op when it has exited
			if t.Failed() {
				t.Logf("%s log (tail):\n%s", n, tail(n.logPath, 30))
			}
		})
		if n == first {
			// The others join the cluster it forms.
			if err := n.waitReady(60 * time.Second); err != nil {
				t.Fatal(err)
			}
		}
	}
	for _, n := range g.nodes {
		if err := n.waitSynced(size, 2*time.Minute); err != nil {
			t.Fatal(err)
		}
	}
	g.formed = time.Since(start)

	admin, err := sql.Open("mysql", first.dsn(""))
	if err != nil {
		t.Fatal(err)
	}
	defer admin.Close()
	if _, err := admin.Exec("CREATE DATABASE flashsale"); err != nil {
		t.Fatal(err)
	}
	return g
}

// status reads global status variables of the node.
func (n *galeraNode) status(names ...string) (map[string]string, error) {
	db, err := sql.Open("mysql", n.dsn(""))
	if err != nil {
		return nil, err
	}
	defer db.Close()
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Second)
	defer cancel()
	q := "SELECT VARIABLE_NAME, VARIABLE_VALUE FROM information_schema.GLOBAL_STATUS WHERE VARIABLE_NAME IN ('" +
		strings.Join(names, "','") + "')"
	rows, err := db.QueryContext(ctx, q)
	if err != nil {
		return nil, err
	}
	defer rows.Close()
	out := map[string]string{}
	for rows.Next() {
		var k, v string
		if err := rows.Scan(&k, &v); err != nil {
			return nil, err
		}
		out[strings.ToLower(k)] = v
	}
	return out, rows.Err()
}

// waitSynced waits until the node is Synced and ready in a cluster of size.
func (n *galeraNode) waitSynced(size int, timeout time.Duration) error {
	p := n.current()
	deadline := time.Now().Add(timeout)
	var last string
	for {
		st, err := n.status("wsrep_cluster_size", "wsrep_local_state_comment", "wsrep_ready")
		if err == nil {
			if st["wsrep_cluster_size"] == strconv.Itoa(size) && st["wsrep_local_state_comment"] == "Synced" && st["wsrep_ready"] == "ON" {
				return nil
			}
			last = fmt.Sprintf("cluster size %s, state %s, ready %s", st["wsrep_cluster_size"], st["wsrep_local_state_comment"], st["wsrep_ready"])
		} else {
			last = err.Error()
		}
		if !p.running() {
			return fmt.Errorf("%s exited (%v) before it was Synced; log:\n%s", n, p.err, tail(n.logPath, 40))
		}
		if time.Now().After(deadline) {
			return fmt.Errorf("%s not Synced in a cluster of %d after %s (%s); log:\n%s", n, size, timeout, last, tail(n.logPath, 40))
		}
		time.Sleep(100 * time.Millisecond)
	}
}

// logSize is how long the node's log is now, to read what comes after.
func (n *galeraNode) logSize() int64 {
	fi, err := os.Stat(n.logPath)
	if err != nil {
		return 0
	}
	return fi.Size()
}

// logSince returns the node's log from offset on.
func (n *galeraNode) logSince(offset int64) string {
	f, err := os.Open(n.logPath)
	if err != nil {
		return ""
	}
	defer f.Close()
	if _, err := f.Seek(offset, io.SeekStart); err != nil {
		return ""
	}
	b, _ := io.ReadAll(f)
	return string(b)
}

var recoveredPosition = regexp.MustCompile(`WSREP: Recovered position: ([0-9a-f-]+:-?[0-9]+)`)

// recoverPosition runs mariadbd --wsrep-recover on the node's data
// directory, as the packaged service does before starting a node that
// crashed: InnoDB recovers and reports the last transaction it committed,
// so the node can ask for the missing ones (IST) instead of a full copy
// (SST). It returns that position ("" if none was found).
func (n *galeraNode) recoverPosition() (string, error) {
	from := n.logSize()
	p, err := startProcAttr(n.bin, n.args("--wsrep-recover"), os.Environ(), n.logPath, sysProcAttrAs(n.runAs))
	if err != nil {
		return "", fmt.Errorf("mariadbd --wsrep-recover: %w", err)
	}
	select {
	case <-p.done:
	case <-time.After(time.Minute):
		p.kill()
		return "", fmt.Errorf("mariadbd --wsrep-recover still running after a minute")
	}
	m := recoveredPosition.FindAllStringSubmatch(n.logSince(from), -1)
	if len(m) == 0 || strings.HasSuffix(m[len(m)-1][1], ":-1") {
		return "", nil
	}
	return m[len(m)-1][1], nil
}

var istWritesets = regexp.MustCompile(`Receiving IST: ([0-9]+) writesets`)

// transfer says how the node caught up in its log from offset on: by IST
// (the write sets it missed, from a donor's gcache) or by SST (a full copy
// of a donor's data directory, during which that donor is blocked).
func (n *galeraNode) transfer(offset int64) string {
	log := n.logSince(offset)
	switch {
	case strings.Contains(log, "rsync SST completed"):
		return "SST (a full rsync copy from a donor)"
	case istWritesets.MatchString(log):
		return fmt.Sprintf("IST (%s write sets from a donor's gcache)", istWritesets.FindStringSubmatch(log)[1])
	}
	return "unknown (neither IST nor SST in its log)"
}
