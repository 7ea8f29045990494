//! NATS JetStream for osa-events.
