"""What the tests and the benches start and share: servers, clients, specs."""
