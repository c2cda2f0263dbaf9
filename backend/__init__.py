"""CellSeg Serve gateway: FastAPI REST API, Socket.IO progress, dispatcher (no torch here)."""
