-- +goose Up
-- modify "holds" table
ALTER TABLE `holds` DROP FOREIGN KEY `holds_products_holds`;
-- modify "orders" table
ALTER TABLE `orders` DROP FOREIGN KEY `orders_products_orders`;

-- +goose Down
-- reverse: modify "orders" table
ALTER TABLE `orders` ADD CONSTRAINT `orders_products_orders` FOREIGN KEY (`product_id`) REFERENCES `products` (`id`) ON UPDATE RESTRICT ON DELETE NO ACTION;
-- reverse: modify "holds" table
ALTER TABLE `holds` ADD CONSTRAINT `holds_products_holds` FOREIGN KEY (`product_id`) REFERENCES `products` (`id`) ON UPDATE RESTRICT ON DELETE NO ACTION;
