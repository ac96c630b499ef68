package operator_test

import (
	"strings"
	"testing"

	"flashsale/operator"
)

const (
	alice = "alice-token-0123456789abcdef0123456"
	bob   = "bob-token-0123456789abcdef012345678"
	admin = "admin-token-0123456789abcdef012345"
)

func TestParse(t *testing.T) {
	secrets := map[string][]string{"WEBHOOK_SECRET": {"whsec_old", alice + "x"}, "CUSTOMER_JWT_SECRET": {""}}
	for _, tc := range []struct {
		name, list, admin string
		names             []string // nil: refused
		errHas            []string
	}{
		{name: "none"},
		{name: "admin only", admin: admin, names: []string{"admin"}},
		{name: "named", list: "alice:" + alice + ", bob:" + bob, names: []string{"alice", "bob"}},
		{name: "admin and named", list: "alice:" + alice, admin: admin, names: []string{"admin", "alice"}},
		{name: "trailing comma", list: "alice:" + alice + ",", names: []string{"alice"}},
		{name: "names with dots and dashes", list: "ops.team-1_a:" + alice, names: []string{"ops.team-1_a"}},
		{name: "short token", list: "alice:short", errHas: []string{"OPERATOR_TOKENS", `"alice"`, "at least 32"}},
		{name: "short admin", admin: "short", errHas: []string{"ADMIN_TOKEN", "at least 32"}},
		{name: "no colon", list: alice, errHas: []string{"OPERATOR_TOKENS", "entry 1", "name:token"}},
		{name: "upper-case name", list: "Alice:" + alice, errHas: []string{"a-z"}},
		{name: "empty name", list: ":" + alice, errHas: []string{"a-z"}},
		{name: "long name", list: strings.Repeat("a", 65) + ":" + alice, errHas: []string{"1 to 64"}},
		{name: "duplicate name", list: "alice:" + alice + ",alice:" + bob, errHas: []string{`"alice"`, "twice"}},
		{name: "admin named twice", list: "admin:" + alice, admin: admin, errHas: []string{`"admin"`, "twice"}},
		{name: "shared token", list: "alice:" + alice + ",bob:" + alice, errHas: []string{"same token"}},
		{name: "token with space", list: "alice:" + alice + " x", errHas: []string{"without spaces"}},
		{name: "token is a secret", list: "alice:" + alice + "x", errHas: []string{"WEBHOOK_SECRET"}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			ops, err := operator.Parse(tc.list, tc.admin, secrets)
			if tc.errHas != nil {
				if err == nil {
					t.Fatalf("accepted, want an error naming %q", tc.errHas)
				}
				for _, want := range tc.errHas {
					if !strings.Contains(err.Error(), want) {
						t.Errorf("error %q does not say %q", err, want)
					}
				}
				for _, tok := range []string{alice, bob, admin} {
					if strings.Contains(err.Error(), tok) {
						t.Errorf("error %q quotes a token", err)
					}
				}
				return
			}
			if err != nil {
				t.Fatal(err)
			}
			if got := ops.Names(); strings.Join(got, ",") != strings.Join(tc.names, ",") {
				t.Errorf("names %q, want %q", got, tc.names)
			}
			if ops.Enabled() != (len(tc.names) > 0) {
				t.Errorf("Enabled() = %v", ops.Enabled())
			}
		})
	}
}

func TestLookup(t *testing.T) {
	ops, err := operator.Parse("alice:"+alice+",bob:"+bob, admin, nil)
	if err != nil {
		t.Fatal(err)
	}
	for tok, want := range map[string]string{alice: "alice", bob: "bob", admin: "admin", alice[:len(alice)-1]: "", "": "", alice + "x": ""} {
		if got, ok := ops.Lookup(tok); got != want || ok != (want != "") {
			t.Errorf("Lookup(%q) = %q, %v; want %q", tok, got, ok, want)
		}
	}
	var none *operator.Tokens
	if _, ok := none.Lookup(alice); ok || none.Enabled() {
		t.Error("a nil Tokens knows an operator")
	}
}
