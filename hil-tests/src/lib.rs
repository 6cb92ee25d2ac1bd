//! Harness for tests against real parts: swtpm manufactured per test, and bus models.
