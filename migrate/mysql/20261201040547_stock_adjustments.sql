-- +goose Up
-- create "stock_adjustments" table
CREATE TABLE `stock_adjustments` (`id` bigint NOT NULL AUTO_INCREMENT, `product_id` bigint NOT NULL, `delta` bigint NOT NULL, `reason` varchar(2000) NOT NULL, `created_at` datetime(6) NOT NULL, PRIMARY KEY (`id`), INDEX `stockadjustment_product_id_created_at` (`product_id`, `created_at`)) CHARSET utf8mb4 COLLATE utf8mb4_bin;

-- backfill: a product's stock so far becomes its first adjustment, so stock_received = sum(delta) holds from here on
INSERT INTO `stock_adjustments` (`product_id`, `delta`, `reason`, `created_at`) SELECT `id`, `stock_received`, 'initial stock (recorded when adjustments began)', `created_at` FROM `products`;

-- +goose Down
-- reverse: create "stock_adjustments" table
DROP TABLE `stock_adjustments`;
