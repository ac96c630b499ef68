-- +goose NO TRANSACTION
-- +goose Up
-- disable the enforcement of foreign-keys constraints
PRAGMA foreign_keys = off;
BEGIN;
-- add column "payment_reference" to table: "payment_events"
ALTER TABLE `payment_events` ADD COLUMN `payment_reference` text NULL;
-- create "new_orders" table
CREATE TABLE `new_orders` (`id` uuid NOT NULL, `created_at` datetime NOT NULL, `updated_at` datetime NOT NULL, `product_id` integer NOT NULL, `qty` integer NOT NULL, `amount_cents` integer NOT NULL, `status` text NOT NULL DEFAULT ('PENDING_PAYMENT'), `payment_due_at` datetime NOT NULL, `customer_id` text NOT NULL DEFAULT (''), `payment_reference` text NULL, `event_seq` integer NOT NULL DEFAULT (0), `hold_id` uuid NOT NULL, PRIMARY KEY (`id`), CONSTRAINT `orders_holds_order` FOREIGN KEY (`hold_id`) REFERENCES `holds` (`id`) ON DELETE NO ACTION);
-- copy rows from old table "orders" to new temporary table "new_orders"
INSERT INTO `new_orders` (`id`, `created_at`, `updated_at`, `product_id`, `qty`, `amount_cents`, `status`, `payment_due_at`, `customer_id`, `hold_id`) SELECT `id`, `created_at`, `updated_at`, `product_id`, `qty`, `amount_cents`, `status`, `payment_due_at`, `customer_id`, `hold_id` FROM `orders`;
-- drop "orders" table after copying rows
DROP TABLE `orders`;
-- rename temporary table "new_orders" to "orders"
ALTER TABLE `new_orders` RENAME TO `orders`;
-- create index "orders_hold_id_key" to table: "orders"
CREATE UNIQUE INDEX `orders_hold_id_key` ON `orders` (`hold_id`);
-- create index "order_status_payment_due_at" to table: "orders"
CREATE INDEX `order_status_payment_due_at` ON `orders` (`status`, `payment_due_at`);
-- create index "order_product_id_status_payment_due_at" to table: "orders"
CREATE INDEX `order_product_id_status_payment_due_at` ON `orders` (`product_id`, `status`, `payment_due_at`);
-- create index "order_customer_id_product_id_status" to table: "orders"
CREATE INDEX `order_customer_id_product_id_status` ON `orders` (`customer_id`, `product_id`, `status`);
-- create "event_deliveries" table
CREATE TABLE `event_deliveries` (`id` integer NOT NULL PRIMARY KEY AUTOINCREMENT, `sink` text NOT NULL, `order_id` uuid NOT NULL, `sequence` integer NOT NULL, `status` text NOT NULL DEFAULT ('PENDING'), `attempts` integer NOT NULL DEFAULT (0), `next_attempt_at` datetime NOT NULL, `lease` text NULL, `last_attempt_at` datetime NULL, `last_error` text NULL, `delivered_at` datetime NULL, `created_at` datetime NOT NULL, `event_id` text NOT NULL, CONSTRAINT `event_deliveries_order_events_deliveries` FOREIGN KEY (`event_id`) REFERENCES `order_events` (`id`) ON DELETE NO ACTION);
-- create index "eventdelivery_event_id_sink" to table: "event_deliveries"
CREATE UNIQUE INDEX `eventdelivery_event_id_sink` ON `event_deliveries` (`event_id`, `sink`);
-- create index "eventdelivery_sink_status_next_attempt_at" to table: "event_deliveries"
CREATE INDEX `eventdelivery_sink_status_next_attempt_at` ON `event_deliveries` (`sink`, `status`, `next_attempt_at`);
-- create index "eventdelivery_order_id_sink_sequence" to table: "event_deliveries"
CREATE INDEX `eventdelivery_order_id_sink_sequence` ON `event_deliveries` (`order_id`, `sink`, `sequence`);
-- create "order_events" table
CREATE TABLE `order_events` (`id` text NOT NULL, `order_id` uuid NOT NULL, `sequence` integer NOT NULL, `type` text NOT NULL, `occurred_at` datetime NOT NULL, `payload` text NOT NULL, PRIMARY KEY (`id`));
-- create index "orderevent_order_id_sequence" to table: "order_events"
CREATE UNIQUE INDEX `orderevent_order_id_sequence` ON `order_events` (`order_id`, `sequence`);
-- create index "orderevent_occurred_at" to table: "order_events"
CREATE INDEX `orderevent_occurred_at` ON `order_events` (`occurred_at`);
COMMIT;
-- enable back the enforcement of foreign-keys constraints
PRAGMA foreign_keys = on;

-- +goose Down
-- reverse: create index "orderevent_occurred_at" to table: "order_events"
DROP INDEX `orderevent_occurred_at`;
-- reverse: create index "orderevent_order_id_sequence" to table: "order_events"
DROP INDEX `orderevent_order_id_sequence`;
-- reverse: create "order_events" table
DROP TABLE `order_events`;
-- reverse: create index "eventdelivery_order_id_sink_sequence" to table: "event_deliveries"
DROP INDEX `eventdelivery_order_id_sink_sequence`;
-- reverse: create index "eventdelivery_sink_status_next_attempt_at" to table: "event_deliveries"
DROP INDEX `eventdelivery_sink_status_next_attempt_at`;
-- reverse: create index "eventdelivery_event_id_sink" to table: "event_deliveries"
DROP INDEX `eventdelivery_event_id_sink`;
-- reverse: create "event_deliveries" table
DROP TABLE `event_deliveries`;
-- reverse: create index "order_customer_id_product_id_status" to table: "orders"
DROP INDEX `order_customer_id_product_id_status`;
-- reverse: create index "order_product_id_status_payment_due_at" to table: "orders"
DROP INDEX `order_product_id_status_payment_due_at`;
-- reverse: create index "order_status_payment_due_at" to table: "orders"
DROP INDEX `order_status_payment_due_at`;
-- reverse: create index "orders_hold_id_key" to table: "orders"
DROP INDEX `orders_hold_id_key`;
-- reverse: create "new_orders" table
DROP TABLE `new_orders`;
-- reverse: add column "payment_reference" to table: "payment_events"
ALTER TABLE `payment_events` DROP COLUMN `payment_reference`;
