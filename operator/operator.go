// Package operator owns the operators' names and bearer tokens: parsing
// OPERATOR_TOKENS ("name:token,…") and ADMIN_TOKEN (the operator named
// "admin"), the rules a token must meet, and finding the operator a bearer
// token belongs to without leaking which token, or how much of one, matched.
//
// Several tokens at once are what lets a token be rotated without downtime:
// add the new one, move the operator's tools over, drop the old one.
package operator

import (
	"crypto/sha256"
	"crypto/subtle"
	"errors"
	"fmt"
	"strings"
	"unicode"
	"unicode/utf8"
)

// Admin is the name ADMIN_TOKEN's operator goes by.
const Admin = "admin"

// MinTokenLen is the fewest characters an operator token may have.
const MinTokenLen = 32

// HowToMakeToken is the advice every token error ends with.
const HowToMakeToken = "make one with: openssl rand -base64 32"

// Tokens are the configured operators. The zero value (and nil) has none:
// operator fields are then disabled.
type Tokens struct {
	names  []string
	hashes [][sha256.Size]byte
}

// Parse reads OPERATOR_TOKENS (list) and ADMIN_TOKEN (admin). secrets are
// values no token may equal (the payment provider, the event receiver and
// the shop's login system know them: none of them is an operator), by the
// name of their variable. Errors name the variable, never quote a token.
func Parse(list, admin string, secrets map[string][]string) (*Tokens, error) {
	t := &Tokens{}
	var errs []error
	seenTok := map[string]string{}
	add := func(variable, name, tok string) {
		if err := check(variable, name, tok, secrets); err != nil {
			errs = append(errs, err)
			return
		}
		if other, dup := seenTok[tok]; dup {
			errs = append(errs, fmt.Errorf("%s: the operators %q and %q have the same token; each needs its own", variable, other, name))
			return
		}
		if t.has(name) {
			errs = append(errs, fmt.Errorf("%s: the operator name %q is given twice (ADMIN_TOKEN is the operator %q)", variable, name, Admin))
			return
		}
		seenTok[tok] = name
		t.names = append(t.names, name)
		t.hashes = append(t.hashes, sha256.Sum256([]byte(tok)))
	}
	if admin != "" {
		add("ADMIN_TOKEN", Admin, admin)
	}
	for i, pair := range strings.Split(list, ",") {
		pair = strings.TrimSpace(pair)
		if pair == "" {
			continue
		}
		name, tok, ok := strings.Cut(pair, ":")
		if !ok {
			errs = append(errs, fmt.Errorf("OPERATOR_TOKENS: entry %d is not name:token", i+1))
			continue
		}
		add("OPERATOR_TOKENS", name, tok)
	}
	if err := errors.Join(errs...); err != nil {
		return nil, err
	}
	return t, nil
}

// check applies the contract's rules to one operator.
func check(variable, name, tok string, secrets map[string][]string) error {
	if !validName(name) {
		return fmt.Errorf("%s: operator name %q: want 1 to 64 of a-z, 0-9, _ . -", variable, name)
	}
	who := fmt.Sprintf("%s: the token of operator %q", variable, name)
	if n := utf8.RuneCountInString(tok); n < MinTokenLen {
		return fmt.Errorf("%s is %d characters, want at least %d random ones; %s", who, n, MinTokenLen, HowToMakeToken)
	}
	if strings.ContainsFunc(tok, func(r rune) bool {
		return unicode.IsSpace(r) || unicode.IsControl(r) || r > unicode.MaxASCII || r == ','
	}) {
		// Such a token cannot be sent intact in an HTTP header (or listed).
		return fmt.Errorf("%s must be printable ASCII without spaces or commas; %s", who, HowToMakeToken)
	}
	for variable, values := range secrets {
		for _, s := range values {
			if s != "" && s == tok {
				return fmt.Errorf("%s must not be the same as %s; %s", who, variable, HowToMakeToken)
			}
		}
	}
	return nil
}

func validName(n string) bool {
	if n == "" || len(n) > 64 {
		return false
	}
	for _, r := range n {
		if !(r >= 'a' && r <= 'z' || r >= '0' && r <= '9' || r == '_' || r == '.' || r == '-') {
			return false
		}
	}
	return true
}

func (t *Tokens) has(name string) bool {
	for _, n := range t.names {
		if n == name {
			return true
		}
	}
	return false
}

// Enabled reports whether any operator is configured.
func (t *Tokens) Enabled() bool { return t != nil && len(t.names) > 0 }

// Names are the operators, ADMIN_TOKEN's first.
func (t *Tokens) Names() []string {
	if t == nil {
		return nil
	}
	return append([]string(nil), t.names...)
}

// Lookup returns the operator whose token tok is. Every token is compared,
// in constant time, after hashing both sides, so neither which one matched
// nor any token's length leaks through timing.
func (t *Tokens) Lookup(tok string) (name string, ok bool) {
	if t == nil || tok == "" {
		return "", false
	}
	got := sha256.Sum256([]byte(tok))
	for i, h := range t.hashes {
		if subtle.ConstantTimeCompare(got[:], h[:]) == 1 {
			name, ok = t.names[i], true
		}
	}
	return name, ok
}
