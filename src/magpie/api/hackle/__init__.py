"""The Hackle-compatible endpoints (SDK, properties, consent, push, Kakao and SMS) and their route table."""
