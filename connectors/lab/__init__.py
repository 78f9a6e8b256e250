"""Lab testing machines: CSV exports from a drop folder (and the optional results API)."""
