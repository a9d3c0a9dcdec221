"""Several server processes on one host: their slots, their links, and the supervisor that runs them."""
