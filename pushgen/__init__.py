"""pushgen: pick the products to push to each customer and write the message.

A LightFM hybrid ranker decides who gets which products; Jinja templates or an LLM write
channel-correct SMS, email and app-push copy; every draft is kept in SQLite for human
review and approved batches are exported for the sending platform.
"""

__version__ = "0.1.0"
