package stock

import (
	"unicode"
	"unicode/utf8"
)

// Caller is who makes a call: an anonymous buyer, a customer (verified by
// package customer), or the operator. Holds and orders belong to the
// customer who made them, or to nobody ("") when made anonymously.
type Caller struct {
	Customer string // the customer's ID, the token's sub; "" for anonymous buyers and the operator
	Operator string // the operator's name (ADMIN_TOKEN's is "admin"); "" for buyers. Operators read every hold and order
}

// Anonymous is a buyer without a customer token.
var Anonymous = Caller{}

// mayAct reports whether c may act on a hold or order of owner: a
// customer's own, and anonymous ones, which are reached by their
// unguessable ID. Anything else is ErrNotFound to c, so IDs leak nothing.
func (c Caller) mayAct(owner string) bool { return owner == "" || owner == c.Customer }

// mayRead is mayAct, and the operator reads everything.
func (c Caller) mayRead(owner string) bool { return c.Operator != "" || c.mayAct(owner) }

const maxKeyRunes = 255

// validKey is the one rule for keys and IDs that come from outside: hold
// and payment idempotency keys, customer IDs, payment references are 1 to
// 255 printable characters of valid UTF-8 (characters, not bytes: the
// columns hold 255 characters).
func validKey(k string) bool {
	if k == "" || !utf8.ValidString(k) || utf8.RuneCountInString(k) > maxKeyRunes {
		return false
	}
	for _, r := range k {
		if !unicode.IsPrint(r) {
			return false
		}
	}
	return true
}
