-- +goose Up
-- create "holds" table
CREATE TABLE `holds` (`id` uuid NOT NULL, `created_at` datetime NOT NULL, `updated_at` datetime NOT NULL, `qty` integer NOT NULL, `status` text NOT NULL DEFAULT ('ACTIVE'), `expires_at` datetime NOT NULL, `product_id` integer NOT NULL, PRIMARY KEY (`id`), CONSTRAINT `holds_products_holds` FOREIGN KEY (`product_id`) REFERENCES `products` (`id`) ON DELETE NO ACTION);
-- create index "hold_status_expires_at" to table: "holds"
CREATE INDEX `hold_status_expires_at` ON `holds` (`status`, `expires_at`);
-- create index "hold_product_id_status_expires_at" to table: "holds"
CREATE INDEX `hold_product_id_status_expires_at` ON `holds` (`product_id`, `status`, `expires_at`);
-- create "orders" table
CREATE TABLE `orders` (`id` uuid NOT NULL, `created_at` datetime NOT NULL, `updated_at` datetime NOT NULL, `qty` integer NOT NULL, `amount_cents` integer NOT NULL, `status` text NOT NULL DEFAULT ('PENDING_PAYMENT'), `payment_due_at` datetime NOT NULL, `hold_id` uuid NOT NULL, `product_id` integer NOT NULL, PRIMARY KEY (`id`), CONSTRAINT `orders_holds_order` FOREIGN KEY (`hold_id`) REFERENCES `holds` (`id`) ON DELETE NO ACTION, CONSTRAINT `orders_products_orders` FOREIGN KEY (`product_id`) REFERENCES `products` (`id`) ON DELETE NO ACTION);
-- create index "orders_hold_id_key" to table: "orders"
CREATE UNIQUE INDEX `orders_hold_id_key` ON `orders` (`hold_id`);
-- create index "order_status_payment_due_at" to table: "orders"
CREATE INDEX `order_status_payment_due_at` ON `orders` (`status`, `payment_due_at`);
-- create index "order_product_id_status_payment_due_at" to table: "orders"
CREATE INDEX `order_product_id_status_payment_due_at` ON `orders` (`product_id`, `status`, `payment_due_at`);
-- create "payment_events" table
CREATE TABLE `payment_events` (`id` integer NOT NULL PRIMARY KEY AUTOINCREMENT, `idempotency_key` text NOT NULL, `status` text NOT NULL, `outcome` text NOT NULL, `order_status_before` text NOT NULL, `order_status_after` text NOT NULL, `created_at` datetime NOT NULL, `order_id` uuid NOT NULL, CONSTRAINT `payment_events_orders_payment_events` FOREIGN KEY (`order_id`) REFERENCES `orders` (`id`) ON DELETE NO ACTION);
-- create index "payment_events_idempotency_key_key" to table: "payment_events"
CREATE UNIQUE INDEX `payment_events_idempotency_key_key` ON `payment_events` (`idempotency_key`);
-- create "products" table
CREATE TABLE `products` (`id` integer NOT NULL PRIMARY KEY AUTOINCREMENT, `created_at` datetime NOT NULL, `updated_at` datetime NOT NULL, `name` text NOT NULL, `price_cents` integer NOT NULL, `stock_received` integer NOT NULL, `stock_available` integer NOT NULL, `stock_reserved` integer NOT NULL DEFAULT (0));

-- +goose Down
-- reverse: create "products" table
DROP TABLE `products`;
-- reverse: create index "payment_events_idempotency_key_key" to table: "payment_events"
DROP INDEX `payment_events_idempotency_key_key`;
-- reverse: create "payment_events" table
DROP TABLE `payment_events`;
-- reverse: create index "order_product_id_status_payment_due_at" to table: "orders"
DROP INDEX `order_product_id_status_payment_due_at`;
-- reverse: create index "order_status_payment_due_at" to table: "orders"
DROP INDEX `order_status_payment_due_at`;
-- reverse: create index "orders_hold_id_key" to table: "orders"
DROP INDEX `orders_hold_id_key`;
-- reverse: create "orders" table
DROP TABLE `orders`;
-- reverse: create index "hold_product_id_status_expires_at" to table: "holds"
DROP INDEX `hold_product_id_status_expires_at`;
-- reverse: create index "hold_status_expires_at" to table: "holds"
DROP INDEX `hold_status_expires_at`;
-- reverse: create "holds" table
DROP TABLE `holds`;
