"""Sharded training: optimizer, loss, train step, loop."""
