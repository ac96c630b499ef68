// Package version says which build of the server is running, from what the
// Go toolchain records in every binary (debug.ReadBuildInfo): the module
// version, the VCS revision and its time, whether the tree had uncommitted
// changes, and the Go version. It backs `flashsale -version` and the
// flashsale_build_info metric.
package version

import (
	"fmt"
	"runtime/debug"
)

// Info describes the running build.
type Info struct {
	Version   string // module version: a tag, a pseudo-version, or "(devel)"
	Revision  string // VCS commit, "" when unknown (go run, a build outside git)
	Time      string // the commit's time, RFC 3339
	Modified  bool   // the tree had uncommitted changes
	GoVersion string
}

// Get returns the running build's Info.
func Get() Info {
	bi, ok := debug.ReadBuildInfo()
	if !ok {
		return Info{Version: "unknown"}
	}
	info := Info{Version: bi.Main.Version, GoVersion: bi.GoVersion}
	for _, s := range bi.Settings {
		switch s.Key {
		case "vcs.revision":
			info.Revision = s.Value
		case "vcs.time":
			info.Time = s.Value
		case "vcs.modified":
			info.Modified = s.Value == "true"
		}
	}
	return info
}

// String is one line for humans and logs, e.g.
// "flashsale (devel) 337bf49ab1c2 2026-12-01T10:00:00Z (modified) go1.26.8".
func (i Info) String() string {
	s := "flashsale " + i.Version
	if i.Revision != "" {
		s += " " + short(i.Revision) + " " + i.Time
	}
	if i.Modified {
		s += " (modified)"
	}
	return fmt.Sprintf("%s %s", s, i.GoVersion)
}

// ShortRevision is the revision's first 12 characters ("" when unknown).
func (i Info) ShortRevision() string { return short(i.Revision) }

func short(rev string) string {
	if len(rev) > 12 {
		return rev[:12]
	}
	return rev
}
