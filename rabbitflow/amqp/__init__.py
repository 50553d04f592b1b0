"""Everything that talks AMQP or HTTP to the broker."""
