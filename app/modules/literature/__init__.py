"""Literature module: deciding whether fetched pages and documents are an article's full text."""
