-- +goose Up
-- modify "products" table
ALTER TABLE `products` ADD COLUMN `queue_admit_per_minute` bigint NULL, ADD COLUMN `queue_serving` bigint NOT NULL DEFAULT 0, ADD COLUMN `queue_next` bigint NOT NULL DEFAULT 1, ADD COLUMN `queue_carry` double NOT NULL DEFAULT 0, ADD COLUMN `queue_waiting` bigint NOT NULL DEFAULT 0, ADD COLUMN `queue_admitted` bigint NOT NULL DEFAULT 0, ADD COLUMN `queue_ticked_at` datetime(6) NULL;
-- create "queue_tickets" table
CREATE TABLE `queue_tickets` (`id` char(36) NOT NULL, `created_at` datetime(6) NOT NULL, `updated_at` datetime(6) NOT NULL, `product_id` bigint NOT NULL, `customer_id` varbinary(1020) NULL, `status` enum('WAITING','ADMITTED','USED','EXPIRED','SOLD_OUT') NOT NULL DEFAULT 'WAITING', `number` bigint NULL, `shuffle` bigint NOT NULL, `admitted_at` datetime(6) NULL, `pass_expires_at` datetime(6) NULL, PRIMARY KEY (`id`), UNIQUE INDEX `queueticket_product_id_customer_id` (`product_id`, `customer_id`), INDEX `queueticket_product_id_status_number` (`product_id`, `status`, `number`), INDEX `queueticket_status_pass_expires_at` (`status`, `pass_expires_at`)) CHARSET utf8mb4 COLLATE utf8mb4_bin;

-- +goose Down
-- reverse: create "queue_tickets" table
DROP TABLE `queue_tickets`;
-- reverse: modify "products" table
ALTER TABLE `products` DROP COLUMN `queue_ticked_at`, DROP COLUMN `queue_admitted`, DROP COLUMN `queue_waiting`, DROP COLUMN `queue_carry`, DROP COLUMN `queue_next`, DROP COLUMN `queue_serving`, DROP COLUMN `queue_admit_per_minute`;
