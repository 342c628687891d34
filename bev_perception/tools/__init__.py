"""Command-line tools around the perception node (demo, bag evaluation, benchmark)."""
