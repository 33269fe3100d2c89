"""What connects the service to the outside world: servers, pub/sub, queue, files."""
