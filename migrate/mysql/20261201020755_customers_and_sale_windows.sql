-- +goose Up
-- modify "holds" table
ALTER TABLE `holds` ADD COLUMN `customer_id` varbinary(1020) NOT NULL DEFAULT '', ADD COLUMN `idempotency_key` varbinary(1020) NULL, ADD INDEX `hold_customer_id` (`customer_id`), ADD UNIQUE INDEX `hold_customer_id_idempotency_key` (`customer_id`, `idempotency_key`), ADD INDEX `hold_product_id_customer_id_status` (`product_id`, `customer_id`, `status`);
-- modify "orders" table
ALTER TABLE `orders` ADD COLUMN `customer_id` varbinary(1020) NOT NULL DEFAULT '', ADD INDEX `order_customer_id` (`customer_id`), ADD INDEX `order_product_id_customer_id_status` (`product_id`, `customer_id`, `status`);
-- modify "products" table
ALTER TABLE `products` ADD COLUMN `max_per_customer` bigint NULL, ADD COLUMN `sale_starts_at` datetime(6) NULL, ADD COLUMN `sale_ends_at` datetime(6) NULL;

-- +goose Down
-- reverse: modify "products" table
ALTER TABLE `products` DROP COLUMN `sale_ends_at`, DROP COLUMN `sale_starts_at`, DROP COLUMN `max_per_customer`;
-- reverse: modify "orders" table
ALTER TABLE `orders` DROP INDEX `order_product_id_customer_id_status`, DROP INDEX `order_customer_id`, DROP COLUMN `customer_id`;
-- reverse: modify "holds" table
ALTER TABLE `holds` DROP INDEX `hold_product_id_customer_id_status`, DROP INDEX `hold_customer_id_idempotency_key`, DROP INDEX `hold_customer_id`, DROP COLUMN `idempotency_key`, DROP COLUMN `customer_id`;
