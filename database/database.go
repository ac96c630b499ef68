// Package database opens the store named by DATABASE_URL (MySQL/MariaDB, or
// the embedded SQLite file by default) and brings its schema up to date.
package database

import (
	"cmp"
	"context"
	"database/sql"
	"fmt"
	"log/slog"
	"net"
	"net/url"
	"strings"
	"time"

	"entgo.io/ent/dialect"
	entsql "entgo.io/ent/dialect/sql"
	"github.com/go-sql-driver/mysql"
	_ "modernc.org/sqlite" // registers the pure-Go "sqlite" driver: no cgo needed

	"flashsale/ent"
	"flashsale/migrate"
)

// DefaultURL is the embedded database used when DATABASE_URL is unset.
const DefaultURL = "sqlite://flashsale.db"

// DB is an open database (Migrate brings its schema up to date).
type DB struct {
	SQL *sql.DB // statements outside transactions, and migrations
	// TxSQL holds the sessions of Ent's transactions on MySQL (see
	// txDriver); nil on SQLite, where Ent's transactions use SQL.
	TxSQL   *sql.DB
	Ent     *ent.Client
	Dialect string // dialect.MySQL or dialect.SQLite
	// Where it is, without credentials, for logs.
	Redacted string
}

// Close closes the connection pools.
func (db *DB) Close() error { return db.Ent.Close() }

// Ping reports whether the database answers.
func (db *DB) Ping(ctx context.Context) error { return db.SQL.PingContext(ctx) }

// Options tune the connection pools.
type Options struct {
	// MaxConns is the most open connections of a pool (DB_MAX_CONNS). On
	// MySQL there are two, SQL and TxSQL (see txDriver), so up to twice
	// as many connections.
	MaxConns int
	// IOTimeout bounds each read and write on a MySQL connection (default
	// 30s). The driver's COMMIT does not watch the context, so this is
	// what keeps a commit to a frozen database from hanging a request.
	IOTimeout time.Duration
	// Logger hears about database hosts passed over (nil: silent).
	Logger *slog.Logger
}

// Source is a parsed DATABASE_URL: where the database is and how to
// reach it. Parsing does not connect.
type Source struct {
	Dialect  string // dialect.MySQL or dialect.SQLite
	Redacted string // where it is, without credentials, for logs
	mysql    *mysql.Config
	hosts    []string // MySQL host:port, in the order they are tried
	sqlite   string   // the SQLite driver's DSN
}

// Embedded reports whether the source is the embedded SQLite database, which
// serves one process on this machine, for local trials.
func (s Source) Embedded() bool { return s.Dialect == dialect.SQLite }

// ParseURL checks rawURL (mysql://user:pass@host:3306/db, with several
// hosts mysql://user:pass@h1:3306,h2:3306,h3:3306/db, or
// sqlite://path/to/file.db; empty means DefaultURL). Its errors never
// contain the password.
func ParseURL(rawURL string) (Source, error) {
	if rawURL == "" {
		rawURL = DefaultURL
	}
	scheme, rest, ok := strings.Cut(rawURL, "://")
	if !ok {
		return Source{}, fmt.Errorf("DATABASE_URL: want mysql://user:pass@host:3306/db or sqlite://path/to/file.db")
	}
	switch scheme {
	case "mysql":
		cfg, hosts, err := mysqlConfig(rest)
		if err != nil {
			return Source{}, err
		}
		return Source{Dialect: dialect.MySQL, mysql: cfg, hosts: hosts,
			Redacted: fmt.Sprintf("mysql://%s@%s/%s", cfg.User, strings.Join(hosts, ","), cfg.DBName)}, nil
	case "sqlite":
		path, query, _ := strings.Cut(rest, "?")
		if path == "" {
			return Source{}, fmt.Errorf("DATABASE_URL: sqlite:// needs a file path")
		}
		return Source{Dialect: dialect.SQLite, Redacted: "sqlite://" + path, sqlite: sqliteDSN(path, query)}, nil
	default:
		return Source{}, fmt.Errorf("DATABASE_URL: unsupported scheme %q (want mysql or sqlite)", scheme)
	}
}

// Open connects to rawURL (see ParseURL) and sets up the pool. It does not migrate.
func Open(rawURL string, opts Options) (*DB, error) {
	src, err := ParseURL(rawURL)
	if err != nil {
		return nil, err
	}
	return src.Open(opts)
}

// Open sets up the connection pools. It does not connect or migrate.
func (s Source) Open(opts Options) (*DB, error) {
	var db, txDB *sql.DB
	switch s.Dialect {
	case dialect.MySQL:
		cfg := s.mysql.Clone()
		// readTimeout/writeTimeout in the URL win over IOTimeout.
		io := cmp.Or(opts.IOTimeout, 30*time.Second)
		cfg.ReadTimeout = cmp.Or(cfg.ReadTimeout, io)
		cfg.WriteTimeout = cmp.Or(cfg.WriteTimeout, io)
		conn, err := newHostsConnector(cfg, s.hosts, opts.Logger)
		if err != nil {
			return nil, err
		}
		txCfg := cfg.Clone()
		if txCfg.Params == nil {
			txCfg.Params = map[string]string{}
		}
		txCfg.Params["autocommit"] = "0" // set by the driver as each session opens
		txConn, err := conn.with(txCfg)
		if err != nil {
			return nil, err
		}
		db, txDB = sql.OpenDB(conn), sql.OpenDB(txConn)
	case dialect.SQLite:
		var err error
		if db, err = sql.Open("sqlite", s.sqlite); err != nil {
			return nil, fmt.Errorf("DATABASE_URL: %w", err)
		}
	default:
		return nil, fmt.Errorf("database: source not parsed with ParseURL")
	}
	for _, p := range []*sql.DB{db, txDB} {
		if p == nil {
			continue
		}
		if opts.MaxConns > 0 {
			p.SetMaxOpenConns(opts.MaxConns)
			p.SetMaxIdleConns(opts.MaxConns)
		}
		p.SetConnMaxLifetime(5 * time.Minute)
		p.SetConnMaxIdleTime(time.Minute)
	}
	single := entsql.OpenDB(s.Dialect, db)
	var drv dialect.Driver = single
	if txDB != nil {
		drv = &txDriver{Driver: single, txPool: txDB}
	}
	return &DB{SQL: db, TxSQL: txDB, Ent: ent.NewClient(ent.Driver(drv)), Dialect: s.Dialect, Redacted: s.Redacted}, nil
}

// Migrate applies the pending migrations.
func (db *DB) Migrate(ctx context.Context, log *slog.Logger) error {
	return migrate.Up(ctx, db.SQL, db.Dialect, log)
}

// mysqlConfig turns user:pass@host:port[,host:port...]/db?param=value (a
// mysql:// URL without its scheme) into a driver config and the hosts to
// try. Query parameters are the driver's DSN parameters (tls=true, ...).
func mysqlConfig(rest string) (*mysql.Config, []string, error) {
	// The authority may list several hosts, which net/url does not parse:
	// take it apart first, then parse the URL with the first host.
	authority, tail := rest, ""
	if i := strings.IndexAny(rest, "/?#"); i >= 0 {
		authority, tail = rest[:i], rest[i:]
	}
	userinfo, hostList := "", authority
	if i := strings.LastIndex(authority, "@"); i >= 0 {
		userinfo, hostList = authority[:i+1], authority[i+1:]
	}
	var hosts []string
	for _, h := range strings.Split(hostList, ",") {
		hu, err := url.Parse("mysql://" + h)
		if err != nil || hu.Hostname() == "" || hu.Host != h {
			return nil, nil, fmt.Errorf("DATABASE_URL: %q is not a host or host:port", h)
		}
		if hu.Port() == "" {
			h = net.JoinHostPort(hu.Hostname(), "3306")
		}
		hosts = append(hosts, h)
	}
	u, err := url.Parse("mysql://" + userinfo + hosts[0] + tail)
	if err != nil {
		// url.Parse's message would echo the password.
		return nil, nil, fmt.Errorf("DATABASE_URL: not a valid URL")
	}
	cfg, err := mysql.ParseDSN("/?" + u.RawQuery)
	if err != nil {
		return nil, nil, fmt.Errorf("DATABASE_URL: %w", err)
	}
	// Driver options that open something up are refused rather than obeyed.
	switch {
	case cfg.AllowAllFiles:
		return nil, nil, fmt.Errorf("DATABASE_URL: allowAllFiles lets the database server read any file this process can; remove it")
	case hasParam(cfg.Params, "autocommit"):
		return nil, nil, fmt.Errorf("DATABASE_URL: autocommit is set by the server (its transactions rely on it); remove it")
	case cfg.MultiStatements:
		return nil, nil, fmt.Errorf("DATABASE_URL: multiStatements is not needed here and would turn any SQL injection into arbitrary SQL; remove it")
	case cfg.AllowCleartextPasswords && (cfg.TLSConfig == "" || cfg.TLSConfig == "false" || cfg.TLSConfig == "preferred"):
		return nil, nil, fmt.Errorf("DATABASE_URL: allowCleartextPasswords without tls=true would send the password in the clear; add tls=true")
	}
	cfg.User = u.User.Username()
	cfg.Passwd, _ = u.User.Password()
	cfg.Net = "tcp"
	cfg.Addr = hosts[0]
	cfg.DBName = strings.TrimPrefix(u.Path, "/")
	if cfg.DBName == "" {
		return nil, nil, fmt.Errorf("DATABASE_URL: mysql:// needs a database name, e.g. mysql://root@127.0.0.1:3306/flashsale")
	}
	// Send each query with its arguments in one round trip instead of
	// PREPARE + EXECUTE: safe with the utf8mb4 connection charset, and it
	// halves the round trips of every stock transaction.
	if !strings.Contains(u.RawQuery, "interpolateParams") {
		cfg.InterpolateParams = true
	}
	// Times are stored and read as UTC; the database clock is read with UTC_TIMESTAMP.
	cfg.ParseTime = true
	cfg.Loc = time.UTC
	// Fail fast when the database is away, so callers get UNAVAILABLE
	// instead of hanging; each request also carries its own deadline.
	if cfg.Timeout == 0 {
		cfg.Timeout = 3 * time.Second
	}
	return cfg, hosts, nil
}

// hasParam reports whether params sets name (MySQL variable names ignore case).
func hasParam(params map[string]string, name string) bool {
	for k := range params {
		if strings.EqualFold(k, name) {
			return true
		}
	}
	return false
}

// sqliteDSN opens the file with foreign keys on, WAL for concurrent readers,
// a busy timeout, and BEGIN IMMEDIATE so that a write transaction takes the
// file's write lock at its start rather than failing with SQLITE_BUSY later.
func sqliteDSN(path, query string) string {
	q := url.Values{}
	q.Add("_pragma", "foreign_keys(1)")
	q.Add("_pragma", "busy_timeout(10000)")
	q.Add("_pragma", "journal_mode(WAL)")
	q.Add("_pragma", "synchronous(NORMAL)")
	q.Set("_txlock", "immediate")
	q.Set("_time_format", "sqlite")
	dsn := "file:" + path + "?" + q.Encode()
	if query != "" {
		dsn += "&" + query
	}
	return dsn
}
