-- +goose Up
-- modify "holds" table
ALTER TABLE `holds` ADD COLUMN `customer_id` varbinary(1020) NOT NULL DEFAULT '', ADD COLUMN `idempotency_key` varbinary(1020) NULL, ADD INDEX `hold_customer_id_product_id_status` (`customer_id`, `product_id`, `status`);
-- modify "orders" table
ALTER TABLE `orders` ADD COLUMN `customer_id` varbinary(1020) NOT NULL DEFAULT '', ADD INDEX `order_customer_id_product_id_status` (`customer_id`, `product_id`, `status`);
-- modify "products" table
ALTER TABLE `products` ADD COLUMN `max_per_customer` bigint NULL, ADD COLUMN `sale_starts_at` datetime(6) NULL, ADD COLUMN `sale_ends_at` datetime(6) NULL;
-- create "hold_keys" table
CREATE TABLE `hold_keys` (`id` bigint NOT NULL AUTO_INCREMENT, `customer_id` varbinary(1020) NOT NULL, `idempotency_key` varbinary(1020) NOT NULL, `hold_id` char(36) NOT NULL, PRIMARY KEY (`id`), UNIQUE INDEX `holdkey_customer_id_idempotency_key` (`customer_id`, `idempotency_key`), UNIQUE INDEX `hold_id` (`hold_id`), CONSTRAINT `hold_keys_holds_key` FOREIGN KEY (`hold_id`) REFERENCES `holds` (`id`) ON UPDATE RESTRICT ON DELETE NO ACTION) CHARSET utf8mb4 COLLATE utf8mb4_bin;

-- +goose Down
-- reverse: create "hold_keys" table
DROP TABLE `hold_keys`;
-- reverse: modify "products" table
ALTER TABLE `products` DROP COLUMN `sale_ends_at`, DROP COLUMN `sale_starts_at`, DROP COLUMN `max_per_customer`;
-- reverse: modify "orders" table
ALTER TABLE `orders` DROP INDEX `order_customer_id_product_id_status`, DROP COLUMN `customer_id`;
-- reverse: modify "holds" table
ALTER TABLE `holds` DROP INDEX `hold_customer_id_product_id_status`, DROP COLUMN `idempotency_key`, DROP COLUMN `customer_id`;
