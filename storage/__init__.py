"""heard: the ticket store (tables, lifecycle, queries, deadlines, search)."""
