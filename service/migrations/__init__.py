"""The job store's schema versions (Alembic); `service.store.JobStore` applies them at start."""
