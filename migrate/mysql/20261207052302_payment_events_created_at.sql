-- +goose Up
-- modify "payment_events" table
ALTER TABLE `payment_events` ADD INDEX `paymentevent_created_at` (`created_at`);

-- +goose Down
-- reverse: modify "payment_events" table
ALTER TABLE `payment_events` DROP INDEX `paymentevent_created_at`;
