"""Concurrent-user load tester for CellSeg Serve (REST + Socket.IO), loopback targets only."""
