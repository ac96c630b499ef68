-- +goose Up
-- create "products" table
CREATE TABLE `products` (`id` bigint NOT NULL AUTO_INCREMENT, `created_at` datetime(6) NOT NULL, `updated_at` datetime(6) NOT NULL, `name` varchar(200) NOT NULL, `price_cents` bigint NOT NULL, `stock_received` bigint NOT NULL, `stock_available` bigint NOT NULL, `stock_reserved` bigint NOT NULL DEFAULT 0, PRIMARY KEY (`id`)) CHARSET utf8mb4 COLLATE utf8mb4_bin;
-- create "holds" table
CREATE TABLE `holds` (`id` char(36) NOT NULL, `created_at` datetime(6) NOT NULL, `updated_at` datetime(6) NOT NULL, `qty` bigint NOT NULL, `status` enum('ACTIVE','REDEEMED','EXPIRED','RELEASED') NOT NULL DEFAULT 'ACTIVE', `expires_at` datetime(6) NOT NULL, `product_id` bigint NOT NULL, PRIMARY KEY (`id`), INDEX `hold_product_id_status_expires_at` (`product_id`, `status`, `expires_at`), INDEX `hold_status_expires_at` (`status`, `expires_at`), CONSTRAINT `holds_products_holds` FOREIGN KEY (`product_id`) REFERENCES `products` (`id`) ON UPDATE RESTRICT ON DELETE NO ACTION) CHARSET utf8mb4 COLLATE utf8mb4_bin;
-- create "orders" table
CREATE TABLE `orders` (`id` char(36) NOT NULL, `created_at` datetime(6) NOT NULL, `updated_at` datetime(6) NOT NULL, `qty` bigint NOT NULL, `amount_cents` bigint NOT NULL, `status` enum('PENDING_PAYMENT','PAID','CANCELLED','REFUND_REQUIRED') NOT NULL DEFAULT 'PENDING_PAYMENT', `payment_due_at` datetime(6) NOT NULL, `hold_id` char(36) NOT NULL, `product_id` bigint NOT NULL, PRIMARY KEY (`id`), UNIQUE INDEX `hold_id` (`hold_id`), INDEX `order_product_id_status_payment_due_at` (`product_id`, `status`, `payment_due_at`), INDEX `order_status_payment_due_at` (`status`, `payment_due_at`), CONSTRAINT `orders_holds_order` FOREIGN KEY (`hold_id`) REFERENCES `holds` (`id`) ON UPDATE RESTRICT ON DELETE NO ACTION, CONSTRAINT `orders_products_orders` FOREIGN KEY (`product_id`) REFERENCES `products` (`id`) ON UPDATE RESTRICT ON DELETE NO ACTION) CHARSET utf8mb4 COLLATE utf8mb4_bin;
-- create "payment_events" table
CREATE TABLE `payment_events` (`id` bigint NOT NULL AUTO_INCREMENT, `idempotency_key` varchar(255) NOT NULL, `status` enum('success','failure') NOT NULL, `outcome` enum('APPLIED','IGNORED','REFUND_REQUIRED') NOT NULL, `order_status_before` varchar(255) NOT NULL, `order_status_after` varchar(255) NOT NULL, `created_at` datetime(6) NOT NULL, `order_id` char(36) NOT NULL, PRIMARY KEY (`id`), UNIQUE INDEX `idempotency_key` (`idempotency_key`), INDEX `payment_events_orders_payment_events` (`order_id`), CONSTRAINT `payment_events_orders_payment_events` FOREIGN KEY (`order_id`) REFERENCES `orders` (`id`) ON UPDATE RESTRICT ON DELETE NO ACTION) CHARSET utf8mb4 COLLATE utf8mb4_bin;

-- +goose Down
-- reverse: create "payment_events" table
DROP TABLE `payment_events`;
-- reverse: create "orders" table
DROP TABLE `orders`;
-- reverse: create "holds" table
DROP TABLE `holds`;
-- reverse: create "products" table
DROP TABLE `products`;
