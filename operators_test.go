package main

import (
	"encoding/json"
	"fmt"
	"testing"
	"time"

	"flashsale/internal/testdb"
)

// TestOperatorControls drives updateProduct, adjustStock and orders through
// the real server, as an operator running a drop would.
func TestOperatorControls(t *testing.T) {
	for _, d := range testdb.Dialects {
		t.Run(d, func(t *testing.T) {
			ts := startServer(t, d, nil)
			p := ts.createProduct(t, 10)

			const update = `mutation($id: ID!, $in: UpdateProductInput!) { updateProduct(id: $id, input: $in) { name priceCents maxPerCustomer saleStartsAt saleEndsAt stockAvailable } }`
			const adjust = `mutation($id: ID!, $d: Int!, $r: String!) { adjustStock(productId: $id, delta: $d, reason: $r) { stockAvailable stockReserved stockSellable } }`
			const list = `query($p: ID, $s: OrderStatus, $first: Int, $after: String) { orders(productId: $p, status: $s, first: $first, after: $after) { edges { cursor node { id status qty } } pageInfo { hasNextPage endCursor } } }`
			type updated struct {
				Name           string
				PriceCents     int
				MaxPerCustomer *int
				SaleStartsAt   *time.Time
				SaleEndsAt     *time.Time
				StockAvailable int
			}

			t.Run("operator only", func(t *testing.T) {
				for _, tc := range []struct {
					query string
					vars  map[string]any
				}{
					{update, map[string]any{"id": p.ID, "in": map[string]any{"name": "x"}}},
					{adjust, map[string]any{"id": p.ID, "d": 1, "r": "x"}},
					{list, nil},
				} {
					for _, token := range []string{"", "not-the-admin-token-but-long-enough-0000"} {
						if r := ts.gql(t, token, tc.query, tc.vars); r.code() != "UNAUTHENTICATED" {
							t.Errorf("%.30s with token %q: %+v", tc.query, token, r)
						}
					}
				}
				if got := ts.product(t, p.ID); got.StockAvailable != 10 {
					t.Fatalf("refused calls changed the product: %+v", got)
				}
			})

			t.Run("updateProduct: left out keeps, null clears", func(t *testing.T) {
				future := time.Now().Add(time.Hour).UTC().Truncate(time.Second)
				var out struct{ UpdateProduct updated }
				ts.gql(t, testAdminToken, update, map[string]any{"id": p.ID, "in": map[string]any{
					"priceCents": 990, "maxPerCustomer": 2, "saleStartsAt": future.Format(time.RFC3339),
				}}).must(t, &out)
				if u := out.UpdateProduct; u.Name != "Test drop" || u.PriceCents != 990 || u.MaxPerCustomer == nil || *u.MaxPerCustomer != 2 || !u.SaleStartsAt.Equal(future) || u.SaleEndsAt != nil {
					t.Fatalf("after setting price, limit and start: %+v", u)
				}
				// The sale is not open yet: a buyer is told when it opens.
				if r := ts.gql(t, "", `mutation($p: ID!) { createHold(productId: $p, qty: 1) { id } }`, map[string]any{"p": p.ID}); r.code() != "SALE_NOT_STARTED" {
					t.Fatalf("hold before the sale opens: %+v", r)
				}
				ts.gql(t, testAdminToken, update, map[string]any{"id": p.ID, "in": map[string]any{
					"name": "Renamed", "saleStartsAt": nil,
				}}).must(t, &out)
				if u := out.UpdateProduct; u.Name != "Renamed" || u.PriceCents != 990 || u.MaxPerCustomer == nil || u.SaleStartsAt != nil {
					t.Fatalf("after renaming and opening the sale: %+v", u)
				}
				ts.createHold(t, p.ID, 2)
				for _, in := range []map[string]any{
					{"name": nil},
					{"priceCents": nil},
					{"saleStartsAt": future.Format(time.RFC3339), "saleEndsAt": future.Add(-time.Minute).Format(time.RFC3339)},
					{"maxPerCustomer": 1}, // below the 2 units one buyer holds
				} {
					if r := ts.gql(t, testAdminToken, update, map[string]any{"id": p.ID, "in": in}); r.code() != "BAD_USER_INPUT" {
						t.Errorf("update %v: %+v", in, r)
					}
				}
				if r := ts.gql(t, testAdminToken, update, map[string]any{"id": "999999", "in": map[string]any{"name": "x"}}); r.code() != "NOT_FOUND" {
					t.Errorf("unknown product: %+v", r)
				}
			})

			t.Run("adjustStock", func(t *testing.T) {
				type adjusted struct{ StockAvailable, StockReserved, StockSellable int }
				var out struct{ AdjustStock adjusted }
				ts.gql(t, testAdminToken, adjust, map[string]any{"id": p.ID, "d": 5, "r": "second pallet"}).must(t, &out)
				if out.AdjustStock != (adjusted{15, 2, 13}) {
					t.Fatalf("after restocking 5: %+v", out.AdjustStock)
				}
				for _, tc := range []struct {
					delta  int
					reason string
					code   string
				}{
					{-14, "more than sellable", "INSUFFICIENT_STOCK"},
					{0, "nothing", "BAD_USER_INPUT"},
					{1, "  ", "BAD_USER_INPUT"},
				} {
					if r := ts.gql(t, testAdminToken, adjust, map[string]any{"id": p.ID, "d": tc.delta, "r": tc.reason}); r.code() != tc.code {
						t.Errorf("adjust %d %q: %+v, want %s", tc.delta, tc.reason, r, tc.code)
					}
				}
				ts.gql(t, testAdminToken, adjust, map[string]any{"id": p.ID, "d": -13, "r": "withdrawn: water damage"}).must(t, &out)
				if out.AdjustStock != (adjusted{2, 2, 0}) {
					t.Fatalf("after withdrawing every sellable unit: %+v", out.AdjustStock)
				}
			})

			t.Run("orders, filtered and paged", func(t *testing.T) {
				q := ts.createProduct(t, 10)
				var ids []string
				for range 5 {
					ids = append(ids, ts.createOrder(t, ts.createHold(t, q.ID, 1)))
				}
				if status, _ := ts.webhook(t, "evt_op_1", ids[1], "success"); status != 200 {
					t.Fatalf("webhook: %d", status)
				}
				type page struct {
					Orders struct {
						Edges []struct {
							Cursor string
							Node   struct{ ID, Status string }
						}
						PageInfo struct {
							HasNextPage bool
							EndCursor   *string
						}
					}
				}
				var got []string
				vars := map[string]any{"p": q.ID, "first": 2}
				for {
					var pg page
					ts.gql(t, testAdminToken, list, vars).must(t, &pg)
					for _, e := range pg.Orders.Edges {
						got = append(got, e.Node.ID)
					}
					if !pg.Orders.PageInfo.HasNextPage {
						break
					}
					vars["after"] = *pg.Orders.PageInfo.EndCursor
				}
				if fmt.Sprint(got) != fmt.Sprint(ids) {
					t.Fatalf("orders of the product, oldest first:\n%v\nwant\n%v", got, ids)
				}
				var paid page
				ts.gql(t, testAdminToken, list, map[string]any{"p": q.ID, "s": "PAID"}).must(t, &paid)
				if e := paid.Orders.Edges; len(e) != 1 || e[0].Node.ID != ids[1] || e[0].Node.Status != "PAID" {
					b, _ := json.Marshal(paid)
					t.Fatalf("paid orders: %s", b)
				}
				for _, vars := range []map[string]any{{"after": "bm90LWEtY3Vyc29y"}, {"first": 0}, {"first": 101}, {"p": "abc"}} {
					if r := ts.gql(t, testAdminToken, list, vars); r.code() != "BAD_USER_INPUT" {
						t.Errorf("orders %v: %+v", vars, r)
					}
				}
			})
		})
	}
}
