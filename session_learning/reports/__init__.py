"""Reports written from domain results: Markdown text and PNG plots (matplotlib, Agg)."""
