"""HTTP plumbing: ASGI layer, protocol limits, request context, authentication, body decoding, errors."""
