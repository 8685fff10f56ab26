"""The test suite: real servers on loopback, never mocks."""
