-- +goose Up
-- modify "orders" table
ALTER TABLE `orders` ADD COLUMN `payment_reference` varchar(255) NULL, ADD COLUMN `event_seq` bigint NOT NULL DEFAULT 0;
-- modify "payment_events" table
ALTER TABLE `payment_events` ADD COLUMN `payment_reference` varchar(255) NULL;
-- create "order_events" table
CREATE TABLE `order_events` (`id` varchar(64) NOT NULL, `order_id` char(36) NOT NULL, `sequence` bigint NOT NULL, `type` enum('order.created','order.paid','order.cancelled','order.refund_required') NOT NULL, `occurred_at` datetime(6) NOT NULL, `payload` text NOT NULL, PRIMARY KEY (`id`), INDEX `orderevent_occurred_at` (`occurred_at`), UNIQUE INDEX `orderevent_order_id_sequence` (`order_id`, `sequence`)) CHARSET utf8mb4 COLLATE utf8mb4_bin;
-- create "event_deliveries" table
CREATE TABLE `event_deliveries` (`id` bigint NOT NULL AUTO_INCREMENT, `sink` enum('webhook','nats') NOT NULL, `order_id` char(36) NOT NULL, `sequence` bigint NOT NULL, `status` enum('PENDING','DELIVERED','FAILED') NOT NULL DEFAULT 'PENDING', `attempts` bigint NOT NULL DEFAULT 0, `next_attempt_at` datetime(6) NOT NULL, `lease` varchar(64) NULL, `last_attempt_at` datetime(6) NULL, `last_error` varchar(255) NULL, `delivered_at` datetime(6) NULL, `created_at` datetime(6) NOT NULL, `event_id` varchar(64) NOT NULL, PRIMARY KEY (`id`), UNIQUE INDEX `eventdelivery_event_id_sink` (`event_id`, `sink`), INDEX `eventdelivery_order_id_sink_sequence` (`order_id`, `sink`, `sequence`), INDEX `eventdelivery_sink_status_next_attempt_at` (`sink`, `status`, `next_attempt_at`), CONSTRAINT `event_deliveries_order_events_deliveries` FOREIGN KEY (`event_id`) REFERENCES `order_events` (`id`) ON UPDATE RESTRICT ON DELETE NO ACTION) CHARSET utf8mb4 COLLATE utf8mb4_bin;

-- +goose Down
-- reverse: create "event_deliveries" table
DROP TABLE `event_deliveries`;
-- reverse: create "order_events" table
DROP TABLE `order_events`;
-- reverse: modify "payment_events" table
ALTER TABLE `payment_events` DROP COLUMN `payment_reference`;
-- reverse: modify "orders" table
ALTER TABLE `orders` DROP COLUMN `event_seq`, DROP COLUMN `payment_reference`;
