-- +goose NO TRANSACTION
-- +goose Up
-- disable the enforcement of foreign-keys constraints
PRAGMA foreign_keys = off;
BEGIN;
-- create "new_products" table
CREATE TABLE `new_products` (`id` integer NOT NULL PRIMARY KEY AUTOINCREMENT, `created_at` datetime NOT NULL, `updated_at` datetime NOT NULL, `name` text NOT NULL, `price_cents` integer NOT NULL, `stock_received` integer NOT NULL, `stock_available` integer NOT NULL, `stock_reserved` integer NOT NULL DEFAULT (0), `max_per_customer` integer NULL, `sale_starts_at` datetime NULL, `sale_ends_at` datetime NULL, `queue_admit_per_minute` integer NULL, `queue_serving` integer NOT NULL DEFAULT (0), `queue_next` integer NOT NULL DEFAULT (1), `queue_carry` real NOT NULL DEFAULT (0), `queue_waiting` integer NOT NULL DEFAULT (0), `queue_admitted` integer NOT NULL DEFAULT (0), `queue_ticked_at` datetime NULL);
-- copy rows from old table "products" to new temporary table "new_products"
INSERT INTO `new_products` (`id`, `created_at`, `updated_at`, `name`, `price_cents`, `stock_received`, `stock_available`, `stock_reserved`, `max_per_customer`, `sale_starts_at`, `sale_ends_at`) SELECT `id`, `created_at`, `updated_at`, `name`, `price_cents`, `stock_received`, `stock_available`, `stock_reserved`, `max_per_customer`, `sale_starts_at`, `sale_ends_at` FROM `products`;
-- drop "products" table after copying rows
DROP TABLE `products`;
-- rename temporary table "new_products" to "products"
ALTER TABLE `new_products` RENAME TO `products`;
-- create "queue_tickets" table
CREATE TABLE `queue_tickets` (`id` uuid NOT NULL, `created_at` datetime NOT NULL, `updated_at` datetime NOT NULL, `product_id` integer NOT NULL, `customer_id` text NULL, `status` text NOT NULL DEFAULT ('WAITING'), `number` integer NULL, `shuffle` integer NOT NULL, `admitted_at` datetime NULL, `pass_expires_at` datetime NULL, PRIMARY KEY (`id`));
-- create index "queueticket_product_id_customer_id" to table: "queue_tickets"
CREATE UNIQUE INDEX `queueticket_product_id_customer_id` ON `queue_tickets` (`product_id`, `customer_id`);
-- create index "queueticket_product_id_status_number" to table: "queue_tickets"
CREATE INDEX `queueticket_product_id_status_number` ON `queue_tickets` (`product_id`, `status`, `number`);
-- create index "queueticket_status_pass_expires_at" to table: "queue_tickets"
CREATE INDEX `queueticket_status_pass_expires_at` ON `queue_tickets` (`status`, `pass_expires_at`);
COMMIT;
-- enable back the enforcement of foreign-keys constraints
PRAGMA foreign_keys = on;

-- +goose Down
-- reverse: create index "queueticket_status_pass_expires_at" to table: "queue_tickets"
DROP INDEX `queueticket_status_pass_expires_at`;
-- reverse: create index "queueticket_product_id_status_number" to table: "queue_tickets"
DROP INDEX `queueticket_product_id_status_number`;
-- reverse: create index "queueticket_product_id_customer_id" to table: "queue_tickets"
DROP INDEX `queueticket_product_id_customer_id`;
-- reverse: create "queue_tickets" table
DROP TABLE `queue_tickets`;
-- reverse: create "new_products" table
DROP TABLE `new_products`;
