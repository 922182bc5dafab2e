"""``cxrlens serve``: a web page and a JSON API around one checkpoint."""
