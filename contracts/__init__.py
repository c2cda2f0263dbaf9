"""What the gateway and the workers both use: database access, blob storage, events,
heartbeats, job state, settings, the task name, model names and request limits."""
