// Package events owns order events once package stock has written them
// (in the same transaction as each order change: a transactional outbox):
// their body format, their delivery to the sinks (claiming with a lease,
// attempts, backoff, per-order ordering), what operators read and replay
// of them, and their retention.
//
// # Delivery
//
// Every server process runs a Relay per configured sink. A relay claims
// due deliveries in batches: it locks them (FOR UPDATE SKIP LOCKED on
// MySQL) and commits a lease on them before it sends anything, so a
// process that dies mid-attempt leaves leases that lapse and another
// process takes the deliveries over; on Galera, where SKIP LOCKED locks
// on one node only, two nodes' claims of one delivery conflict at commit
// and only one lease survives. A delivery is claimable only when no
// earlier event of its order is still PENDING on the same sink, so a sink
// sees an order's events in order. The outcome is recorded only by the
// lease's owner: delivered, or retried after an exponential backoff with
// jitter (longer if the sink asked), or FAILED after the last attempt.
package events
