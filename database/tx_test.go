package database_test

import (
	"context"
	"testing"

	"entgo.io/ent/dialect"

	"flashsale/database"
	"flashsale/ent"
	"flashsale/ent/product"
	"flashsale/internal/testdb"
)

// TestTransactionsWithoutBegin: on MySQL, Ent's transactions start with
// their first statement on autocommit=0 sessions (txDriver). They must
// behave as START TRANSACTION ones: all or nothing, invisible to others
// until COMMIT, row locks held until COMMIT, the session's READ COMMITTED;
// statements outside them commit at once; a session is reused after
// COMMIT, never after ROLLBACK.
func TestTransactionsWithoutBegin(t *testing.T) {
	db := testdb.Open(t, dialect.MySQL, database.Options{MaxConns: 8})
	ctx := context.Background()
	one := func(t *testing.T, tx *ent.Tx, query string) int64 {
		t.Helper()
		rows, err := tx.QueryContext(ctx, query)
		if err != nil {
			t.Fatal(err)
		}
		defer rows.Close()
		var v int64
		if !rows.Next() {
			t.Fatalf("%s: no row (%v)", query, rows.Err())
		}
		if err := rows.Scan(&v); err != nil {
			t.Fatal(err)
		}
		return v
	}
	create := func(t *testing.T, c *ent.Client, name string) *ent.Product {
		t.Helper()
		p, err := c.Product.Create().SetName(name).SetPriceCents(100).SetStockReceived(5).SetStockAvailable(5).Save(ctx)
		if err != nil {
			t.Fatal(err)
		}
		return p
	}
	exists := func(t *testing.T, name string) bool {
		t.Helper()
		n, err := db.Ent.Product.Query().Where(product.Name(name)).Count(ctx)
		if err != nil {
			t.Fatal(err)
		}
		return n > 0
	}
	begin := func(t *testing.T) *ent.Tx {
		t.Helper()
		tx, err := db.Ent.Tx(ctx)
		if err != nil {
			t.Fatal(err)
		}
		return tx
	}

	t.Run("autocommit off inside, on outside", func(t *testing.T) {
		tx := begin(t)
		defer tx.Rollback()
		if v := one(t, tx, "SELECT @@autocommit"); v != 0 {
			t.Errorf("inside a transaction @@autocommit = %d, want 0", v)
		}
		var v int64
		if err := db.SQL.QueryRowContext(ctx, "SELECT @@autocommit").Scan(&v); err != nil || v != 1 {
			t.Errorf("outside transactions @@autocommit = %d (%v), want 1", v, err)
		}
		create(t, db.Ent, "outside") // commits at once: another session sees it
		if !exists(t, "outside") {
			t.Error("a statement outside a transaction was not committed")
		}
	})

	t.Run("rollback undoes every statement", func(t *testing.T) {
		tx := begin(t)
		create(t, tx.Client(), "rolled-1")
		create(t, tx.Client(), "rolled-2")
		if exists(t, "rolled-1") {
			t.Error("another session sees an uncommitted row")
		}
		if err := tx.Rollback(); err != nil {
			t.Fatal(err)
		}
		if exists(t, "rolled-1") || exists(t, "rolled-2") {
			t.Error("rows of a rolled-back transaction are there")
		}
		if err := tx.Rollback(); err == nil {
			t.Error("a second Rollback succeeded")
		}
	})

	t.Run("commit keeps every statement", func(t *testing.T) {
		tx := begin(t)
		create(t, tx.Client(), "kept-1")
		create(t, tx.Client(), "kept-2")
		if err := tx.Commit(); err != nil {
			t.Fatal(err)
		}
		if !exists(t, "kept-1") || !exists(t, "kept-2") {
			t.Error("rows of a committed transaction are missing")
		}
	})

	t.Run("locks held until commit", func(t *testing.T) {
		p := create(t, db.Ent, "locked")
		tx := begin(t)
		defer tx.Rollback()
		if _, err := tx.Product.Query().Where(product.ID(p.ID)).ForUpdate().Only(ctx); err != nil {
			t.Fatal(err)
		}
		lockNow := func() error {
			_, err := db.SQL.ExecContext(ctx, "SELECT id FROM products WHERE id = ? FOR UPDATE NOWAIT", p.ID)
			return err
		}
		if lockNow() == nil {
			t.Error("another session locked the row the transaction locked: the lock ended with its statement")
		}
		if v := one(t, tx, "SELECT @@tx_isolation = 'READ-COMMITTED'"); v != 1 {
			t.Error("the transaction does not run with the session's READ COMMITTED")
		}
		if err := tx.Commit(); err != nil {
			t.Fatal(err)
		}
		if err := lockNow(); err != nil {
			t.Errorf("after COMMIT the row is still locked: %v", err)
		}
	})

	t.Run("sessions reused after commit, not after rollback", func(t *testing.T) {
		session := func(end func(*ent.Tx) error) int64 {
			t.Helper()
			tx := begin(t)
			id := one(t, tx, "SELECT CONNECTION_ID()")
			if err := end(tx); err != nil {
				t.Fatal(err)
			}
			return id
		}
		commit := func(tx *ent.Tx) error { return tx.Commit() }
		rollback := func(tx *ent.Tx) error { return tx.Rollback() }
		a := session(commit)
		if b := session(commit); b != a {
			t.Errorf("a committed session was not reused (%d, then %d)", a, b)
		}
		c := session(rollback)
		if d := session(commit); d == c {
			t.Errorf("session %d was reused after a rollback", c)
		}
	})
}
