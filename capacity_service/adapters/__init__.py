"""Adapters to the outside: the journal (port and stores), the codec (events and snapshots as versioned
JSON), and the warehouse (port and sinks)."""
