package nginx

import (
	"strings"
	"testing"
)

// TestRewrite: the tests run flashsale.conf with three lines changed, and
// refuse a configuration where one of them is missing or doubled rather
// than test something else than what operators deploy.
func TestRewrite(t *testing.T) {
	got, err := Rewrite(Conf, "127.0.0.1:1234", "127.0.0.1:5678", "/tmp/c")
	if err != nil {
		t.Fatal(err)
	}
	for _, want := range []string{"listen 127.0.0.1:1234;", "server 127.0.0.1:5678;", "proxy_cache_path /tmp/c levels="} {
		if !strings.Contains(got, want) {
			t.Errorf("the rewritten configuration lacks %q", want)
		}
	}
	if strings.Count(got, "\n") != strings.Count(Conf, "\n") {
		t.Error("the rewrite added or removed lines")
	}
	for _, broken := range []string{
		strings.Replace(Conf, confListen, "listen 8080;", 1),
		strings.Replace(Conf, confUpstream, confUpstream+"\n    "+confUpstream, 1),
	} {
		if _, err := Rewrite(broken, "a:1", "b:2", "/c"); err == nil {
			t.Error("a configuration without exactly one of each rewritten line was accepted")
		}
	}
}
