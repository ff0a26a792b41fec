"""Entities: what features are keyed by."""

from feast import Entity, ValueType

product = Entity(name="product", join_keys=["product_id"], value_type=ValueType.STRING,
                 description="A product of the catalog (product_id).")
user = Entity(name="user", join_keys=["user_id"], value_type=ValueType.STRING,
              description="A shopper (user_id from the storefront).")
