"""Pure output: graphs and RabbitMQ definitions, drawn from declarations."""
