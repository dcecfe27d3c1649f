"""The decoder sandbox: decoding runs in a resource-limited child process (protocol, child, parent, pool)."""
