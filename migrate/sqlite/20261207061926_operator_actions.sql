-- +goose Up
-- create "operator_actions" table
CREATE TABLE `operator_actions` (`id` integer NOT NULL PRIMARY KEY AUTOINCREMENT, `operator` text NOT NULL, `at` datetime NOT NULL, `mutation` text NOT NULL, `input` text NOT NULL, `product_before` text NULL, `product_after` text NULL);
-- create index "operatoraction_at_id" to table: "operator_actions"
CREATE INDEX `operatoraction_at_id` ON `operator_actions` (`at`, `id`);

-- +goose Down
-- reverse: create index "operatoraction_at_id" to table: "operator_actions"
DROP INDEX `operatoraction_at_id`;
-- reverse: create "operator_actions" table
DROP TABLE `operator_actions`;
