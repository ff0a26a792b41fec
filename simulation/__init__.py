"""Everything SIMULATED, in one place.

``demo.py`` generates the synthetic demo store (catalog and judged queries)
that ``make run`` serves and the tests use; ``world.py`` simulates a store
around a real catalog (prices, stock, promotions, users with hidden
preferences); ``feature_data.py`` writes the world's observable history as the
feature store's offline tables; ``click_model.py`` and ``simulator.py`` are
shoppers who search the real HTTP API and click or buy. Nothing outside this
package makes up data.
"""
