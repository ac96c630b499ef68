package testnats_test

import (
	"net"
	"net/url"
	"os"
	"testing"
	"time"

	"flashsale/internal/testnats"
)

func dial(t *testing.T, rawURL string) error {
	t.Helper()
	u, err := url.Parse(rawURL)
	if err != nil {
		t.Fatalf("URL %q: %v", rawURL, err)
	}
	c, err := net.DialTimeout("tcp", u.Host, 10*time.Second)
	if err == nil {
		c.Close()
	}
	return err
}

func TestStartStopRestart(t *testing.T) {
	s := testnats.Start(t)
	url := s.URL()
	if err := dial(t, url); err != nil {
		t.Fatalf("started server refuses connections: %v", err)
	}

	s.Stop()
	if err := dial(t, url); err == nil {
		t.Fatal("stopped server still accepts connections")
	}
	s.Stop() // stopping twice is harmless

	s.Restart()
	if s.URL() != url {
		t.Fatalf("URL changed across restart: %s, then %s", url, s.URL())
	}
	if err := dial(t, url); err != nil {
		t.Fatalf("restarted server refuses connections: %v", err)
	}
}

func TestBinary(t *testing.T) {
	bin, err := testnats.Binary()
	if err != nil {
		if os.Getenv("CI") != "" {
			t.Fatal(err)
		}
		t.Skip(err)
	}
	if bin == "" {
		t.Fatal("Binary returned an empty path without an error")
	}
}
