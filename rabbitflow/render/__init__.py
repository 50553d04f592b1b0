"""Pure output: graphs (and, later, broker definitions) drawn from declarations."""
