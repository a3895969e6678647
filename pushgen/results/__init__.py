"""Campaign results: outcome statistics (``stats``) and the report built from them."""
