-- +goose NO TRANSACTION
-- +goose Up
-- disable the enforcement of foreign-keys constraints
PRAGMA foreign_keys = off;
BEGIN;
-- add column "max_per_customer" to table: "products"
ALTER TABLE `products` ADD COLUMN `max_per_customer` integer NULL;
-- add column "sale_starts_at" to table: "products"
ALTER TABLE `products` ADD COLUMN `sale_starts_at` datetime NULL;
-- add column "sale_ends_at" to table: "products"
ALTER TABLE `products` ADD COLUMN `sale_ends_at` datetime NULL;
-- create "new_holds" table
CREATE TABLE `new_holds` (`id` uuid NOT NULL, `created_at` datetime NOT NULL, `updated_at` datetime NOT NULL, `product_id` integer NOT NULL, `qty` integer NOT NULL, `status` text NOT NULL DEFAULT ('ACTIVE'), `expires_at` datetime NOT NULL, `customer_id` text NOT NULL DEFAULT (''), `idempotency_key` text NULL, PRIMARY KEY (`id`));
-- copy rows from old table "holds" to new temporary table "new_holds"
INSERT INTO `new_holds` (`id`, `created_at`, `updated_at`, `product_id`, `qty`, `status`, `expires_at`) SELECT `id`, `created_at`, `updated_at`, `product_id`, `qty`, `status`, `expires_at` FROM `holds`;
-- drop "holds" table after copying rows
DROP TABLE `holds`;
-- rename temporary table "new_holds" to "holds"
ALTER TABLE `new_holds` RENAME TO `holds`;
-- create index "hold_status_expires_at" to table: "holds"
CREATE INDEX `hold_status_expires_at` ON `holds` (`status`, `expires_at`);
-- create index "hold_product_id_status_expires_at" to table: "holds"
CREATE INDEX `hold_product_id_status_expires_at` ON `holds` (`product_id`, `status`, `expires_at`);
-- create index "hold_customer_id_product_id_status" to table: "holds"
CREATE INDEX `hold_customer_id_product_id_status` ON `holds` (`customer_id`, `product_id`, `status`);
-- create "new_orders" table
CREATE TABLE `new_orders` (`id` uuid NOT NULL, `created_at` datetime NOT NULL, `updated_at` datetime NOT NULL, `product_id` integer NOT NULL, `qty` integer NOT NULL, `amount_cents` integer NOT NULL, `status` text NOT NULL DEFAULT ('PENDING_PAYMENT'), `payment_due_at` datetime NOT NULL, `customer_id` text NOT NULL DEFAULT (''), `hold_id` uuid NOT NULL, PRIMARY KEY (`id`), CONSTRAINT `orders_holds_order` FOREIGN KEY (`hold_id`) REFERENCES `holds` (`id`) ON DELETE NO ACTION);
-- copy rows from old table "orders" to new temporary table "new_orders"
INSERT INTO `new_orders` (`id`, `created_at`, `updated_at`, `product_id`, `qty`, `amount_cents`, `status`, `payment_due_at`, `hold_id`) SELECT `id`, `created_at`, `updated_at`, `product_id`, `qty`, `amount_cents`, `status`, `payment_due_at`, `hold_id` FROM `orders`;
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
-- create "hold_keys" table
CREATE TABLE `hold_keys` (`id` integer NOT NULL PRIMARY KEY AUTOINCREMENT, `customer_id` text NOT NULL, `idempotency_key` text NOT NULL, `hold_id` uuid NOT NULL, CONSTRAINT `hold_keys_holds_key` FOREIGN KEY (`hold_id`) REFERENCES `holds` (`id`) ON DELETE NO ACTION);
-- create index "hold_keys_hold_id_key" to table: "hold_keys"
CREATE UNIQUE INDEX `hold_keys_hold_id_key` ON `hold_keys` (`hold_id`);
-- create index "holdkey_customer_id_idempotency_key" to table: "hold_keys"
CREATE UNIQUE INDEX `holdkey_customer_id_idempotency_key` ON `hold_keys` (`customer_id`, `idempotency_key`);
COMMIT;
-- enable back the enforcement of foreign-keys constraints
PRAGMA foreign_keys = on;

-- +goose Down
-- reverse: create index "holdkey_customer_id_idempotency_key" to table: "hold_keys"
DROP INDEX `holdkey_customer_id_idempotency_key`;
-- reverse: create index "hold_keys_hold_id_key" to table: "hold_keys"
DROP INDEX `hold_keys_hold_id_key`;
-- reverse: create "hold_keys" table
DROP TABLE `hold_keys`;
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
-- reverse: create index "hold_customer_id_product_id_status" to table: "holds"
DROP INDEX `hold_customer_id_product_id_status`;
-- reverse: create index "hold_product_id_status_expires_at" to table: "holds"
DROP INDEX `hold_product_id_status_expires_at`;
-- reverse: create index "hold_status_expires_at" to table: "holds"
DROP INDEX `hold_status_expires_at`;
-- reverse: create "new_holds" table
DROP TABLE `new_holds`;
-- reverse: add column "sale_ends_at" to table: "products"
ALTER TABLE `products` DROP COLUMN `sale_ends_at`;
-- reverse: add column "sale_starts_at" to table: "products"
ALTER TABLE `products` DROP COLUMN `sale_starts_at`;
-- reverse: add column "max_per_customer" to table: "products"
ALTER TABLE `products` DROP COLUMN `max_per_customer`;
