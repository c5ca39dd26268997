"""The benchmark harness: `make bench` (quick) and `make bench-full` (the million-invoice run)."""
