-- +goose Up
-- create index "paymentevent_created_at" to table: "payment_events"
CREATE INDEX `paymentevent_created_at` ON `payment_events` (`created_at`);

-- +goose Down
-- reverse: create index "paymentevent_created_at" to table: "payment_events"
DROP INDEX `paymentevent_created_at`;
