-- +goose Up
-- create "operator_actions" table
CREATE TABLE `operator_actions` (`id` bigint NOT NULL AUTO_INCREMENT, `operator` varchar(64) NOT NULL, `at` datetime(6) NOT NULL, `mutation` varchar(64) NOT NULL, `input` longtext NOT NULL, `product_before` longtext NULL, `product_after` longtext NULL, PRIMARY KEY (`id`), INDEX `operatoraction_at_id` (`at`, `id`)) CHARSET utf8mb4 COLLATE utf8mb4_bin;

-- +goose Down
-- reverse: create "operator_actions" table
DROP TABLE `operator_actions`;
