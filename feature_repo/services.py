"""Feature services: one per ranker version, so a model always reads the
features it was trained on (``ranker_v1`` = the first LambdaMART feature set)."""

from feast import FeatureService

from products import inventory, popularity, product_attributes, promotions
from users import personalization

ranker_v1 = FeatureService(
    name="ranker_v1",
    features=[
        product_attributes[["price", "category_id"]],
        inventory,
        promotions[["promoted", "discount"]],
        popularity,
        personalization,
    ],
    description="Store signals used by the LambdaMART ranker v1.",
)
