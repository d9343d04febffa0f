"""`inv soak`: steady REST+gRPC load on loopback while versions switch (run.py), and its verdict (report.py)."""
