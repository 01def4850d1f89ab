"""The web page: static files under ``static/`` (plain HTML, CSS and JavaScript, no build step),
installed as package data and served by :mod:`app.api.routes.ui`."""
