"""The market store: its schema, engines and migrations, the idempotent upsert, the ledgers."""
