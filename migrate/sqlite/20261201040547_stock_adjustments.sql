-- +goose Up
-- create "stock_adjustments" table
CREATE TABLE `stock_adjustments` (`id` integer NOT NULL PRIMARY KEY AUTOINCREMENT, `product_id` integer NOT NULL, `delta` integer NOT NULL, `reason` text NOT NULL, `created_at` datetime NOT NULL);
-- create index "stockadjustment_product_id_created_at" to table: "stock_adjustments"
CREATE INDEX `stockadjustment_product_id_created_at` ON `stock_adjustments` (`product_id`, `created_at`);

-- backfill: a product's stock so far becomes its first adjustment, so stock_received = sum(delta) holds from here on
INSERT INTO `stock_adjustments` (`product_id`, `delta`, `reason`, `created_at`) SELECT `id`, `stock_received`, 'initial stock (recorded when adjustments began)', `created_at` FROM `products`;

-- +goose Down
-- reverse: create index "stockadjustment_product_id_created_at" to table: "stock_adjustments"
DROP INDEX `stockadjustment_product_id_created_at`;
-- reverse: create "stock_adjustments" table
DROP TABLE `stock_adjustments`;
