"""Shadow dispatch: the client that calls the shadow, the pipeline that compares and records,
and the dispatchers that feed the pipeline with bounded queues."""
