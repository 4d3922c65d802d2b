"""Local stand-ins for the cloud services, started by the tests (never mocks: real servers)."""
