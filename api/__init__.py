"""HTTP API: where a storefront's search enters ShopRank.

``main.py`` builds the app and loads the engine in its lifespan; ``deps.py``
has the dependency aliases; ``schemas.py`` the request and response models;
``routes/`` one router per resource; ``errors.py`` maps every
:class:`~core.errors.ShopRankError` and validation error to a JSON body
that names the bad field, the value and what is allowed.
"""
